"""The interactive side of the live view: draw frames on the terminal, read keys.

`tui.py` renders a snapshot; this module owns the terminal. It is used by `l4lb up` (the
snapshot comes from the running process) and by `l4lb top` (from an instance's admin API), so
both look and behave the same. Keys are read from stdin in cbreak mode through the event
loop, so drawing and proxying never wait on the keyboard.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import termios
import tty
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
from rich.console import Console
from rich.live import Live

from l4lb.tui import ViewState

__all__ = ["decode_keys", "run_view"]

_SEQUENCES = {
    "\x1b[A": "up",
    "\x1b[B": "down",
    "\x1b[H": "home",
    "\x1b[F": "end",
    "\x1b[1~": "home",
    "\x1b[4~": "end",
    "\x1bOA": "up",
    "\x1bOB": "down",
}


def decode_keys(data: str) -> list[str]:
    """Key names from raw terminal input: arrows, home/end, enter, escape, backspace, chars."""
    keys: list[str] = []
    i = 0
    while i < len(data):
        for seq, name in _SEQUENCES.items():
            if data.startswith(seq, i):
                keys.append(name)
                i += len(seq)
                break
        else:
            ch = data[i]
            i += 1
            if ch in "\r\n":
                keys.append("enter")
            elif ch == "\x1b":
                keys.append("escape")
            elif ch in "\x7f\x08":
                keys.append("backspace")
            else:
                keys.append(ch)
    return keys


@contextlib.contextmanager
def _cbreak(fd: int) -> Iterator[None]:
    old = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


async def run_view(
    snapshot: Callable[[], Awaitable[dict[str, Any]]],
    act: Callable[[str, str, str], Awaitable[str]],
    *,
    refresh: float = 1.0,
) -> None:
    """Show the live view until `q`. `snapshot()` gives the next frame's data; `act(action,
    pool, server)` performs "drain"/"enable" and returns a line for the footer events."""
    console = Console()
    view = ViewState()
    keys: asyncio.Queue[str] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()

    def on_input() -> None:
        try:
            data = os.read(fd, 1024).decode(errors="replace")
        except OSError:
            return
        for key in decode_keys(data):
            keys.put_nowait(key)

    with _cbreak(fd), Live(console=console, screen=True, auto_refresh=False) as live:
        loop.add_reader(fd, on_input)
        try:
            snap = await snapshot()
            next_fetch = loop.time() + refresh
            while True:
                width, height = console.size
                live.update(view.render(snap, width, height), refresh=True)
                with anyio.move_on_after(max(0.0, next_fetch - loop.time())):
                    action = view.handle_key(await keys.get())
                    if action == "quit":
                        return
                    if isinstance(action, tuple):
                        await act(*action)
                        next_fetch = 0.0  # show the effect at once
                    continue
                snap = await snapshot()
                next_fetch = loop.time() + refresh
        finally:
            loop.remove_reader(fd)
