"""Composition root: `initialize()` builds the runtime for in-process use; `start()` serves it.

`initialize()` is what a test or a script author calls before building a
`StableDiffusionProcessingTxt2Img` and calling `process_images` in a plain Python process (as
A1111's own test setup does). Importing this module does nothing.
"""
from __future__ import annotations

import argparse

from modules import cmd_args, paths, shared


def initialize(cmd_opts: argparse.Namespace | None = None, *, load_model: bool | None = None) -> None:
    """Prepare options, devices, checkpoints, scripts and (unless told not to) the default model.

    Args:
        cmd_opts: parsed flags; defaults to `cmd_args.defaults()` (no flags given).
        load_model: load the selected checkpoint now; defaults to `not --skip-load-model-at-start`.
    """
    from modules import call_queue, demo_checkpoint, devices, sd_models, styles

    shared.cmd_opts = cmd_opts if cmd_opts is not None else cmd_args.defaults()
    shared.data_paths = paths.data_paths(shared.cmd_opts.data_dir, shared.cmd_opts.models_dir)
    shared.opts.frozen = False
    shared.opts.data.clear()
    shared.opts.load(config_file())
    shared.opts.frozen = bool(shared.cmd_opts.freeze_settings)
    devices.setup(shared.cmd_opts)
    shared.prompt_styles = styles.StyleDatabase(shared.cmd_opts.styles_file or [shared.data_paths.styles_file])
    sd_models.setup_option_hooks(shared.opts, wrap=call_queue.wrap_queued_call)  # switch under the queue lock

    sd_models.list_models()
    if not sd_models.checkpoints_list:
        demo_checkpoint.ensure_demo_checkpoint(shared.data_paths.sd_model_dir)  # says its weights are random
        sd_models.list_models()

    load_extensions()
    skip = shared.cmd_opts.skip_load_model_at_start or getattr(shared.cmd_opts, "ui_debug_mode", False) \
        or getattr(shared.cmd_opts, "executor", "local") == "ray"  # the workers load it; here on first use
    if load_model if load_model is not None else not skip:
        sd_models.load_model()


def load_extensions() -> None:
    """Discover extensions, run the changed `install.py`s (unless `--skip-install`), then load the
    root `scripts/` and every active extension's `scripts/` (A1111's order)."""
    from modules import extensions, scripts
    extensions.list_extensions()
    if getattr(shared.cmd_opts, "skip_install", False):
        extensions.failed_installs.clear()
    else:
        extensions.run_extensions_installers()
    scripts.load_scripts()


def config_file() -> str:
    return shared.cmd_opts.ui_settings_file or shared.data_paths.config_file


def server_address(cmd_opts: argparse.Namespace) -> tuple[str, int]:
    """Host and port as A1111 chooses them, except that Serena binds loopback unless told otherwise."""
    host = cmd_opts.server_name or ("0.0.0.0" if cmd_opts.listen else "127.0.0.1")
    port = cmd_opts.port or (7861 if cmd_opts.nowebui else 7860)
    return host, port


def create_app():
    """The one FastAPI app: `/sdapi/v1` routes, then the `on_app_started` callbacks (extension routes,
    behind the API's auth), then (unless `--nowebui`) the Gradio UI at `/`.

    The order matters: routes added after a Gradio mount at "/" would be shadowed by it.
    """
    from modules.api.app import build_app, run_app_started
    app = build_app(shared.cmd_opts)
    if shared.cmd_opts.nowebui:
        run_app_started(app, None)
        return app
    from modules import ui, ui_extra_networks, ui_head, ui_restart
    ui_head.add_routes(app)  # the page's JavaScript/CSS (Serena's and extensions'), before the mount
    ui_restart.add_routes(app)  # /internal/ping with this app's boot id (the page waits for a new one)
    ui_extra_networks.add_routes(app)  # card preview images and metadata
    blocks = ui.create_ui()
    run_app_started(app, blocks)
    return ui.mount(app, blocks=blocks)


class UiServer:
    """Serves `create_app()` with uvicorn and builds it anew when the page asks for a restart
    (Settings' "Reload UI", Extensions' "Apply and restart UI": `shared.state.server_command ==
    "restart"`), as A1111's serving loop does: the app stops, extensions and scripts are reloaded
    under the generation queue's lock, and a new app serves on the same address."""

    def __init__(self, host: str, port: int, *, poll_s: float = 0.2, make_app=None, take_command=None) -> None:
        """`take_command()` returns (and clears) a pending "restart" / "stop" or None; by default
        `shared.state.server_command`, which the page's restart buttons set."""
        self.host, self.port, self.poll_s = host, port, poll_s
        self.make_app = make_app or create_app
        self.take_command = take_command or _take_server_command
        self.server = None
        self.restarts = 0
        self._thread = None
        self._stop = False

    def _serve(self, app=None) -> None:
        from modules.api.app import serve
        self.server = serve(app if app is not None else self.make_app(), host=self.host, port=self.port,
                            background=True, timeout_graceful_shutdown=1)

    def _stop_server(self) -> None:
        server = self.server
        if server is None:
            return
        server.should_exit = True
        server.serena_thread.join(30)  # open streams are cut after timeout_graceful_shutdown
        self.server = None

    def _restart(self) -> None:
        """Reload extensions and scripts and build the new app while the old one still serves (a
        failure is reported and the old app keeps serving), then swap them on the same address."""
        import time

        from modules import call_queue, errors
        started = time.monotonic()
        try:
            call_queue.wrap_queued_call(load_extensions)()  # no job sees half-loaded scripts
            app = self.make_app()
        except Exception:  # noqa: BLE001 - an extension broke the rebuild: keep serving the old app
            errors.report("UI restart failed; the current UI keeps running", exc_info=True)
            return
        built = time.monotonic()
        self._stop_server()
        self._serve(app)
        self.restarts += 1
        print(f"Serena: UI restarted in {time.monotonic() - started:.1f} s (new app built in "
              f"{built - started:.1f} s, switched in {time.monotonic() - built:.1f} s)")

    def run(self) -> None:
        """Serve until Ctrl+C or `/sdapi/v1/server-stop`, restarting on request."""
        import signal
        import threading
        import time

        from modules import ui_restart
        if threading.current_thread() is threading.main_thread():  # SIGTERM: stop as Ctrl+C does
            signal.signal(signal.SIGTERM, lambda *_: setattr(self, "_stop", True))
        ui_restart.loops_running += 1
        try:
            self._serve()
            while not self._stop:
                time.sleep(self.poll_s)
                command = self.take_command()
                if command == "restart":
                    self._restart()
                elif command == "stop" or self.server is None or self.server.should_exit:
                    break
        except KeyboardInterrupt:
            pass
        finally:
            ui_restart.loops_running -= 1
            self._stop_server()

    def start_background(self) -> "UiServer":
        """`run` in a daemon thread (tests, embedding); returns once the first app answers."""
        import threading
        import time
        self._thread = threading.Thread(target=self.run, name="serena-ui-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 60
        while (self.server is None or not self.server.started) and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._stop = True
        if self._thread is not None:
            self._thread.join(30)


def _take_server_command() -> str | None:
    command, shared.state.server_command = shared.state.server_command, None
    return command


def start(cmd_opts: argparse.Namespace) -> None:
    """Initialise, build the app and serve it with uvicorn until interrupted (a restart requested
    by the page rebuilds the app in place)."""
    from modules.api.app import serve
    initialize(cmd_opts)
    host, port = server_address(cmd_opts)
    print(f"Serena: serving on http://{host}:{port} (API docs at /docs)")
    if host not in ("127.0.0.1", "localhost", "::1") and not (cmd_opts.api_auth or cmd_opts.gradio_auth):
        print("Serena: WARNING: listening beyond this machine with no --api-auth or --gradio-auth: "
              "anyone who can reach the port can generate and change settings.")
    from modules.runtime import job_service
    from modules.api import agent_scheduler
    service = job_service.current()  # pending jobs of the last run start now, not on the first request
    agent_scheduler.install_callbacks(service)  # their callback_url too
    if service.recovered:
        print(f"Serena: {len(service.recovered)} job(s) were running when the server stopped: marked failed")
    try:
        if cmd_opts.nowebui:
            serve(create_app(), host=host, port=port)
        else:
            UiServer(host, port).run()
    finally:
        job_service.shutdown()
