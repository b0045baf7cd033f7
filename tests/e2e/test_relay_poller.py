"""The splice relay on both pollers (l4lb.poller): epoll, and the loop-reader fallback used
where there is no epoll. Real TCP sockets on 127.0.0.1, the relay in this process."""

from __future__ import annotations

import asyncio
import gc
import os
import socket

import pytest

from l4lb.poller import LoopPoller, Poller
from l4lb.relay import Relay


def _pair() -> tuple[socket.socket, socket.socket]:
    """A connected TCP pair: (the end a peer uses, the end the relay gets, non-blocking)."""
    with socket.create_server(("127.0.0.1", 0)) as lsock:
        outer = socket.create_connection(lsock.getsockname())
        inner, _ = lsock.accept()
    inner.setblocking(False)
    outer.setblocking(False)
    return outer, inner


async def _recv_until_eof(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    got = bytearray()
    while chunk := await asyncio.wait_for(loop.sock_recv(sock, 1 << 20), 10):
        got += chunk
    return bytes(got)


@pytest.mark.parametrize("kind", ["epoll", "loop"])
def test_relay_moves_both_ways_and_ends_once(kind):
    up, down = os.urandom(3 << 20), os.urandom(5 << 20)  # more than the socket buffers

    async def main() -> tuple[bytes, bytes, list[str], int]:
        loop = asyncio.get_running_loop()
        poller = Poller(loop) if kind == "epoll" else LoopPoller(loop)
        client, client_side = _pair()
        server, server_side = _pair()
        ended: list[str] = []
        Relay(loop, client_side, server_side, lambda r, how: ended.append(how), poller)
        # The client sends and half-closes; the server answers, then closes: both directions
        # block on a full destination on the way, and EOF is passed on each way.
        send_up = loop.create_task(loop.sock_sendall(client, up))
        got_up = loop.create_task(_recv_until_eof(loop, server))
        got_down = loop.create_task(_recv_until_eof(loop, client))
        await send_up
        client.shutdown(socket.SHUT_WR)
        await loop.sock_sendall(server, down)
        server.shutdown(socket.SHUT_WR)
        results = await asyncio.gather(got_up, got_down)
        for _ in range(100):  # the relay closes once both EOFs have passed
            if ended:
                break
            await asyncio.sleep(0.01)
        client.close()
        server.close()
        left = len(poller.handlers)
        if isinstance(poller, Poller):
            poller.close()
        return results[0], results[1], ended, left

    got_up, got_down, ended, left = asyncio.run(main())
    assert got_up == up
    assert got_down == down
    assert ended == ["client_close"]
    assert left == 0  # no handler outlives the relay's sockets


class _Owner:
    """Holds its relay and is called back by it, as a listener's Session is."""

    def __init__(self) -> None:
        self.relay: Relay | None = None
        self.ended: list[str] = []

    def done(self, relay: Relay, how: str) -> None:
        self.ended.append(how)


@pytest.mark.parametrize("kind", ["epoll", "loop"])
def test_ended_relay_is_freed_without_the_garbage_collector(kind):
    """A relay that has ended, and its owner, form no reference cycle: reference counting
    frees them (at thousands of new connections a second, the collector's passes over
    cycles cost more than a tenth of a connection's instructions)."""

    async def main() -> tuple[list[str], int]:
        loop = asyncio.get_running_loop()
        poller = Poller(loop) if kind == "epoll" else LoopPoller(loop)
        client, client_side = _pair()
        server, server_side = _pair()
        owner = _Owner()
        owner.relay = Relay(loop, client_side, server_side, owner.done, poller)
        del client_side, server_side
        await loop.sock_sendall(client, b"ping")
        client.shutdown(socket.SHUT_WR)
        assert await _recv_until_eof(loop, server) == b"ping"
        server.shutdown(socket.SHUT_WR)
        assert await _recv_until_eof(loop, client) == b""
        for _ in range(100):
            if owner.ended:
                break
            await asyncio.sleep(0.01)
        ended = owner.ended
        del owner
        left = sum(1 for o in gc.get_objects() if type(o) is Relay)
        client.close()
        server.close()
        if isinstance(poller, Poller):
            poller.close()
        return ended, left

    gc.collect()
    gc.disable()
    try:
        ended, left = asyncio.run(main())
    finally:
        gc.enable()
    assert ended == ["client_close"]
    assert left == 0
