"""With `--gradio-auth`, nothing of the UI but its login page and static assets answers a visitor
who has not logged in.

Gradio checks the login on its page, config, queue, upload and file routes, but a handful of its
routes answer anyone (`/gradio_api/startup-events`, `/gradio_api/user`, `/gradio_api/app_id`,
`/gradio_api/cancel`, `/monitoring/{key}` …). :class:`LoginGate` wraps the mounted Gradio app and
answers 401 to every request outside a short allow-list unless it carries a session cookie that
Gradio itself issued at login (read from the Gradio app's own token table, so the gate and Gradio
can never disagree about who is logged in).
"""
from __future__ import annotations

import json
from http.cookies import SimpleCookie
from typing import Any, Callable

# The login page itself, the login/logout endpoints and static files (scripts, styles, fonts, icons).
OPEN_PATHS = frozenset({"/", "/login", "/login/", "/logout", "/theme.css", "/favicon.ico", "/manifest.json",
                        "/robots.txt"})
OPEN_PREFIXES = ("/static/", "/assets/", "/svelte/", "/pwa_icon")


def is_open(path: str) -> bool:
    """True for the login page and static assets, which answer without a login."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


class LoginGate:
    """ASGI wrapper of a Gradio app (which must have `tokens` and `cookie_id`, as Gradio 6's App)."""

    def __init__(self, gradio_app: Any) -> None:
        self.app = gradio_app

    def logged_in(self, scope: dict) -> bool:
        """True if a Gradio session cookie of this app names a logged-in user."""
        tokens = getattr(self.app, "tokens", {}) or {}
        cookie_id = getattr(self.app, "cookie_id", "")
        for name, value in scope.get("headers", []):
            if name != b"cookie":
                continue
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # noqa: BLE001 - an unreadable cookie header is simply no login
                continue
            for key in (f"access-token-{cookie_id}", f"access-token-unsecure-{cookie_id}"):
                if key in jar and jar[key].value in tokens:
                    return True
        return False

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        if is_open(path) or self.logged_in(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"detail": {"error": "Not authenticated", "auth_message": None}}).encode()
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class PageOrApiAuthGate:
    """ASGI wrapper for the files the page loads (its JavaScript/CSS, extra-network thumbnails):
    a request passes with the API's HTTP Basic credentials or with the browser's Gradio login
    cookie for the UI mounted on `fastapi_app` (a logged-in page sends no Basic header)."""

    def __init__(self, inner: Any, fastapi_app: Any, credentials: list) -> None:
        from modules.api.app import BasicAuthGate
        self.inner = inner
        self.fastapi_app = fastapi_app
        self.basic = BasicAuthGate(inner, credentials)

    def _ui_logged_in(self, scope: dict) -> bool:
        from starlette.routing import Mount
        for route in self.fastapi_app.router.routes:
            if isinstance(route, Mount) and route.path == "":
                gradio_app = route.app.app if isinstance(route.app, LoginGate) else route.app
                if hasattr(gradio_app, "tokens"):
                    return LoginGate(gradio_app).logged_in(scope)
        return False

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self._ui_logged_in(scope):
            await self.inner(scope, receive, send)
            return
        await self.basic(scope, receive, send)
