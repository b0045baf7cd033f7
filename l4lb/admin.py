"""The admin HTTP API: status, metrics, drain/enable, reload and the running config.

Control plane, not hot path, so it is written for clarity: h11 parses, anyio serves, one task
per connection in the server's task group. The routing and the answers live in `AdminApp`,
which takes a parsed request and returns a `Response` without touching a socket; `serve_admin`
is the thin IO shell around it.

Routes (JSON unless stated):
    GET  /status                          the stats snapshot
    GET  /metrics                         Prometheus text, format 0.0.4
    GET  /ready                           200 when ready to take traffic, else 503 and why
    GET  /config                          the running config, secrets redacted
    POST /reload                          re-read the config file (like SIGHUP)
    POST /servers/{pool}/{server}/drain   stop sending new connections to the server
    POST /servers/{pool}/{server}/enable  take it back into rotation
    POST /cache/purge                     remove stored responses from every cache: a JSON
    POST /cache/{name}/purge              body names urls, prefixes, tags or all
                                          (l4lb/cachepurge.py); answers how many went

A drain set here lasts until the next reload, which sets every server's `drain` from the file
again (HAProxy's runtime API behaves the same without a state file).

Untrusted input is bounded: request heads over `MAX_HEAD` bytes and bodies over `MAX_BODY`
are refused, every request must arrive within `READ_TIMEOUT` seconds, and at most
`MAX_CONNECTIONS` connections are served at once. Bad requests get 400, never a crash.
When a token is configured every request, whatever its path, needs `Authorization: Bearer`,
so an unauthenticated client cannot even learn which paths exist.
"""

from __future__ import annotations

import dataclasses
import hmac
import inspect
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import anyio
import h11
from anyio.abc import SocketAttribute, SocketStream, TaskStatus

from l4lb.cachepurge import Purge, PurgeError, configured_caches, parse_purge
from l4lb.config.values import Address
from l4lb.errors import L4lbError
from l4lb.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from l4lb.metrics import exposition
from l4lb.readiness import readiness
from l4lb.stats import Stats

__all__ = [
    "AdminApp",
    "Request",
    "Response",
    "admin_token",
    "open_admin_listener",
    "redact",
    "serve_admin",
]

log = logging.getLogger("l4lb")

MAX_HEAD = 16 * 1024  # bytes of request line + headers
MAX_BODY = 64 * 1024  # only a cache purge reads its body; other routes ignore theirs
READ_TIMEOUT = 10.0  # seconds to receive one whole request (or to send one response)
MAX_CONNECTIONS = 64
_RECEIVE = 64 * 1024
_JSON = "application/json"
_SECRET_WORDS = frozenset(
    {"token", "key", "password", "passwd", "passphrase", "secret"}
    | {"tokens", "keys", "passwords", "secrets"}
)
_SERVER_ACTION = re.compile(r"^/servers/([^/]+)/([^/]+)/(drain|enable)$")
_CACHE_PURGE = re.compile(r"^/cache(?:/([^/]+))?/purge$")


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # without the query string
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = _JSON
    headers: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def json(cls, status: int, data: Any, *headers: tuple[str, str]) -> Response:
        body = json.dumps(data, indent=2, allow_nan=False).encode() + b"\n"
        return cls(status, body, _JSON, list(headers))

    @classmethod
    def error(cls, status: int, message: str, *headers: tuple[str, str]) -> Response:
        return cls.json(status, {"error": message}, *headers)


def redact(data: Any) -> Any:
    """A copy of `data` (dicts, lists, scalars) with the value of every key that names a
    secret (a `_`/`-`/`.`-separated word token, key, password, passphrase or secret, or
    their plurals) replaced by "<redacted>". Over-redacting a path such as `key_file` is
    the safe mistake."""
    if isinstance(data, dict):
        return {
            k: "<redacted>" if _is_secret(str(k)) and v not in (None, "") else redact(v)
            for k, v in data.items()
        }
    if isinstance(data, list | tuple):
        return [redact(v) for v in data]
    return data


def _is_secret(name: str) -> bool:
    return bool(_SECRET_WORDS.intersection(re.split(r"[_\-.]", name.lower())))


def config_json(config: Any) -> Any:
    """The frozen config dataclasses as JSON-able data (what `dataclasses.asdict` gives, but
    with addresses written `host:port` as in the config file), secrets redacted."""

    def plain(value: Any) -> Any:
        if isinstance(value, Address):
            return str(value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = dataclasses.fields(value)  # not what loading found (compare=False)
            return {f.name: plain(getattr(value, f.name)) for f in fields if f.compare}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        return value

    return redact(plain(config)) if config is not None else {}


class AdminApp:
    """Routes one parsed request to an answer. Sans-IO apart from calling into the runtime
    (`reload()` reads the config file and may bind sockets; a runtime's reload is a coroutine,
    awaited by `respond`, because it resolves names in a thread)."""

    def __init__(
        self,
        runtime: Any,
        stats: Stats,
        token: str | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.runtime = runtime
        self.stats = stats
        self.token = token
        self.clock = clock or anyio.current_time

    async def respond(self, request: Request) -> Response:
        """`handle`, awaiting the runtime's reload when it is a coroutine."""
        authorized = self.token is None or self._authorized(request)
        if request.path == "/reload" and request.method == "POST" and authorized:
            return await self._reload_async()
        if request.method == "POST" and authorized and _CACHE_PURGE.match(request.path):
            target = self._purge_target(request)
            if isinstance(target, Response):
                return target
            result = self.runtime.purge_cache(target)
            if inspect.isawaitable(result):
                result = await result
            return self._purged(target, result)
        return self.handle(request)

    def handle(self, request: Request) -> Response:
        if self.token is not None and not self._authorized(request):
            return Response.error(
                401, "a bearer token is required", ("WWW-Authenticate", 'Bearer realm="l4lb"')
            )
        method, path = request.method, request.path
        if path == "/ready":  # keepalived's track script (`l4lb ready`); see readiness.py
            if method not in ("GET", "HEAD"):
                return _not_allowed("GET, HEAD")
            snapshot = self.stats.snapshot(self.runtime, self.clock())
            ready = readiness(getattr(self.runtime, "config", None), snapshot)
            return Response.json(200 if ready.ready else 503, ready.json())
        if path in ("/status", "/metrics", "/config"):
            if method not in ("GET", "HEAD"):
                return _not_allowed("GET, HEAD")
            if path == "/status":
                return Response.json(200, self.stats.snapshot(self.runtime, self.clock()))
            if path == "/metrics":
                snapshot = self.stats.snapshot(self.runtime, self.clock())
                return Response(
                    200, exposition(snapshot, self.stats).encode(), METRICS_CONTENT_TYPE
                )
            return Response.json(200, config_json(getattr(self.runtime, "config", None)))
        if path == "/reload":
            return self._reload() if method == "POST" else _not_allowed("POST")
        if _CACHE_PURGE.match(path):
            if method != "POST":
                return _not_allowed("POST")
            target = self._purge_target(request)
            if isinstance(target, Response):
                return target
            result = self.runtime.purge_cache(target)
            if inspect.isawaitable(result):
                raise TypeError("an async runtime's purge goes through AdminApp.respond")
            return self._purged(target, result)
        match = _SERVER_ACTION.match(path)
        if match:
            if method != "POST":
                return _not_allowed("POST")
            pool, server, action = unquote(match[1]), unquote(match[2]), match[3]
            return self._set_draining(pool, server, action == "drain")
        return Response.error(404, f"no such path: {path}")

    def _authorized(self, request: Request) -> bool:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or self.token is None:
            return False
        return hmac.compare_digest(credentials.strip().encode(), self.token.encode())

    def _set_draining(self, pool_name: str, server_name: str, draining: bool) -> Response:
        pool = getattr(self.runtime, "pools", {}).get(pool_name)
        if pool is None:
            return Response.error(404, f"no pool named {pool_name!r}")
        server = next((s for s in pool.servers if s.name == server_name), None)
        if server is None:
            return Response.error(404, f"pool {pool_name!r} has no server named {server_name!r}")
        setter = getattr(self.runtime, "set_draining", None)
        if setter is not None:
            setter(pool_name, server_name, draining)  # kept across reloads
        else:
            server.draining = draining
        now = self.clock()
        action = "drain" if draining else "enable"
        log.info("admin: %s %s/%s", action, pool_name, server_name)
        self.stats.operator(now, pool_name, server, action, "the admin API")
        state = server.state(now)
        return Response.json(
            200,
            {
                "pool": pool_name,
                "server": server_name,
                "draining": server.draining,
                "state": getattr(state, "value", state),
                "active": server.active,
            },
        )

    def _purge_target(self, request: Request) -> Purge | Response:
        match = _CACHE_PURGE.match(request.path)
        assert match is not None
        name = unquote(match[1]) if match[1] else None
        names = configured_caches(getattr(self.runtime, "config", None))
        if not names:
            return Response.error(404, "no cache: no route has cache = NAME")
        if name is not None and name not in names:
            return Response.error(404, f"no cache named {name!r}; caches: {', '.join(names)}")
        try:
            return parse_purge(name, request.body)
        except PurgeError as exc:
            return Response.error(400, str(exc))

    def _purged(self, purge: Purge, result: dict[str, Any]) -> Response:
        """`result` is the runtime's: `caches` (name -> responses removed) and, from a
        supervisor, `workers` (how many answered) and `unanswered` (indexes)."""
        caches = result.get("caches", {})
        total = sum(caches.values())
        what = [*purge.urls, *purge.prefixes, *(f"tag {t}" for t in purge.tags)]
        if purge.all:
            what.insert(0, "everything")
        text = f"{purge.cache or 'every cache'}: {total} removed ({', '.join(what)[:200]})"
        log.info("admin: purge %s", text)
        self.stats.event(self.clock(), "purge", f"{text}, from the admin API")
        status = 504 if result.get("unanswered") else 200
        return Response.json(status, {"purged": total, **result})

    def _reload(self) -> Response:
        capture = _Capture()
        logger = logging.getLogger("l4lb")
        logger.addHandler(capture)
        try:
            ok = self.runtime.reload()
            if inspect.isawaitable(ok):
                raise TypeError("an async runtime's reload goes through AdminApp.respond")
        except L4lbError as exc:
            return Response.json(500, {"reloaded": False, "error": str(exc)})
        finally:
            logger.removeHandler(capture)
        return self._reloaded(ok, capture)

    async def _reload_async(self) -> Response:
        capture = _Capture()
        logger = logging.getLogger("l4lb")
        logger.addHandler(capture)
        try:
            ok = self.runtime.reload()
            if inspect.isawaitable(ok):
                ok = await ok
        except L4lbError as exc:
            return Response.json(500, {"reloaded": False, "error": str(exc)})
        finally:
            logger.removeHandler(capture)
        return self._reloaded(ok, capture)

    def _reloaded(self, ok: bool, capture: _Capture) -> Response:
        if ok:
            return Response.json(200, {"reloaded": True, "reloads": self.runtime.reloads})
        error = getattr(self.runtime, "last_reload_error", "") or "\n".join(capture.messages)
        return Response.json(
            409,
            {"reloaded": False, "error": error or "reload failed; the previous config still runs"},
        )


class _Capture(logging.Handler):
    """Collects the error messages `Runtime.reload` logs, so the API can return them."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _not_allowed(allow: str) -> Response:
    return Response.error(405, "method not allowed", ("Allow", allow))


# -- the IO shell ----------------------------------------------------------------------------


async def open_admin_listener(config: Any) -> Any:
    """Bind `[admin] bind` before anything else starts, so that a busy port is one clear
    error at start; None when the config has no admin API."""
    bind = config.admin.bind
    if bind is None:
        return None
    try:
        return await anyio.create_tcp_listener(local_host=bind.host, local_port=bind.port)
    except OSError as exc:
        raise L4lbError(f"cannot listen on {bind} (admin): {exc.strerror or exc}") from None


def admin_token(config: Any) -> str | None:
    """The bearer token from `[admin] token`, or from the variable `token_env` names."""
    admin = config.admin
    return admin.token or (os.environ.get(admin.token_env) if admin.token_env else None)


async def serve_admin(
    runtime: Any,
    stats: Stats,
    host: str,
    port: int,
    token: str | None,
    *,
    listener: Any = None,
    task_status: TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the admin API on `host:port` until cancelled. Reports the bound port through
    `task_status.started(port)` (so `port=0` works with `task_group.start`). Raises OSError
    if the address cannot be bound. A caller that must report a bind failure before starting
    anything else passes a `listener` it made with `anyio.create_tcp_listener`."""
    app = AdminApp(runtime, stats, token)
    limiter = anyio.CapacityLimiter(MAX_CONNECTIONS)
    if listener is None:
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    async with listener:
        bound = listener.extra(SocketAttribute.local_port)
        where = Address(listener.extra(SocketAttribute.local_address)[0], bound)
        log.info("admin API on %s%s", where, "" if token else " (no token)")
        task_status.started(bound)

        async def handler(stream: SocketStream) -> None:
            async with limiter, stream:
                await _serve_connection(app, stream)

        async with anyio.create_task_group() as tg:
            await listener.serve(handler, task_group=tg)


async def _serve_connection(app: AdminApp, stream: SocketStream) -> None:
    """Answer requests on one connection until it closes, times out or errs."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    try:
        while True:
            with anyio.move_on_after(READ_TIMEOUT) as scope:
                result = await _read_request(conn, stream)
            if scope.cancelled_caught or result is None:
                return
            request, error = result
            if error is None:
                try:
                    response = await app.respond(request)
                except Exception:  # a bug in a route must not take the admin server down
                    log.exception("admin: error answering %s %s", request.method, request.path)
                    response = Response.error(500, "internal error; see the l4lb log")
            else:
                response = error
            with anyio.fail_after(READ_TIMEOUT):
                await _send(conn, stream, request.method, response)
            if conn.our_state is h11.MUST_CLOSE or error is not None:
                return
            conn.start_next_cycle()
    except (TimeoutError, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        return
    except h11.ProtocolError:  # the peer broke HTTP while we were mid-response
        return


async def _read_request(
    conn: h11.Connection, stream: SocketStream
) -> tuple[Request, Response | None] | None:
    """The next request and, if it cannot be served, the error to answer with instead.
    None when the client went away."""
    request: Request | None = None
    size = 0  # body bytes so far
    body: list[bytes] = []
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            message = "request too large" if status == 431 else f"bad request: {exc}"
            return request or Request("GET", "/"), Response.error(status, message)
        if event is h11.NEED_DATA:
            try:
                data = await stream.receive(_RECEIVE)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                data = b""
            if not data and request is None and conn.their_state is h11.IDLE:
                return None
            conn.receive_data(data)
        elif isinstance(event, h11.Request):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
            target = event.target.decode("latin-1").split("?", 1)[0]
            request = Request(event.method.decode("ascii", "replace"), target, headers)
            # h11 bounds a head that arrives in pieces; one that came whole is measured here.
            head = len(event.target) + sum(
                len(k) + len(v) + 4 for k, v in event.headers.raw_items()
            )
            if head > MAX_HEAD:
                return request, Response.error(431, "request head too large")
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > MAX_BODY:
                return request, Response.error(413, f"request body over {MAX_BODY} bytes")
        elif isinstance(event, h11.Data):
            size += len(event.data)
            if size > MAX_BODY:
                assert request is not None
                return request, Response.error(413, f"request body over {MAX_BODY} bytes")
            body.append(event.data)
        elif isinstance(event, h11.EndOfMessage):
            assert request is not None
            if body:
                request = dataclasses.replace(request, body=b"".join(body))
            return request, None
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


async def _send(conn: h11.Connection, stream: SocketStream, method: str, resp: Response) -> None:
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    headers = [
        ("Content-Type", resp.content_type),
        ("Content-Length", str(len(resp.body))),
        ("Cache-Control", "no-store"),
        *resp.headers,
    ]
    if resp.status >= 400 and conn.their_state is not h11.DONE:
        headers.append(("Connection", "close"))  # the rest of the request was not read
    out = conn.send(h11.Response(status_code=resp.status, headers=headers))
    if method != "HEAD" and resp.body:
        out += conn.send(h11.Data(data=resp.body))
    out += conn.send(h11.EndOfMessage())
    await stream.send(out)
