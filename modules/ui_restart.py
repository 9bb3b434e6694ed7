"""A1111's "Reload UI" (Settings) and "Apply and restart UI" (Extensions): the server rebuilds the
whole app — extensions re-discovered, scripts reloaded, the page built again — and the page reloads
once the new app answers.

The page asks with :func:`request_restart`; `webui.UiServer` (the serving loop) sees
`shared.state.server_command == "restart"`, stops the app, reloads, and serves a new one on the same
address. Each app has a boot id that `/internal/ping` (A1111's route; answer `{}`) sends in the
`X-Serena-Boot` header; the page's `serenaRestartReload(boot)` polls it until the id changes, then
reloads. Without a serving loop (an app mounted by other code) the restart falls back to reloading
extensions and scripts in place, and the page reloads at once.
"""
from __future__ import annotations

import logging
import uuid
from typing import Any

from modules import shared
from modules.ui_gate import PageOrApiAuthGate

log = logging.getLogger("serena.ui")

BOOT_HEADER = "X-Serena-Boot"
loops_running = 0
"""How many `webui.UiServer` loops serve in this process (normally one; each rebuilds its app when
`shared.state.server_command` asks for a restart)."""


def loop_active() -> bool:
    """Whether a serving loop will rebuild the app on a restart request."""
    return loops_running > 0
current_boot: str | None = None
"""The boot id of the app built last (its page waits for another one after a restart)."""


def new_boot_id() -> str:
    return uuid.uuid4().hex[:12]


def add_routes(app: Any) -> str:
    """`GET /internal/ping` on `app` (before the Gradio mount), behind the page's credentials when
    the server has any. Returns the app's boot id (also kept in `app.state.serena_boot`)."""
    from fastapi.responses import JSONResponse
    global current_boot
    boot = current_boot = new_boot_id()
    app.state.serena_boot = boot

    async def ping() -> Any:
        return JSONResponse({}, headers={BOOT_HEADER: boot, "Cache-Control": "no-store"})

    app.add_api_route("/internal/ping", ping, methods=["GET"], include_in_schema=False)
    credentials = getattr(app.state, "serena_credentials", None)
    if credentials:
        route = app.router.routes[-1]
        route.app = PageOrApiAuthGate(route.app, app, credentials)
    return boot


def request_restart(reload_in_place: Any = None) -> bool:
    """Ask the serving loop to rebuild the app (A1111: the running job is interrupted first).
    Returns True when a loop will restart; otherwise `reload_in_place()` (if given) runs now and
    False is returned (the page then just reloads)."""
    if loop_active():
        log.info("UI restart requested")
        shared.state.request_restart()
        return True
    if reload_in_place is not None:
        reload_in_place()
    return False


def page_reload_js() -> str:
    """The page's side, fixed when the page is built: with a serving loop, wait for the rebuilt app
    (a boot id other than this page's) and reload; without one, reload at once."""
    if loop_active() and current_boot:
        return f"() => {{ serenaRestartReload({current_boot!r}); return []; }}"
    return "() => { setTimeout(() => location.reload(), 100); return []; }"
