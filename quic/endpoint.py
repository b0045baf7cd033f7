"""One UDP socket of an `https` listener with `http3 = true`: datagrams to QUIC connections.

The socket is bound by the runtime beside the listener's TCP port (same address and port)
and kept across reloads, like the TCP sockets; `update` points the endpoint at the new
config. Reading is one loop reader callback that drains up to `_BATCH` datagrams per wake-up
(no task, no Future per packet, no asyncio transport: the runtime's swap is synchronous and
a transport cannot be made synchronously). Sending: what a connection queues at once goes
out with UDP GSO where the kernel has it (Linux 4.18+, `UDP_SEGMENT`): a run of datagrams
of one size to one address (the last may be shorter) is one `sendmsg` that the kernel cuts
into datagrams, as quic-go and quiche do; else one `sendto` each. A datagram the kernel will
not take now is dropped (QUIC's loss recovery sends it again).

Per datagram, as aioquic's own server does (`aioquic.asyncio.server`), plus limits:
- a header that does not parse: dropped (counted in `h3_dropped`); a short-header packet for
  no known connection: a stateless reset (quic/reset.py, rate-limited) or dropped;
- an unknown version: a Version Negotiation packet (never in answer to one);
- an Initial for no connection, in a datagram of at least 1200 bytes (RFC 9000 §14.1, the
  anti-amplification floor): a Retry with an address-validation token when `quic_retry` is
  "always", or "auto" and more than `quic_retry_threshold` handshakes are unfinished (as
  HAProxy's quic-retry-threshold); otherwise, or with a valid token, a new connection,
  unless the listener is at `max_connections` (then dropped: the client retries). With more
  than one certificate, the connection is made once the ClientHello's server name is read
  from the Initials (quic/hello.py); until then at most `_MAX_HELLOS` clients are half-read,
  each with at most `MAX_HELLO_DATAGRAMS` datagrams kept (the oldest is forgotten first).
Until a client's address is validated aioquic itself sends at most 3x what it received.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import struct
from typing import Any

from aioquic.buffer import Buffer
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.retry import QuicRetryTokenHandler

from l4lb.config.values import Address
from l4lb.listener import bound_socket
from quic.connection import ServerQuic
from quic.h3 import H3Server
from quic.hello import HelloReader, Result
from quic.reset import ResetLimiter, stateless_reset
from quic.settings import QuicSettings
from quic.tickets import TicketStore

__all__ = ["QuicEndpoint", "open_udp_socket"]

log = logging.getLogger("l4lb")
_BATCH = 64
_MAX_DATAGRAM = 65535
_MAX_HELLOS = 256  # clients whose ClientHello is half-read at once
_UDP_SEGMENT = 103  # linux/udp.h: the segment size of a GSO send, in a control message
_GSO_SEGMENTS = 64  # the kernel's UDP_MAX_SEGMENTS
_GSO_BYTES = 65000  # a GSO send is one UDP datagram to the kernel: under 64 KiB
_NO_GSO = (errno.EIO, errno.EINVAL, errno.ENOPROTOOPT, errno.EOPNOTSUPP)


def gso_supported(sock: Any) -> bool:
    """Whether the kernel cuts a `sendmsg` on `sock` into datagrams (UDP_SEGMENT is known).
    L4LB_QUIC_GSO=0 in the environment turns it off (to compare, bench/h3_syscalls.py)."""
    if os.environ.get("L4LB_QUIC_GSO") == "0":
        return False
    try:
        sock.getsockopt(socket.IPPROTO_UDP, _UDP_SEGMENT)
    except (OSError, AttributeError):
        return False
    return True


def open_udp_socket(addr: Address, reuse_port: bool = False) -> socket.socket:
    """Bind a UDP socket on `addr`, as the TCP listeners bind theirs."""
    return bound_socket(addr, socket.SOCK_DGRAM, reuse_port)


class QuicEndpoint:
    """The QUIC connections behind one UDP socket, routed by connection id."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        listener: Any,
        settings: QuicSettings,
        worker: int | None = None,
    ) -> None:
        """`worker`: this process's index when the kernel steers datagrams to workers by the
        first byte of l4lb's connection IDs (quic/steering.py); None: a random byte."""
        self.loop = loop
        self.sock = sock
        self.listener = listener
        self.settings = settings
        self.stream_buffer = listener.config.http.h2_stream_buffer
        self.by_cid: dict[bytes, H3Server] = {}
        self.connections: set[H3Server] = set()
        self.paused: set[H3Server] = set()  # connections with a server paused for the client
        self.handshaking = 0
        self.retry = QuicRetryTokenHandler()
        self.reading = False
        self.accepting = True
        self.worker = worker
        self.hellos: dict[bytes, tuple[HelloReader, list[bytes]]] = {}
        self.resets = ResetLimiter()
        self.tickets = TicketStore()
        self.gso = gso_supported(sock)

    def engine_of(self) -> Any:
        return self.listener.engine

    def update(self, listener: Any, settings: QuicSettings) -> None:
        """A reload: new connections get the new settings; live ones keep theirs."""
        self.listener = listener
        self.settings = settings
        self.stream_buffer = listener.config.http.h2_stream_buffer
        self.accepting = True

    def start(self) -> None:
        if not self.reading:
            self.loop.add_reader(self.sock.fileno(), self._readable)
            self.reading = True

    def stop_accepting(self) -> None:
        """Shutdown or a removed listener: no new connections; live ones go on."""
        self.accepting = False

    def close(self) -> None:
        """Forget every connection and stop reading (the runtime closes the socket)."""
        for conn in list(self.connections):
            conn.abort()
        if self.reading:
            self.loop.remove_reader(self.sock.fileno())
            self.reading = False

    def drain(self, grace: float) -> None:
        for conn in list(self.connections):
            conn.drain(grace)

    # -- IO ----------------------------------------------------------------------------------

    def _readable(self) -> None:
        sock = self.sock
        now = self.loop.time()
        for _ in range(_BATCH):
            try:
                data, addr = sock.recvfrom(_MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP errors surface here (ECONNREFUSED): not ours
                log.debug("quic %s: recvfrom: %s", self.listener.name, exc)
                continue
            self.datagram(data, addr, now)

    def send_all(self, datagrams: list[tuple[bytes, Any]]) -> None:
        """What one connection queued, in order: runs of one size to one address as one GSO
        `sendmsg` each (a shorter datagram ends a run), the rest one `sendto` each."""
        if not self.gso or len(datagrams) < 2:
            for data, addr in datagrams:
                self.send(data, addr)
            return
        i, count = 0, len(datagrams)
        while i < count:
            data, addr = datagrams[i]
            size = len(data)
            j, total = i + 1, size
            while j < count and j - i < _GSO_SEGMENTS:
                more, to = datagrams[j]
                if to != addr or len(more) > size or total + len(more) > _GSO_BYTES:
                    break
                total += len(more)
                j += 1
                if len(more) < size:
                    break
            if j - i == 1:
                self.send(data, addr)
            else:
                self.send_run([d for d, _ in datagrams[i:j]], size, addr)
            i = j

    def send_run(self, run: list[bytes], size: int, addr: Any) -> None:
        cmsg = [(socket.IPPROTO_UDP, _UDP_SEGMENT, struct.pack("=H", size))]
        try:
            self.sock.sendmsg(run, cmsg, 0, addr)
        except (BlockingIOError, InterruptedError):
            pass  # dropped: loss recovery resends
        except OSError as exc:
            if exc.errno not in _NO_GSO:
                log.debug("quic %s: sendmsg %s: %s", self.listener.name, addr, exc)
                return
            # (EIO: a device without checksum offload) no GSO on this socket from now on
            log.info("quic %s: UDP GSO off (%s)", self.listener.name, exc)
            self.gso = False
            for data in run:
                self.send(data, addr)

    def send(self, data: bytes, addr: Any) -> None:
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            pass  # dropped: loss recovery resends
        except OSError as exc:
            log.debug("quic %s: sendto %s: %s", self.listener.name, addr, exc)

    # -- datagrams ---------------------------------------------------------------------------

    def datagram(self, data: bytes, addr: Any, now: float) -> None:
        """One datagram from `addr` at loop time `now` (never raises on bad input)."""
        configuration = self.settings.configuration
        try:
            header = pull_quic_header(
                Buffer(data=data), host_cid_length=configuration.connection_id_length
            )
        except ValueError:
            self.dropped()
            return
        conn = self.by_cid.get(header.destination_cid)
        if conn is not None:
            conn.datagram(data, addr, now)
            return
        if header.version is None:  # a short header: a connection we do not know
            self.unknown(data, addr, now)
            return
        if header.version is not None and header.version not in configuration.supported_versions:
            if header.packet_type != QuicPacketType.VERSION_NEGOTIATION:
                self.send(
                    encode_quic_version_negotiation(
                        source_cid=header.destination_cid,
                        destination_cid=header.source_cid,
                        supported_versions=configuration.supported_versions,
                    ),
                    addr,
                )
            return
        if (
            header.packet_type != QuicPacketType.INITIAL
            or len(data) < SMALLEST_MAX_DATAGRAM_SIZE
            or not self.accepting
            or len(self.connections) >= self.settings.max_connections
        ):
            self.dropped()
            return
        original = header.destination_cid
        retry_source = None
        if header.token:
            try:
                original = self.retry.validate_token(
                    address=addr,
                    destination_cid=header.destination_cid,
                    token=header.token,
                    now=now,
                )
            except ValueError:
                self.dropped()  # a stale or forged token: the client starts again
                return
            retry_source = header.destination_cid
        elif self.wants_retry():
            self.send_retry(header, addr, now)
            return
        sni: str | None = None
        datagrams = [data]
        if self.settings.selector is not None:
            name = self.read_hello(header, data)
            if name is Result.NEED_DATA:
                return
            sni = name if isinstance(name, str) else None
            datagrams = self.hellos.pop(header.destination_cid, (None, datagrams))[1]
        self.accept(header.destination_cid, original, retry_source, datagrams, addr, now, sni)

    def read_hello(self, header: Any, data: bytes) -> str | Result:
        """The server name of the ClientHello in this and earlier Initials of the client, or
        NEED_DATA (the datagram is kept until the rest comes)."""
        dcid = header.destination_cid
        entry = self.hellos.get(dcid)
        if entry is None:
            if len(self.hellos) >= _MAX_HELLOS:
                del self.hellos[next(iter(self.hellos))]
            entry = self.hellos[dcid] = (HelloReader(dcid, header.version), [])
        entry[1].append(data)
        name = entry[0].feed(data)
        if name is Result.NEED_DATA and len(entry[1]) >= 4:
            return Result.UNKNOWN
        return name

    def unknown(self, data: bytes, addr: Any, now: float) -> None:
        """A short header packet for no connection of ours: a stateless reset, if allowed."""
        reset = None
        if self.settings.stateless_reset and self.resets.allow(now):
            reset = stateless_reset(self.settings.reset_key, data)
        if reset is None:
            self.dropped()
            return
        self.send(reset, addr)
        if self.listener is not None:
            self.listener.h3_stateless_resets += 1

    def wants_retry(self) -> bool:
        mode = self.settings.retry
        if mode == "always":
            return True
        return mode == "auto" and self.handshaking >= self.settings.retry_threshold

    def send_retry(self, header: Any, addr: Any, now: float) -> None:
        source_cid = os.urandom(8)
        token = self.retry.create_token(
            address=addr,
            original_destination_connection_id=header.destination_cid,
            retry_source_connection_id=source_cid,
            now=now,
        )
        self.send(
            encode_quic_retry(
                version=header.version,
                source_cid=source_cid,
                destination_cid=header.source_cid,
                original_destination_cid=header.destination_cid,
                retry_token=token,
            ),
            addr,
        )
        if self.listener is not None:
            self.listener.h3_retries += 1

    def accept(
        self,
        cid: bytes,
        original: bytes,
        retry_source: bytes | None,
        datagrams: list[bytes],
        addr: Any,
        now: float,
        sni: str | None = None,
    ) -> None:
        settings = self.settings
        tickets: dict[str, Any] = {}
        if settings.early_data:
            store = self.tickets
            tickets["session_ticket_handler"] = lambda ticket: store.add(sni, ticket)
            tickets["session_ticket_fetcher"] = lambda label: store.take(sni, label)
        quic = ServerQuic(
            configuration=settings.configuration_for(sni),
            original_destination_connection_id=original,
            retry_source_connection_id=retry_source,
            **tickets,
        )
        prefix = b"" if self.worker is None else bytes([self.worker & 0xFF])
        quic.own_cids(prefix, settings.reset_key, self.listener)
        quic._local_max_streams_bidi.value = settings.max_streams
        client = (addr[0], addr[1])
        conn = H3Server(
            self, quic, client, (settings.qpack_table_size, settings.qpack_blocked_streams)
        )
        self.connections.add(conn)
        self.handshaking += 1
        self.add_cid(cid, conn)
        self.add_cid(quic.host_cid, conn)
        if self.listener is not None:
            self.listener.h3_connections += 1
        for data in datagrams:
            conn.datagram(data, addr, now)

    def dropped(self) -> None:
        if self.listener is not None:
            self.listener.h3_dropped += 1

    # -- what connections report -------------------------------------------------------------

    def add_cid(self, cid: bytes, conn: H3Server) -> None:
        self.by_cid[cid] = conn
        conn.cids.add(cid)

    def drop_cid(self, cid: bytes) -> None:
        conn = self.by_cid.pop(cid, None)
        if conn is not None:
            conn.cids.discard(cid)

    def handshake_done(self, conn: H3Server) -> None:
        self.handshaking -= 1
        if self.listener is not None:
            self.listener.h3_handshakes += 1

    def connection_ended(self, conn: H3Server) -> None:
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        self.paused.discard(conn)
        if not conn.handshake_done:
            self.handshaking -= 1
        for cid in conn.cids:
            if self.by_cid.get(cid) is conn:
                del self.by_cid[cid]
        conn.cids.clear()
