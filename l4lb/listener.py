"""TCP listeners: accept, choose a server, connect (retrying others), then hand off to a Relay.

Everything here runs as loop callbacks on raw non-blocking sockets: accepting drains the
backlog in one callback, connecting uses `connect_ex` plus one writer callback and one timer,
and the relay takes over once connected. No task or Future is made per connection, because
per-connection setup is where a Python proxy loses most against C (bench/RESULTS.md).

A listener stops reading its sockets while it is at `max_connections` (the kernel backlog
queues new clients, as HAProxy's `maxconn` does) and resumes as connections end.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final, cast

from l4lb.accesslog import AccessLog, ConnectionRecord
from l4lb.attempt import Attempt
from l4lb.clientgate import ClientGate
from l4lb.config.schema import ListenerConfig
from l4lb.config.values import Address
from l4lb.errors import RemoteProtocolError
from l4lb.poller import ERR, OUT, Poller, poller_for, remove_reader, remove_writer
from l4lb.pool import Pool
from l4lb.proxyproto import BadProxyHeader, ProxyHeader, ProxyHeaderReader, encode_v1, encode_v2
from l4lb.relay import Relay
from l4lb.server import Server
from l4lb.sni import SniRouter
from l4lb.stats import Stats
from l4lb.streamrelay import StreamRelay
from l4lb.tls.build import UpstreamTls
from l4lb.tls.clienthello import ClientHello, ClientHelloReader, NotTLS
from l4lb.tls.context import peer_subject

__all__ = ["Listener", "Session", "open_listening_socket"]

log: Final = logging.getLogger("l4lb")
_ACCEPT_BATCH: Final = 64
_PREREAD_CHUNK: Final = 16384
_PROXY_PEEK: Final = 4112  # a v1 header (107) or a v2 header with up to 4096 bytes of TLVs
_TERMINATING: Final = ("tls", "http", "https")  # protocols whose bytes a loop transport reads
_FD_EXHAUSTED: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# Server sockets are made non-blocking by socket() itself where the flag exists (Linux).
_STREAM_NONBLOCK: Final = socket.SOCK_STREAM | getattr(socket, "SOCK_NONBLOCK", 0)
# The sockets of a connection are the C type `socket.SocketType` (`_socket.socket`), not its
# Python subclass `socket.socket`: that one's `__init__` and `close` are Python code (its
# `_io_refs` serve `makefile`, unused here), four calls per connection. Loop transports
# (TLS, HTTP) take either.
_Socket: Final = socket.SocketType


def bound_socket(addr: Address, kind: int, reuse_port: bool = False) -> socket.socket:
    """A non-blocking socket of `kind` (SOCK_STREAM, SOCK_DGRAM) bound on `addr`. IPv6
    sockets are v6-only so `[::]` and `0.0.0.0` can coexist."""
    family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((addr.host, addr.port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def open_listening_socket(addr: Address, backlog: int, reuse_port: bool = False) -> socket.socket:
    """Bind and listen on `addr` (see `bound_socket`). TCP_NODELAY is set here, once: Linux
    copies it to every accepted socket, which saves a setsockopt per connection."""
    sock = bound_socket(addr, socket.SOCK_STREAM, reuse_port)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _format_peer(peer: tuple) -> str:
    host, port = peer[0], peer[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Listener:
    """One `[listener.NAME]`: bound sockets, the accept callback and live sessions.

    The runtime owns the sockets (a reload may hand them to the next Listener); `update`
    points the listener at a reloaded config and pool without touching live sessions.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        config: ListenerConfig,
        pools: dict[str, Pool],
        sockets: list[socket.socket],
        access_log: AccessLog,
        on_session_end: Callable[[Session], None] | None = None,
    ) -> None:
        self.loop = loop
        self.config = config
        self.pools = pools
        self.router = SniRouter(config.routes, config.pool)
        self.tls_context: ssl.SSLContext | None = None  # set by the runtime for "tls"
        self.stats: Stats | None = None  # set by the runtime: connect latency goes there
        self.engine: Any = None  # http(s): the l7.engine.HttpEngine of the current config
        self.upstream_tls: dict[str, UpstreamTls] = {}  # pool name -> TLS to its servers
        self.sockets = sockets
        self.access_log = access_log
        self.on_session_end = on_session_end
        self.sessions: set[Session] = set()
        # Setup tasks (TLS handshakes, transport setup) of live sessions: owned here, so that
        # `cancel_tasks` at shutdown leaves none behind (a session's own handle to its task is
        # dropped once the task passes the step that can be cancelled from outside).
        self.tasks: set[asyncio.Task] = set()
        self.accepting = False  # open for business (false once stopped)
        self.reading = False  # listening sockets registered with the loop
        self.total = 0
        self.requests = 0  # HTTP requests (http/https listeners)
        self.h2_connections = 0  # HTTP/2: connections, streams, client resets, GOAWAYs sent
        self.h2_streams = 0
        self.h2_resets = 0
        self.h2_goaways = 0
        # HTTP/3 (quic/): connections, handshakes done, streams, client resets, GOAWAYs sent,
        # Retry packets sent, datagrams dropped (unparsable, unknown connection, over limits)
        self.h3_connections = 0
        self.h3_handshakes = 0
        self.h3_streams = 0
        self.h3_resets = 0
        self.h3_goaways = 0
        self.h3_retries = 0
        self.h3_dropped = 0
        self.h3_stateless_resets = 0  # RFC 9000 §10.3, for datagrams of unknown connections
        self.h3_early_accepted = 0  # requests taken in 0-RTT (safe methods)
        self.h3_early_refused = 0  # requests in 0-RTT answered 425 (RFC 8470)
        self.h3_packets_lost = 0  # packets aioquic's loss recovery declared lost
        self.refused = 0
        self.denied = 0  # closed at accept by IP rules (l4lb.clientgate)
        self.limited = 0  # closed at accept by a per-client limit
        self.clients: Any = None  # workers > 1: l4lb.shared.limits.SharedClients (runtime)
        self.gate: ClientGate | None = None
        self.poller = poller_for(loop)  # plain TCP sockets, connect to relay (l4lb.poller)

    @property
    def name(self) -> str:
        return self.config.name

    def update(self, config: ListenerConfig, pools: dict[str, Pool]) -> None:
        self.config = config
        self.pools = pools
        self.router = SniRouter(config.routes, config.pool)
        if self.gate is not None:
            self.gate.configure(config.access)  # keeps the counts of live connections
            if not config.access and not self.gate.current:
                self.gate = None
        elif config.access:
            self.gate = ClientGate(config.access, self.clients, config.name)
        self._resume_if_room()

    def admit(self, host: str) -> str | None:
        """Ask the gate whether a connection from `host` may go on (None), else count, log
        and say why not. Called before anything but a PROXY header is read."""
        gate = self.gate
        if gate is None:
            return None
        why = gate.admit(host, self.loop.time())
        if why is None:
            return None
        if why == "denied":
            self.denied += 1
        else:
            self.limited += 1
        log.info("listener %s: %s closed at accept (%s)", self.name, host, why)
        return why

    def start(self) -> None:
        self.accepting = True
        self._resume_if_room()

    def stop(self) -> None:
        """Stop accepting; live sessions go on. The caller closes the sockets it owns."""
        self.accepting = False
        self._pause()

    def _pause(self) -> None:
        if self.reading:
            for sock in self.sockets:
                remove_reader(self.loop, sock.fileno())
            self.reading = False

    def _resume_if_room(self) -> None:
        if self.accepting and not self.reading and len(self.sessions) < self.config.max_connections:
            for sock in self.sockets:
                # (The family, an enum converted by a Python property, read once here.)
                self.loop.add_reader(sock.fileno(), self._on_accept, sock, int(sock.family))
            self.reading = True

    def _on_accept(self, lsock: socket.socket, family: int) -> None:
        limit = self.config.max_connections
        for _ in range(_ACCEPT_BATCH):
            if len(self.sessions) >= limit:
                self._pause()
                return
            try:
                # `socket.accept()` is `_accept()` plus, per connection, two enum conversions
                # (`self.family`, `self.type`) and two timeout reads: a third of the accept's
                # Python cost. One accept4 system call either way.
                fd, peer = lsock._accept()  # type: ignore[attr-defined]
                csock = _Socket(family, socket.SOCK_STREAM, 0, fd)
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:
                if exc.errno in _FD_EXHAUSTED:
                    # Out of descriptors: back off instead of spinning on a readable socket.
                    log.warning("listener %s: accept failed (%s); pausing 0.5s", self.name, exc)
                    self._pause()
                    self.loop.call_later(0.5, self._resume_if_room)
                return
            if self.gate is not None and not self.config.accept_proxy and self.admit(peer[0]):
                csock.close()
                continue
            csock.setblocking(False)  # (TCP_NODELAY comes from the listening socket)
            self.total += 1
            session = Session(self, csock, peer)
            if self.gate is not None and not self.config.accept_proxy:
                session.gated = self.gate
            self.sessions.add(session)
            session.start()

    def cancel_tasks(self) -> None:
        """Cancel the setup tasks still running (shutdown, after the drain deadline)."""
        for task in list(self.tasks):
            task.cancel()

    def session_ended(self, session: Session) -> None:
        self.sessions.discard(session)
        if self.on_session_end is not None:
            self.on_session_end(session)
        self._resume_if_room()

    def sweep(self, now: float) -> None:
        """End relays that saw no activity for the idle timeout (called about once a second)."""
        timeout = self.config.idle_timeout
        for session in list(self.sessions):
            relay = session.relay
            if relay is None:
                continue
            if relay.touched:
                relay.touched = False
                session.idle_since = now
            elif now - session.idle_since >= timeout:
                relay.close("idle_timeout")


class Session:
    """One client connection, in phases: preread (PROXY header and/or ClientHello, when the
    listener wants them), server choice, connect with retries, preface (the PROXY header for the
    server and the bytes already read), relay; and its access-log line."""

    __slots__ = (
        "alpn",
        "attempt",
        "client",
        "connect_started",
        "ended",
        "gated",
        "hello_reader",
        "http",
        "idle_since",
        "listener",
        "local",
        "peer",
        "pool",
        "pools",
        "preface",
        "proxy_reader",
        "relay",
        "server",
        "sni",
        "ssock",
        "started",
        "stream",
        "subject",
        "task",
        "timer",
    )

    def __init__(self, listener: Listener, client: socket.SocketType, peer: tuple) -> None:
        self.listener = listener
        self.pools = listener.pools  # a reload does not move a connection to new pools
        self.pool: Pool | None = None
        self.client = client
        self.peer = peer
        self.local: tuple | None = None  # the address the client connected to, if known
        self.server: Server | None = None
        self.ssock: socket.SocketType | None = None
        self.relay: Relay | StreamRelay | None = None
        self.stream: StreamRelay | None = None  # set when bytes pass through TLS transports
        self.task: asyncio.Task | None = None  # a TLS handshake or transport setup under way
        self.timer: asyncio.TimerHandle | None = None
        # The tries on servers (active count, passive check, retries); given back in `_end`.
        self.attempt: Attempt | None = None
        self.connect_started = 0.0
        self.started = time.monotonic()
        self.idle_since = 0.0
        self.ended = False
        self.preface = b""  # bytes for the server before relaying starts
        self.proxy_reader: ProxyHeaderReader | None = None
        self.hello_reader: ClientHelloReader | None = None
        self.sni: str | None = None
        self.alpn: tuple[str, ...] = ()
        self.subject: str | None = None  # the verified client certificate (mTLS)
        self.http: Any = None  # the HTTP adapter (l7.h1.H1Server) of an http(s) connection
        self.gated: ClientGate | None = None  # the gate that counts this connection

    def start(self) -> None:
        config = self.listener.config
        if config.accept_proxy and config.protocol in _TERMINATING:
            # The PROXY header comes before the TLS or HTTP bytes, which belong to the
            # transport: peek at it and consume exactly its length.
            loop = self.listener.loop
            loop.add_reader(self.client.fileno(), self._peek_proxy_header)
            self.timer = loop.call_later(config.preread_timeout, self._preread_timeout)
            return
        self._start_protocol()

    def _start_protocol(self) -> None:
        config = self.listener.config
        if config.protocol in ("http", "https"):
            self.task = self._spawn(self._http_accept())
            return
        if config.protocol == "tls":
            self.stream = StreamRelay()
            self.task = self._spawn(self._tls_accept())
            return
        if not config.accept_proxy and config.protocol == "tcp":
            self.pool = self.pools[config.pool]  # type: ignore[index]
            self.connect()
            return
        if config.accept_proxy:
            self.proxy_reader = ProxyHeaderReader()
        if config.protocol == "tls-passthrough":
            self.hello_reader = ClientHelloReader()
        loop = self.listener.loop
        loop.add_reader(self.client.fileno(), self._on_preread)
        self.timer = loop.call_later(config.preread_timeout, self._preread_timeout)

    # -- TLS termination ---------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task:
        """Run a setup step as a task owned by the listener (`Listener.tasks`)."""
        tasks = self.listener.tasks
        task = self.listener.loop.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        """A bug in a setup task must cost this one connection, logged, and nothing else."""
        if task.cancelled() or task.exception() is None:
            return
        exc = task.exception()
        log.error(
            "listener %s: internal error on a connection from %s",
            self.listener.name,
            _format_peer(self.peer),
            exc_info=exc,
        )
        self.task = None
        if self.relay is not None:
            self.relay.close("error")
        elif not self.ended:
            self._fail("error")

    async def _tls_accept(self) -> None:
        """Handshake with the client (the loop's TLS transport), then route and connect."""
        stream = self.stream
        assert stream is not None
        listener = self.listener
        transport = await self._accept(lambda: stream.client, listener.tls_context)
        if transport is None:
            return
        ssl_object = transport.get_extra_info("ssl_object")
        self.sni = getattr(ssl_object, "l4lb_sni", None)
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        self.alpn = (alpn,) if alpn else ()
        if listener.config.client_cert != "off" and ssl_object is not None:
            self.subject = peer_subject(ssl_object)
        name = listener.router.match(self.sni, self.alpn)
        if name is None:
            self._fail("no_route")
            return
        self.pool = self.pools[name]
        self.connect()

    async def _accept(
        self, factory: Callable[[], asyncio.Protocol], tls: ssl.SSLContext | None
    ) -> asyncio.BaseTransport | None:
        """Give the client socket to a loop transport (with the TLS handshake when `tls`);
        None when that failed, the session then being ended and logged."""
        listener = self.listener
        try:
            transport, _ = await listener.loop.connect_accepted_socket(
                factory,
                cast(socket.socket, self.client),  # (either socket type: see _Socket)
                ssl=tls,
                ssl_handshake_timeout=listener.config.preread_timeout if tls else None,
            )
        except asyncio.CancelledError:
            self._fail("shutdown")
            raise
        except (TimeoutError, OSError, ssl.SSLError, EOFError) as exc:
            log.info(
                "listener %s: TLS handshake with %s failed: %s",
                listener.name,
                _format_peer(self.peer),
                exc or type(exc).__name__,
            )
            self._fail("tls_handshake_failed")
            return None
        finally:
            self.task = None
        return transport

    async def _http_accept(self) -> None:
        """Hand the connection to the HTTP adapter, which reads the listener's engine for
        every request, so a reload applies to the next request without closing anything."""
        from l7.accept import HttpAccept

        listener = self.listener
        https = listener.config.protocol == "https"
        peer = (self.peer[0], self.peer[1])
        h2c = not https and listener.config.http.h2c
        proto = HttpAccept(lambda: listener.engine, peer, self._http_closed, h2c)
        if await self._accept(lambda: proto, listener.tls_context if https else None) is None:
            return
        self.http = proto

    def _http_closed(self, proto: Any) -> None:
        """The HTTP connection ended; its requests were logged one by one."""
        if not self.ended:
            self.ended = True
            self.listener.session_ended(self)

    async def _attach_server(self) -> None:
        """Wrap the connected server socket in a transport (TLS when the pool says so)."""
        stream, pool = self.stream, self.pool
        assert stream is not None and pool is not None and self.ssock is not None
        upstream = self.listener.upstream_tls.get(pool.name)
        server = self.server
        assert server is not None
        ctx, hostname = (None, None)
        if upstream is not None:
            ctx, hostname = upstream.connect_args(server.name, server.host)
        try:
            transport, _ = await self.listener.loop.create_connection(
                lambda: stream.server,
                sock=cast(socket.socket, self.ssock),
                ssl=ctx,
                server_hostname=hostname,
                ssl_handshake_timeout=pool.config.connect_timeout if upstream else None,
            )
        except asyncio.CancelledError:
            self._abort_connected("shutdown")
            raise
        except (TimeoutError, OSError, ssl.SSLError, EOFError) as exc:
            log.warning(
                "server %s/%s: TLS handshake failed: %s",
                pool.name,
                server.name,
                upstream.failure(exc, server.name, server.host) if upstream else exc,
            )
            self._abort_connected("server_tls_failed")
            return
        finally:
            self.task = None
        self.ssock = None  # owned by the transport now
        if stream.client.lost:
            transport.abort()
            self._relay_done(stream, "client_close")
            return
        if self.preface:
            transport.write(self.preface)
            self.preface = b""
        self.idle_since = self.listener.loop.time()
        self.relay = stream
        stream.start(self._relay_done)

    # -- preread -----------------------------------------------------------------------------

    def _on_preread(self) -> None:
        try:
            data = self.client.recv(_PREREAD_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._end_preread("client_reset")
            return
        if not data:
            self._end_preread("client_close")
            return
        try:
            if self.proxy_reader is not None:
                self.proxy_reader.feed(data)
                header = self.proxy_reader.next_event()
                if not isinstance(header, ProxyHeader):
                    return
                if header.src is not None:
                    self.peer, self.local = header.src, header.dst
                if not self._admitted():
                    return
                data = self.proxy_reader.rest()
                self.proxy_reader = None
            self.preface += data
            if self.hello_reader is not None:
                self.hello_reader.feed(data)
                hello = self.hello_reader.next_event()
                if not isinstance(hello, ClientHello):
                    return
                self.sni, self.alpn = hello.sni, hello.alpn
                self.hello_reader = None
        except RemoteProtocolError as exc:
            self._reject(exc)
            return
        self._stop_preread()
        config = self.listener.config
        if config.protocol == "tls-passthrough":
            name = self.listener.router.match(self.sni, self.alpn)
        else:
            name = config.pool
        if name is None:
            self._fail("no_route")
            return
        self.pool = self.pools[name]
        self.connect()

    def _peek_proxy_header(self) -> None:
        try:
            data = self.client.recv(_PROXY_PEEK, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._end_preread("client_reset")
            return
        if not data:
            self._end_preread("client_close")
            return
        reader = ProxyHeaderReader()
        try:
            reader.feed(data)
            header = reader.next_event()
        except RemoteProtocolError as exc:
            self._reject(exc)
            return
        loop = self.listener.loop
        fd = self.client.fileno()
        if not isinstance(header, ProxyHeader):
            # Incomplete (rare: balancers send it in one segment). The bytes stay queued, so
            # the socket stays readable: look again shortly instead of spinning.
            remove_reader(loop, fd)
            loop.call_later(0.01, self._peek_again, fd)
            return
        try:
            self.client.recv(header.length)  # exactly the header: the rest is TLS or HTTP
        except OSError:
            self._stop_preread()
            self._fail("client_reset")
            return
        if header.src is not None:
            self.peer, self.local = header.src, header.dst
        self._stop_preread()
        if self._admitted():
            self._start_protocol()

    def _admitted(self) -> bool:
        """Behind a PROXY header: the gate judges the client it names (`peer`; the proxy's
        own address for a LOCAL header). False: the connection was closed."""
        listener = self.listener
        if listener.gate is None:
            return True
        why = listener.admit(self.peer[0])
        if why is not None:
            self._end_preread(why)
            return False
        self.gated = listener.gate
        return True

    def _peek_again(self, fd: int) -> None:
        if not self.ended and self.timer is not None:
            self.listener.loop.add_reader(fd, self._peek_proxy_header)

    def _reject(self, exc: RemoteProtocolError) -> None:
        """A malformed PROXY header or ClientHello: logged, and the connection closed."""
        word = _error_word(exc)
        log.info(
            "listener %s: %s from %s: %s", self.listener.name, word, _format_peer(self.peer), exc
        )
        self._end_preread(word)

    def _end_preread(self, why: str) -> None:
        self._stop_preread()
        self._fail(why)

    def _stop_preread(self) -> None:
        remove_reader(self.listener.loop, self.client.fileno())
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _preread_timeout(self) -> None:
        self.timer = None
        remove_reader(self.listener.loop, self.client.fileno())
        self._fail("preread_timeout")

    # -- connect -----------------------------------------------------------------------------

    def connect(self) -> None:
        loop = self.listener.loop
        pool = self.pool
        assert pool is not None
        attempt = self.attempt
        if attempt is None:
            attempt = self.attempt = Attempt(pool.config.retries)
        now = loop.time()
        server = pool.pick(now, self.peer[0].encode(), attempt.tried)
        if server is None:
            self._fail("no_server" if not attempt.tried else "connect_failed")
            return
        self.server = server
        attempt.begin(server, None, now)
        try:
            sock = _Socket(server.family, _STREAM_NONBLOCK)  # no ioctl(FIONBIO) after
        except OSError as exc:
            # Out of descriptors (EMFILE/ENFILE) or memory: another server would fare no
            # better. End this session (its count is given back in `_end`), logged.
            log.warning(
                "listener %s: cannot open a socket to server %s/%s: %s",
                self.listener.name,
                server.pool,
                server.name,
                exc.strerror or exc,
            )
            self._fail(os_error_name(exc.errno or 0))
            return
        self.ssock = sock
        if _STREAM_NONBLOCK == socket.SOCK_STREAM:
            sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connect_started = time.perf_counter()
        err = sock.connect_ex(server.sockaddr)
        if err == 0:
            self._connected()
        elif err == errno.EINPROGRESS:
            fd = sock.fileno()
            # The poller's registration of this socket is kept for its life: the relay
            # changes it to reading in place (see l4lb.poller).
            self.listener.poller.watch(fd, OUT, self._on_connect)
            self.timer = loop.call_later(pool.config.connect_timeout, self._on_timeout, fd)
        else:
            self._connect_failed(os_error_name(err))

    def _on_connect(self, events: int) -> None:
        """The connect ended: EPOLLOUT alone is success, an error bit failure (its errno is
        read then, only then: HAProxy too reads no SO_ERROR on success)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        sock = self.ssock
        assert sock is not None
        if events & ERR or not isinstance(self.listener.poller, Poller):
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err or events & ERR:
                self.listener.poller.forget(sock.fileno())
                self._connect_failed(os_error_name(err or errno.ECONNREFUSED))
                return
        self._connected()  # the relay changes the registration to reading, or releases it

    def _on_timeout(self, fd: int) -> None:
        self.timer = None
        self.listener.poller.forget(fd)
        self._connect_failed("connect_timeout")

    def _connect_failed(self, why: str) -> None:
        server, sock, attempt = self.server, self.ssock, self.attempt
        assert server is not None and sock is not None and attempt is not None
        sock.close()
        self.ssock = None
        if attempt.fail(self.listener.loop.time(), "connect")[1]:
            log.warning(
                "server %s/%s ejected for %gs after %s (passive check)",
                server.pool,
                server.name,
                server.passive.fail_timeout,
                why,
            )
        if attempt.retry(True, False):
            self.connect()
        else:
            self._fail(why)

    def _connected(self) -> None:
        assert self.server is not None and self.ssock is not None and self.pool is not None
        assert self.attempt is not None
        self.attempt.connected()
        stats = self.listener.stats
        if stats is not None:
            elapsed = time.perf_counter() - self.connect_started
            stats.connect_latency(self.pool.name, self.server.name).observe(elapsed)
        mode = self.pool.config.proxy_protocol
        if mode != "off":
            self.preface = self._proxy_header(mode) + self.preface
        if self.stream is not None or self.preface or self.pool.name in self.listener.upstream_tls:
            self.listener.poller.release(self.ssock.fileno())  # the loop takes the socket
        if self.stream is None and self.pool.name in self.listener.upstream_tls:
            self.stream = StreamRelay()  # plain client, TLS to the server
            self.task = self._spawn(self._attach_plain_client())
            return
        if self.stream is not None:
            self.task = self._spawn(self._attach_server())
            return
        if self.preface:
            self._send_preface()
        else:
            self._start_relay()

    def _proxy_header(self, mode: str) -> bytes:
        src = (self.peer[0], self.peer[1])
        dst = self.local
        if dst is None:
            try:
                dst = self.client.getsockname()
            except OSError:
                dst = None
        dst = (dst[0], dst[1]) if dst else None
        try:
            return encode_v2(src, dst) if mode == "v2" else encode_v1(src, dst)
        except RemoteProtocolError:  # pragma: no cover - addresses come from the kernel
            return encode_v2(None, None, local=True) if mode == "v2" else encode_v1(None, None)

    def _send_preface(self) -> None:
        sock = self.ssock
        assert sock is not None
        try:
            sent = sock.send(self.preface)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._abort_connected("server_reset")
            return
        self.preface = self.preface[sent:]
        loop = self.listener.loop
        if self.preface:
            fd = sock.fileno()
            loop.add_writer(fd, self._preface_writable, fd)
        else:
            self._start_relay()

    async def _attach_plain_client(self) -> None:
        stream = self.stream
        assert stream is not None
        try:
            await self.listener.loop.connect_accepted_socket(
                lambda: stream.client, cast(socket.socket, self.client)
            )
        except OSError:
            self._abort_connected("client_reset")
            return
        await self._attach_server()

    def _preface_writable(self, fd: int) -> None:
        remove_writer(self.listener.loop, fd)
        self._send_preface()

    def _start_relay(self) -> None:
        assert self.ssock is not None
        self.idle_since = self.listener.loop.time()
        listener = self.listener
        self.relay = Relay(
            listener.loop, self.client, self.ssock, self._relay_done, listener.poller
        )

    def _abort_connected(self, why: str) -> None:
        assert self.server is not None and self.ssock is not None
        self.ssock.close()
        self.ssock = None
        self._fail(why)

    # -- end ---------------------------------------------------------------------------------

    def _relay_done(self, relay: Relay | StreamRelay, how: str) -> None:
        server = self.server
        assert server is not None
        server.bytes_in += relay.bytes_in
        server.bytes_out += relay.bytes_out
        self._end(how, relay.bytes_in, relay.bytes_out)

    def _fail(self, why: str) -> None:
        stream = self.stream
        if stream is not None and stream.client.transport is not None:
            stream.client.transport.abort()  # the transport owns the client socket
        else:
            self.client.close()
        self._end(why, 0, 0)

    def abort(self, how: str = "shutdown") -> None:
        """End the session now, whatever phase it is in (shutdown deadline)."""
        if self.http is not None:
            self.http.abort()
            return
        if self.relay is not None:
            self.relay.close(how)
            return
        if self.ended:
            return
        if self.task is not None:
            self.task.cancel()  # the task ends the session
            return
        loop = self.listener.loop
        if self.stream is None:
            remove_reader(loop, self.client.fileno())
        if self.ssock is not None:
            self.listener.poller.forget(self.ssock.fileno())
            remove_writer(loop, self.ssock.fileno())
            self.ssock.close()
            self.ssock = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._fail(how)

    def _end(self, how: str, bytes_in: int, bytes_out: int) -> None:
        if self.ended:
            return
        self.ended = True
        listener = self.listener
        if self.gated is not None:
            self.gated.release(self.peer[0])
        attempt = self.attempt
        if attempt is not None:
            attempt.end(listener.loop.time())  # the server's count, whatever the phase
        if listener.access_log.enabled:  # (the record costs more than the rest of `_end`)
            self._log(how, bytes_in, bytes_out)
        listener.session_ended(self)

    def _log(self, how: str, bytes_in: int, bytes_out: int) -> None:
        listener = self.listener
        listener.access_log.write(
            ConnectionRecord(
                client=_format_peer(self.peer),
                listener=listener.name,
                pool=self.pool.name if self.pool else "-",
                server=self.server.name if self.server else "",
                bytes_in=bytes_in,
                bytes_out=bytes_out,
                duration=time.monotonic() - self.started,
                end=how or "closed",
                retries=self.attempt.retries if self.attempt is not None else 0,
                sni=self.sni or "",
                client_cert=self.subject or "",
            )
        )


def _error_word(exc: RemoteProtocolError) -> str:
    """The access log's `end=` word for a preread failure."""
    if isinstance(exc, BadProxyHeader):
        return "bad_proxy_header"
    if isinstance(exc, NotTLS):
        return "not_tls"
    return "bad_client_hello"


def os_error_name(err: int) -> str:
    """`ECONNREFUSED` -> `refused`: short words for the log's `end=` field."""
    return {
        errno.ECONNREFUSED: "refused",
        errno.EHOSTUNREACH: "unreachable",
        errno.ENETUNREACH: "unreachable",
        errno.ETIMEDOUT: "connect_timeout",
    }.get(err, errno.errorcode.get(err, str(err)).lower())
