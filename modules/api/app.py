"""The FastAPI application that serves `/sdapi/v1`: middleware, auth, CORS and the one error handler.

`build_app(cmd_opts)` is called by the composition root (`webui.py`) before Gradio is mounted
(Gradio 6 shadows routes added after `mount_gradio_app(path="/")`). `serve(app, host, port)` runs
it with uvicorn for API-only mode and tests.

Every exception a route lets escape becomes A1111's error body
`{"error", "detail", "body", "errors"}` with the exception's `status_code` (500 if none);
request-validation failures keep FastAPI's `{"detail": [{loc, msg, type}]}` shape with 422.
"""
from __future__ import annotations

import argparse
import base64
import datetime
import json
import logging
import math
import secrets
import threading
import time
from typing import Any, Callable

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from starlette.exceptions import HTTPException as StarletteHTTPException

from modules import errors
from modules.api.strict_json import StrictJSONRoute, is_valid_unicode

log = logging.getLogger("serena.api")


# --- error handling --------------------------------------------------------------------------------
def error_body(exc: BaseException) -> dict[str, Any]:
    """A1111's error body for `exc`."""
    detail = getattr(exc, "detail", None)
    if detail is None and isinstance(exc, errors.SerenaError):
        detail = exc.message
    return {
        "error": type(exc).__name__,
        "detail": detail if detail is not None else "",
        "body": getattr(exc, "body", None) or "",
        "errors": str(exc),
    }


def status_of(exc: BaseException) -> int:
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else 500


async def handle_exception(request: Request, exc: Exception) -> JSONResponse:
    """The one exception handler: domain errors and HTTP errors in A1111's shape."""
    status = status_of(exc)
    if status >= 500:
        log.error("API error: %s %s: %s", request.method, request.url.path, exc, exc_info=exc)
    headers = getattr(exc, "headers", None)
    return JSONResponse(json_safe(error_body(exc)), status_code=status, headers=headers)


async def handle_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with FastAPI's standard `{"detail": [...]}` (what A1111 returns for bad request bodies)."""
    detail = []
    for err in exc.errors():
        item = {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        if "input" in err and err["input"] is not None and _small(err["input"]):
            item["input"] = err["input"]
        detail.append(item)
    return JSONResponse(json_safe({"detail": detail}), status_code=422)


def _small(value: Any) -> bool:
    """True if `value` serialises as strict JSON (finite numbers, valid text) in at most 200 characters."""
    try:
        return len(json.dumps(value, allow_nan=False).encode("utf-8")) <= 200 and json_safe(value) == value
    except (TypeError, ValueError):
        return False


def json_safe(value: Any) -> Any:
    """`value` with every non-finite float and every string that is not valid Unicode replaced by
    text, so an error body is valid JSON whatever the request held."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value if is_valid_unicode(value) else value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {json_safe(str(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return json_safe(str(value))


# --- auth ------------------------------------------------------------------------------------------
class BodyTooLarge(errors.SerenaError):
    status_code = 413


class AuthFailed(errors.SerenaError):
    status_code = 401
    headers = {"WWW-Authenticate": "Basic"}


def parse_credentials(spec: str) -> list[tuple[str, str]]:
    """`"u1:p1,u2:p2"` → pairs; each entry must hold exactly one colon (A1111 rule)."""
    pairs = []
    for n, entry in enumerate(x.strip() for x in spec.split(",")):
        if not entry:
            continue
        if entry.count(":") != 1:
            raise errors.ConfigError(f"--api-auth entry #{n + 1} must be 'user:password' with exactly one ':'")
        user, password = entry.split(":")
        pairs.append((user, password))
    if not pairs:
        raise errors.ConfigError("--api-auth is set but holds no 'user:password' entry")
    return pairs


def credentials_match(credentials: list[tuple[str, str]], user: str, password: str) -> bool:
    """Whether (user, password) is one of `credentials`, compared in constant time (no early exit)."""
    given_user, given_password = user.encode("utf8"), password.encode("utf8")
    ok = False
    for u, p in credentials:
        ok |= secrets.compare_digest(given_user, u.encode("utf8")) & secrets.compare_digest(given_password, p.encode("utf8"))
    return ok


def make_auth_dependency(credentials: list[tuple[str, str]]) -> Callable[..., None]:
    """A FastAPI dependency enforcing HTTP Basic against `credentials` in constant time."""
    basic = HTTPBasic(auto_error=False)

    def check(given: HTTPBasicCredentials | None = Depends(basic)) -> None:
        if given is None or not credentials_match(credentials, given.username, given.password):
            raise AuthFailed("Incorrect username or password")

    return check


class BasicAuthGate:
    """ASGI wrapper putting one route (an extension's) behind the API's HTTP Basic credentials."""

    def __init__(self, app: Any, credentials: list[tuple[str, str]]) -> None:
        self.app = app
        self.credentials = credentials

    def _allowed(self, scope: dict) -> bool:
        header = dict(scope.get("headers") or []).get(b"authorization", b"").decode("latin-1")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode("utf8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return bool(sep) and credentials_match(self.credentials, user, password)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] in ("http", "websocket") and not self._allowed(scope):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            response = JSONResponse(error_body(AuthFailed("Incorrect username or password")), status_code=401,
                                    headers=AuthFailed.headers)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def run_app_started(app: FastAPI, demo: Any) -> None:
    """Fire `on_app_started(demo, app)` (demo is None without the UI). Routes the callbacks add are
    served like the API's: behind its credentials when `--api-auth`/`--gradio-auth` is set."""
    from modules import script_callbacks
    before = {id(route) for route in app.router.routes}
    script_callbacks.app_started_callback(demo, app)
    credentials = getattr(app.state, "serena_credentials", None)
    if credentials:
        for route in app.router.routes:
            if id(route) not in before:
                route.app = BasicAuthGate(route.app, credentials)


# --- pure ASGI middleware (cheaper than BaseHTTPMiddleware on every request) -------------------
class ProcessTimeMiddleware:
    """Adds `X-Process-Time` (seconds, 4 places) to every response; logs /sdapi lines with --api-log."""

    def __init__(self, app: Any, api_log: bool = False) -> None:
        self.app, self.api_log = app, api_log

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status_holder: list[int] = [0]

        async def send_with_time(message: dict) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-process-time", f"{time.perf_counter() - start:.4f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_time)
        finally:
            if self.api_log and scope.get("path", "").startswith("/sdapi"):
                client = scope.get("client") or ("-", 0)
                print(f"API {datetime.datetime.now().isoformat(timespec='seconds')} {status_holder[0]} "
                      f"http/{scope.get('http_version', '1.1')} {client[0]} {scope.get('method')} "
                      f"{scope.get('path')} {time.perf_counter() - start:.4f}", flush=True)


class BodyLimitMiddleware:
    """Answers 413 (A1111 error shape) when a request body exceeds the option `api_max_body_mb`."""

    def __init__(self, app: Any, limit_bytes: Callable[[], int]) -> None:
        self.app, self.limit_bytes = app, limit_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_bytes()
        length = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                length = int(value) if value.isdigit() else None
        if length is not None:
            if length > limit:
                await self._reject(send, length, limit)
                return
            await self.app(scope, receive, send)  # the server enforces the declared length
            return
        # No declared length (chunked): read the body up to the limit, then replay it.
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                await self._reject(send, size, limit)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> dict:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _reject(send: Callable, size: int, limit: int) -> None:
        exc = BodyTooLarge(f"request body of {size} bytes exceeds api_max_body_mb ({limit} bytes)")
        body = json.dumps(error_body(exc)).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _body_limit_bytes() -> int:
    from modules.shared import opts
    return int(float(opts.api_max_body_mb) * 1024 * 1024)


# --- composition -------------------------------------------------------------------------------------
def build_app(cmd_opts: argparse.Namespace) -> FastAPI:
    """The API application: every `/sdapi/v1` route, middleware, auth and error handling.

    Args:
        cmd_opts: parsed flags; reads `api_auth` (else `gradio_auth`), `api_log`,
            `cors_allow_origins[_regex]`, `api_server_stop`, `subpath`.
    """
    from modules.api import agent_scheduler, jobs_api
    from modules.api.api import Api
    from modules.api.docs import add_docs_routes

    # Docs and schema are added by add_docs_routes: offline assets, behind the same auth as the API.
    app = FastAPI(title="Serena", root_path=getattr(cmd_opts, "subpath", None) or "",
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.router.route_class = StrictJSONRoute
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(errors.SerenaError, handle_exception)
    app.add_exception_handler(StarletteHTTPException, handle_exception)
    app.add_exception_handler(Exception, handle_exception)

    # The API is always served (A1111 needs --api). So that a UI login never leaves the API open,
    # --gradio-auth also guards the API unless --api-auth names its own users.
    credentials = getattr(cmd_opts, "api_auth", None) or getattr(cmd_opts, "gradio_auth", None)
    app.state.serena_credentials = parse_credentials(credentials) if credentials else None
    auth = make_auth_dependency(app.state.serena_credentials) if credentials else None
    guarded = [Depends(auth)] if auth else []
    Api(app, cmd_opts=cmd_opts, auth=auth)
    agent_scheduler.add_routes(app, guarded)  # the sd-webui-agent-scheduler routes, on the job service
    jobs_api.add_routes(app, guarded)  # Serena's own job API (/serena/v1/jobs, with SSE)
    add_docs_routes(app, guarded)
    add_method_not_allowed_routes(app, guarded)

    # Added last = outermost: timing wraps everything (413s included), then the body limit, gzip, CORS.
    # CORS is always installed, allowing only the configured origins (none by default): its presence
    # also stops the mounted Gradio app from adding its own, which echoes any localhost origin.
    origins = getattr(cmd_opts, "cors_allow_origins", None)
    origin_regex = getattr(cmd_opts, "cors_allow_origins_regex", None)
    app.add_middleware(CORSMiddleware, allow_origins=[o.strip() for o in origins.split(",")] if origins else [],
                       allow_origin_regex=origin_regex or None, allow_methods=["*"],
                       allow_credentials=bool(origins or origin_regex), allow_headers=["*"])
    app.add_middleware(GZipMiddleware, minimum_size=1000)
    app.add_middleware(BodyLimitMiddleware, limit_bytes=_body_limit_bytes)
    app.add_middleware(ProcessTimeMiddleware, api_log=bool(getattr(cmd_opts, "api_log", False)))
    return app


_HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def api_routes(routes: list[Any]) -> list[APIRoute]:
    """Every APIRoute in `routes`, descending into included routers (FastAPI keeps an included
    APIRouter as one entry holding the `original_router`; its routes carry their full paths)."""
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif getattr(route, "original_router", None) is not None:
            found += api_routes(route.original_router.routes)
    return found


def add_method_not_allowed_routes(app: FastAPI, dependencies: list[Any]) -> None:
    """For each path the app serves, answer the other methods with 405 and an `Allow` header.

    Starlette does this by itself only while no other route matches the path; the Gradio app
    mounted at `/` matches every path, so without these a wrong method would reach it and 404.
    """
    allowed: dict[str, set[str]] = {}
    for route in api_routes(app.routes):
        allowed.setdefault(route.path, set()).update(route.methods or ())
    for path, methods in allowed.items():
        if "GET" in methods:
            methods.add("HEAD")
        others = [x for x in _HTTP_METHODS if x not in methods]
        allow = ", ".join(sorted(methods))

        def not_allowed(allow: str = allow) -> None:
            raise StarletteHTTPException(405, "Method Not Allowed", headers={"Allow": allow})

        app.add_api_route(path, not_allowed, methods=others, include_in_schema=False, dependencies=dependencies)


def serve(app: FastAPI, host: str | None = "127.0.0.1", port: int = 7861, *,
          timeout_keep_alive: int = 30, background: bool = False, **uvicorn_kwargs: Any) -> Any:
    """Run `app` with uvicorn. With `background=True`, start it in a daemon thread, wait until it
    accepts connections and return the `uvicorn.Server` (set `server.should_exit = True` to stop)."""
    import uvicorn

    config = uvicorn.Config(app, host=host or "127.0.0.1", port=port, timeout_keep_alive=timeout_keep_alive,
                            log_level="warning", **uvicorn_kwargs)
    server = uvicorn.Server(config)
    app.state.uvicorn_server = server
    if not background:
        server.run()
        return server
    thread = threading.Thread(target=server.run, name="serena-api", daemon=True)
    server.serena_thread = thread  # join it to know the server has shut down
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise errors.ConfigError(f"API server did not start on {host}:{port}")
        time.sleep(0.02)
    return server
