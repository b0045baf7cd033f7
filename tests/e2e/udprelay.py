"""A hostile network for the HTTP/3 tests: a UDP relay on 127.0.0.1 between one client and
l4lb that drops, duplicates and reorders a share of the datagrams in both directions.

One thread, one socket towards the client and one towards l4lb; a seeded random generator
makes each run the same pattern of trouble. A datagram picked for reordering is held back
and sent after the next `delay` datagrams in the same direction. Counters say what was done,
so a test can check that the trouble happened.
"""

from __future__ import annotations

import random
import select
import socket
import threading

__all__ = ["LossyRelay"]


class LossyRelay:
    def __init__(
        self,
        target: tuple[str, int],
        *,
        loss: float = 0.05,
        duplicate: float = 0.02,
        reorder: float = 0.03,
        delay: int = 3,
        seed: int = 1,
    ) -> None:
        self.target = target
        self.loss, self.duplicate, self.reorder, self.delay = loss, duplicate, reorder, delay
        self.rng = random.Random(seed)
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind(("127.0.0.1", 0))
        for s in (self.front, self.back):
            s.setblocking(False)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.port = self.front.getsockname()[1]
        self.client: tuple[str, int] | None = None
        self.dropped = self.duplicated = self.reordered = self.passed = 0
        self.held: dict[int, list[list]] = {0: [], 1: []}  # direction -> [countdown, data]
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.running = False
        self.thread.join(5)
        self.front.close()
        self.back.close()

    def _run(self) -> None:
        while self.running:
            ready, _, _ = select.select([self.front, self.back], [], [], 0.05)
            for sock in ready:
                for _ in range(256):
                    try:
                        data, addr = sock.recvfrom(65535)
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:  # an ICMP error for an earlier send
                        continue
                    if sock is self.front:
                        self.client = addr
                        self._forward(0, data)
                    else:
                        self._forward(1, data)

    def _send(self, direction: int, data: bytes) -> None:
        try:
            if direction == 0:
                self.back.sendto(data, self.target)
            elif self.client is not None:
                self.front.sendto(data, self.client)
        except OSError:
            pass  # a full buffer: lost, as on a real network

    def _forward(self, direction: int, data: bytes) -> None:
        held = self.held[direction]
        for entry in held:
            entry[0] -= 1
        while held and held[0][0] <= 0:
            self._send(direction, held.pop(0)[1])
        r = self.rng.random()
        if r < self.loss:
            self.dropped += 1
            return
        if r < self.loss + self.reorder:
            self.reordered += 1
            held.append([self.delay, data])
            return
        self.passed += 1
        self._send(direction, data)
        if self.rng.random() < self.duplicate:
            self.duplicated += 1
            self._send(direction, data)
