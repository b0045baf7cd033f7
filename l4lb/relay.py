"""The L4 byte mover: both directions of one proxied connection, driven by loop callbacks.

This is the hottest code in the project. Per direction it reads from one socket and writes to
the other through a kernel pipe with `os.splice`, so payload bytes never enter Python
(measured in ../shared/research/python-peers.md: about twice the bytes per CPU-second of
asyncio Protocol callbacks). Where splice is missing it copies through a reusable buffer with
`recv_into`/`send` behind the same interface.

Rules that keep it small and correct:
- Readiness is level-triggered through the loop's `l4lb.poller` (one epoll registration
  per socket for its life, its interest changed in place) on raw, non-blocking sockets; no
  task and no Future per connection or per chunk.
- A direction holds a pipe (or buffer) only while bytes are in flight, and gives it back to a
  shared free list when the pipe is empty: an idle connection holds its two sockets and
  nothing else (these machines cap a process at 20,000 descriptors).
- Backpressure: while bytes wait in the pipe for the destination, the source is not read.
- Half-close: EOF from one side is passed on as `shutdown(SHUT_WR)` once the pipe is empty;
  the relay ends when both directions have ended, or at once on a reset.
- `touched` is set on every callback; the listener's idle sweep clears it and ends relays
  that stayed untouched for the idle timeout, so no timer is re-armed per chunk.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Callable
from typing import Final

from l4lb.poller import ERR, IN, OUT, RDHUP, LoopPoller, Poller, poller_for

__all__ = ["CHUNK", "Relay", "close_pipes", "splice_available"]

CHUNK: Final = 1 << 20  # bytes moved per splice call; the pipe is grown to match where allowed
_FREE_PIPES_MAX: Final = 256
_F_SETPIPE_SZ: Final = 1031
# (Given positionally, after the two offsets: a keyword argument costs `os.splice` an
# argument-parsing pass, six times per connection.)
_SPLICE_FLAGS: Final = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
_free_pipes: Final[list[tuple[int, int]]] = []
_free_buffers: Final[list[bytearray]] = []
_RESET_ERRNOS: Final = frozenset(
    {errno.ECONNRESET, errno.EPIPE, errno.ETIMEDOUT, errno.ECONNABORTED}
)
_EPOLLERR: Final = 8
_READ: Final = IN | RDHUP  # RDHUP: a FIN that came with the data is read in the same wake-up


_SPLICE: Final = hasattr(os, "splice")


def splice_available() -> bool:
    return _SPLICE


def _take_pipe() -> tuple[int, int]:
    if _free_pipes:
        return _free_pipes.pop()
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        import fcntl

        fcntl.fcntl(w, _F_SETPIPE_SZ, CHUNK)
    except OSError:  # over the per-user pipe budget: keep the default 64 KiB
        pass
    return r, w


def _give_pipe(pipe: tuple[int, int]) -> None:
    if len(_free_pipes) < _FREE_PIPES_MAX:
        _free_pipes.append(pipe)
    else:
        os.close(pipe[0])
        os.close(pipe[1])


def close_pipes() -> None:
    """Close the free list (at shutdown, so descriptors do not outlive the proxy)."""
    while _free_pipes:
        r, w = _free_pipes.pop()
        os.close(r)
        os.close(w)


class _Direction:
    """One way of the relay: `src` socket to `dst` socket."""

    __slots__ = (
        "buf",
        "dst",
        "dst_fd",
        "eof",
        "moved",
        "pending",
        "pipe",
        "reading",
        "src",
        "src_fd",
        "start",
        "writing",
    )

    def __init__(self, src: socket.SocketType, dst: socket.SocketType) -> None:
        self.src = src
        self.dst = dst
        self.src_fd = src.fileno()
        self.dst_fd = dst.fileno()
        self.pipe: tuple[int, int] | None = None  # splice mode: the pipe holding bytes
        self.buf: bytearray | None = None  # copy mode: the buffer holding bytes, from `start`
        self.start = 0
        self.pending = 0
        self.moved = 0
        self.eof = False
        # What this direction has registered with the loop, so that closing unregisters
        # exactly that: a reader left on a closed fd can starve a later socket that gets the
        # same fd number (seen with uvloop 0.23).
        self.reading = True
        self.writing = False


class Relay:
    """Splice two connected, non-blocking sockets together until both directions end. They
    may be `socket.SocketType` (the C socket a listener makes) or `socket.socket`.

    `on_done(relay, how)` is called exactly once, after both sockets are closed; `how` is
    "client_close", "server_close", "client_reset", "server_reset", "idle_timeout" or
    "shutdown" (what ended it first).
    """

    __slots__ = (
        "client",
        "closed",
        "down",
        "first_end",
        "loop",
        "on_done",
        "poller",
        "server",
        "touched",
        "up",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        client: socket.SocketType,
        server: socket.SocketType,
        on_done: Callable[[Relay, str], None],
        poller: Poller | LoopPoller | None = None,
    ) -> None:
        self.loop = loop
        self.client = client
        self.server = server
        self.on_done = on_done
        self.up = _Direction(client, server)  # client -> server
        self.down = _Direction(server, client)  # server -> client
        self.first_end = ""
        self.touched = True
        self.closed = False
        # The server socket may be watched already (its connect): this changes its interest.
        self.poller = poller = poller if poller is not None else poller_for(loop)
        poller.watch(self.up.src_fd, _READ, self._client_ready)
        poller.watch(self.down.src_fd, _READ, self._server_ready)

    def _client_ready(self, events: int) -> None:
        self._ready(self.up, self.down, events)

    def _server_ready(self, events: int) -> None:
        self._ready(self.down, self.up, events)

    def _ready(self, rd: _Direction, wd: _Direction, events: int) -> None:
        """One socket is ready: `rd` reads from it, `wd` writes to it."""
        self.touched = True
        if wd.writing and events & (OUT | ERR):
            if _SPLICE:
                self._writable(wd)
            else:
                self._writable_copy(wd)
            if self.closed:
                return
        if rd.reading and events & (IN | ERR):
            # (A branch, not a bound method kept on the relay: that would make every relay
            # a reference cycle, freed only by the garbage collector.)
            if _SPLICE:
                self._read(rd)
            else:
                self._read_copy(rd)
            if events & RDHUP and rd.reading and not self.closed:
                # The FIN was already there when epoll looked: take the EOF now, which saves
                # the next wake-up (an epoll_pwait and an epoll_wait) for it.
                if _SPLICE:
                    self._read(rd)
                else:
                    self._read_copy(rd)
        elif events & ERR and not rd.reading and not wd.writing and not self.closed:
            # Nothing waits on this socket, yet epoll reports it (it always reports these).
            if events & _EPOLLERR:
                self.close(self._side(rd.src) + "_reset")
            else:
                # EPOLLHUP: both ways of this socket are shut (its FIN came, ours went), but
                # unread bytes may remain, for when the other socket drains: park this one
                # until then (`_interest` registers it again).
                self.poller.park(rd.src_fd)

    def _interest(self) -> None:
        """Tell the poller what each socket now waits for (a syscall only where it changed)."""
        up, down, poller = self.up, self.down, self.poller
        poller.modify(up.src_fd, (_READ if up.reading else 0) | (OUT if down.writing else 0))
        poller.modify(down.src_fd, (_READ if down.reading else 0) | (OUT if up.writing else 0))

    @property
    def bytes_in(self) -> int:
        """Bytes from the client to the server."""
        return self.up.moved

    @property
    def bytes_out(self) -> int:
        """Bytes from the server to the client."""
        return self.down.moved

    # -- splice mode -------------------------------------------------------------------------

    def _read(self, d: _Direction) -> None:
        self.touched = True
        pipe = d.pipe
        if pipe is None:
            try:
                pipe = _take_pipe()
            except OSError as exc:
                # No descriptor for a pipe (EMFILE/ENFILE): end this relay, as an error the
                # access log names ("emfile"), rather than raise out of the loop's callback
                # and be called again at once, for ever.
                self.close(errno.errorcode.get(exc.errno or 0, "pipe_failed").lower())
                return
        try:
            n = os.splice(d.src_fd, pipe[1], CHUNK, None, None, _SPLICE_FLAGS)
        except BlockingIOError:
            if d.pipe is None:
                _give_pipe(pipe)
            return
        except OSError as exc:
            if d.pipe is None:
                _give_pipe(pipe)
            self._reset(d, exc)
            return
        if n == 0:
            if d.pipe is None:
                _give_pipe(pipe)
            self._eof(d)
            return
        d.pending += n
        d.moved += n
        d.pipe = pipe
        self._flush(d)

    def _flush(self, d: _Direction) -> None:
        pipe = d.pipe
        assert pipe is not None
        try:
            while d.pending:
                m = os.splice(pipe[0], d.dst_fd, d.pending, None, None, _SPLICE_FLAGS)
                d.pending -= m
        except BlockingIOError:
            # The destination is full: stop reading the source until the pipe drains.
            d.reading, d.writing = False, True
            self._interest()
            return
        except OSError as exc:
            self._reset_dst(d, exc)
            return
        d.pipe = None
        _give_pipe(pipe)

    def _writable(self, d: _Direction) -> None:
        self.touched = True
        pipe = d.pipe
        assert pipe is not None
        try:
            while d.pending:
                d.pending -= os.splice(pipe[0], d.dst_fd, d.pending, None, None, _SPLICE_FLAGS)
        except BlockingIOError:
            return
        except OSError as exc:
            self._reset_dst(d, exc)
            return
        d.pipe = None
        _give_pipe(pipe)
        d.writing = False
        if d.eof:
            self._interest()
            self._finish_direction(d)
        else:
            d.reading = True
            self._interest()

    # -- copy mode (no splice) ---------------------------------------------------------------

    def _read_copy(self, d: _Direction) -> None:
        self.touched = True
        buf = _free_buffers.pop() if _free_buffers else bytearray(256 * 1024)
        try:
            n = d.src.recv_into(buf)
        except BlockingIOError:
            _free_buffers.append(buf)
            return
        except OSError as exc:
            _free_buffers.append(buf)
            self._reset(d, exc)
            return
        if n == 0:
            _free_buffers.append(buf)
            self._eof(d)
            return
        d.moved += n
        view = memoryview(buf)[:n]
        try:
            sent = d.dst.send(view)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            _free_buffers.append(buf)
            self._reset_dst(d, exc)
            return
        if sent == n:
            _free_buffers.append(buf)
            return
        d.buf, d.start = buf, sent
        d.pending = n - sent
        d.reading, d.writing = False, True
        self._interest()

    def _writable_copy(self, d: _Direction) -> None:
        self.touched = True
        buf, start = d.buf, d.start
        assert buf is not None
        try:
            sent = d.dst.send(memoryview(buf)[start : start + d.pending])
        except BlockingIOError:
            return
        except OSError as exc:
            self._reset_dst(d, exc)
            return
        d.pending -= sent
        if d.pending:
            d.start = start + sent
            return
        d.buf = None
        _free_buffers.append(buf)
        d.writing = False
        if d.eof:
            self._interest()
            self._finish_direction(d)
        else:
            d.reading = True
            self._interest()

    # -- ending ------------------------------------------------------------------------------

    def _side(self, sock: socket.SocketType) -> str:
        return "client" if sock is self.client else "server"

    def _eof(self, d: _Direction) -> None:
        d.eof = True
        d.reading = False
        if not self.first_end:
            self.first_end = self._side(d.src) + "_close"
        if d.pending:
            self._interest()
            return
        other = self.down if d is self.up else self.up
        if not (other.eof and not other.pending):
            self._interest()  # the relay goes on: stop reading this side (one MOD)
        self._finish_direction(d)

    def _finish_direction(self, d: _Direction) -> None:
        if self.up.eof and self.down.eof and not self.up.pending and not self.down.pending:
            self.close("")  # both ways done: close sends the FIN, no shutdown needed
            return
        try:
            d.dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _reset(self, d: _Direction, exc: OSError) -> None:
        """Reading `d.src` failed: that side reset the connection."""
        self.close(self._side(d.src) + ("_reset" if exc.errno in _RESET_ERRNOS else "_error"))

    def _reset_dst(self, d: _Direction, exc: OSError) -> None:
        """Writing `d.dst` failed: that side is gone."""
        self.close(self._side(d.dst) + ("_reset" if exc.errno in _RESET_ERRNOS else "_error"))

    def close(self, how: str) -> None:
        """End the relay now (idempotent) and report how it ended."""
        if self.closed:
            return
        self.closed = True
        if how and not self.first_end:
            self.first_end = how
        # Closing a socket takes it out of the epoll set: only the handlers go (no syscall).
        self.poller.forget(self.up.src_fd)
        self.poller.forget(self.down.src_fd)
        for d in (self.up, self.down):
            d.reading = d.writing = False
            if d.pipe is not None:
                if _SPLICE:
                    # Bytes left in the pipe are lost with the connection: drop the pipe.
                    os.close(d.pipe[0])
                    os.close(d.pipe[1])
                d.pipe = None
            d.buf = None
        if how.endswith(("_reset", "_error")):
            # An abortive end: reset rather than FIN, so the peer does not take a cut stream
            # for a complete one.
            for sock in (self.client, self.server):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                except OSError:
                    pass
        self.client.close()
        self.server.close()
        on_done, self.on_done = self.on_done, _done
        # (Dropped: the session that owns this relay is the callback's `self`, so keeping it
        # would leave a cycle for the garbage collector.)
        on_done(self, self.first_end or how)


def _done(relay: Relay, how: str) -> None:
    """`on_done` once it has been called."""
