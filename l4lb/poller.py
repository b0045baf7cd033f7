"""One epoll for the plain TCP connections of an event loop: one registration per socket.

Why not the loop's `add_reader`/`add_writer`: uvloop gives every fd a libuv poll handle,
made on the first `add_reader`/`add_writer` and closed when the last of them is removed.
Each handle costs about eight system calls (an epoll_ctl ADD+DEL probe, an ioctl(FIONBIO),
failing DELs on close, the registration itself through io_uring), and a proxied connection
went through three of them (the connect writer, then a reader on each socket): 18 epoll_ctl
and 5 ioctl of the 47 system calls per connection that `bench/syscalls.py` counted, against
HAProxy's 3 epoll_ctl. Here a socket is added once (`watch`), its interest changed with one
EPOLL_CTL_MOD when it changes (connected, EOF, backpressure), and never deleted: closing
the fd removes it from the epoll set (the kernel does; l4lb never dup()s these sockets or
forks without exec), so only the handler is dropped (`forget`). The epoll fd itself is
registered with the loop once, for the loop's life; the loop calls `_dispatch` when any
socket is ready, and that drains the ready list in one `epoll_wait(0)`, with each event's
mask: a connect's completion is read from it (EPOLLOUT without EPOLLERR), with no
getsockopt.

Level-triggered, like the loop's readers: a handler that does not consume what is ready is
called again on the next loop iteration. Linux only (select.epoll); `available()` says so,
and the relay falls back to the loop's readers elsewhere.
"""

from __future__ import annotations

import asyncio
import select
import weakref
from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "ERR",
    "IN",
    "OUT",
    "RDHUP",
    "LoopPoller",
    "Poller",
    "available",
    "close_poller",
    "poller_for",
    "remove_reader",
    "remove_writer",
]

IN: Final = getattr(select, "EPOLLIN", 1)
OUT: Final = getattr(select, "EPOLLOUT", 4)
ERR: Final = getattr(select, "EPOLLERR", 8) | getattr(select, "EPOLLHUP", 16)
RDHUP: Final = getattr(select, "EPOLLRDHUP", 0x2000)  # the peer's FIN (with IN: read for the EOF)
_MAX_EVENTS: Final = 1024

_pollers: Final[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Poller | LoopPoller]] = (
    weakref.WeakKeyDictionary()
)


def remove_reader(loop: Any, fd: int) -> None:
    """`loop.remove_reader(fd)`, its result dropped. Typeshed says it returns a bool, uvloop
    returns None, and code compiled by mypyc checks a declared bool at run time: called on a
    loop typed Any, nothing is checked."""
    loop.remove_reader(fd)


def remove_writer(loop: Any, fd: int) -> None:
    """`loop.remove_writer(fd)`, its result dropped (see `remove_reader`)."""
    loop.remove_writer(fd)


def available() -> bool:
    return hasattr(select, "epoll")


class Poller:
    """The epoll set of one loop. `handler(events)` is called with the epoll mask."""

    __slots__ = ("__weakref__", "closed", "ep", "gone", "handlers", "interest", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.ep = select.epoll()
        self.handlers: dict[int, Callable[[int], None]] = {}
        self.interest: dict[int, int] = {}
        # fds forgotten since the last `epoll_wait`: an event already fetched for one of them
        # belongs to the closed socket, not to a new one that got the same number meanwhile
        # (a connect retry inside a handler). Level-triggered, the new one's are seen again.
        self.gone: set[int] = set()
        self.closed = False
        self.loop = weakref.ref(loop)
        loop.add_reader(self.ep.fileno(), self._dispatch)

    def watch(self, fd: int, events: int, handler: Callable[[int], None]) -> None:
        """Call `handler` when `fd` is ready for `events` (IN, OUT or both; 0: nothing for
        now). An fd already watched gets the new handler and mask (one EPOLL_CTL_MOD)."""
        self.handlers[fd] = handler
        old = self.interest.get(fd)
        if old is None:
            self.ep.register(fd, events)
            self.interest[fd] = events
        elif old != events:
            self.ep.modify(fd, events)
            self.interest[fd] = events

    def modify(self, fd: int, events: int) -> None:
        """Change what a watched `fd` waits for (no system call if it is unchanged; a
        parked `fd` is registered again when it waits for something; nothing if `fd` was
        released)."""
        old = self.interest.get(fd)
        if old is None:
            if events and fd in self.handlers:  # parked: register it again
                self.ep.register(fd, events)
                self.interest[fd] = events
        elif old != events:
            self.ep.modify(fd, events)
            self.interest[fd] = events

    def forget(self, fd: int) -> None:
        """`fd` is about to be closed: drop its handler (the close removes it from epoll)."""
        self.handlers.pop(fd, None)
        self.interest.pop(fd, None)
        self.gone.add(fd)

    def park(self, fd: int) -> None:
        """Take a quiet `fd` out of the epoll set, keeping its handler: epoll reports EPOLLHUP
        whatever the interest, and level-triggered it would wake the loop on every turn."""
        if self.interest.pop(fd, None) is not None:
            self.ep.unregister(fd)

    def release(self, fd: int) -> None:
        """`fd` stays open but leaves this poller (handed to a loop transport): EPOLL_CTL_DEL."""
        self.handlers.pop(fd, None)
        self.gone.add(fd)
        if self.interest.pop(fd, None) is not None:
            try:
                self.ep.unregister(fd)
            except OSError:
                pass

    def _dispatch(self) -> None:
        handlers, gone = self.handlers, self.gone
        gone.clear()
        for fd, events in self.ep.poll(0, _MAX_EVENTS):
            handler = handlers.get(fd)
            if handler is not None and fd not in gone:
                handler(events)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        loop = self.loop()
        if loop is not None and not loop.is_closed():
            remove_reader(loop, self.ep.fileno())
        self.ep.close()
        self.handlers.clear()
        self.interest.clear()


def poller_for(loop: asyncio.AbstractEventLoop) -> Poller | LoopPoller:
    """The loop's poller, made on first use (a LoopPoller where there is no epoll)."""
    poller = _pollers.get(loop)
    if poller is None or getattr(poller, "closed", False):
        poller = _pollers[loop] = Poller(loop) if available() else LoopPoller(loop)
    return poller


def close_poller(loop: asyncio.AbstractEventLoop) -> None:
    """Close the loop's poller, if it has one (at shutdown, after the last connection)."""
    poller = _pollers.pop(loop, None)
    if isinstance(poller, Poller):
        poller.close()


class LoopPoller:
    """The same surface over the loop's `add_reader`/`add_writer`, where there is no epoll.
    Handlers get IN or OUT (no error bits: the next read or write tells)."""

    __slots__ = ("handlers", "interest", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.handlers: dict[int, Callable[[int], None]] = {}
        self.interest: dict[int, int] = {}

    def watch(self, fd: int, events: int, handler: Callable[[int], None]) -> None:
        old = self.interest.get(fd, 0)
        if fd in self.handlers and self.handlers[fd] is not handler:
            self._set(fd, old, 0)
            old = 0
        self.handlers[fd] = handler
        self._set(fd, old, events)

    def modify(self, fd: int, events: int) -> None:
        if fd in self.handlers:
            self._set(fd, self.interest.get(fd, 0), events)

    def forget(self, fd: int) -> None:
        self._set(fd, self.interest.get(fd, 0), 0)
        self.handlers.pop(fd, None)
        self.interest.pop(fd, None)

    def release(self, fd: int) -> None:
        """As `forget` (the loop's readers hold nothing more). A method, not `release =
        forget`: mypyc compiles no aliases in a class body."""
        self.forget(fd)

    def park(self, fd: int) -> None:
        """Nothing to do: the loop's readers report no hang-up without interest."""

    def _set(self, fd: int, old: int, new: int) -> None:
        if old == new:
            return
        handler = self.handlers[fd]
        loop = self.loop
        if new & IN and not old & IN:
            loop.add_reader(fd, handler, IN)
        elif old & IN and not new & IN:
            remove_reader(loop, fd)
        if new & OUT and not old & OUT:
            loop.add_writer(fd, handler, OUT)
        elif old & OUT and not new & OUT:
            remove_writer(loop, fd)
        self.interest[fd] = new
