"""The server name (SNI) of a QUIC client, read from its Initial packets before any connection.

aioquic's TLS layer has no SNI callback: `aioquic.tls.Context` serves the one certificate of its
`QuicConfiguration`. So, to pick the certificate by SNI as the `https` listener does over TCP,
the endpoint reads the ClientHello itself. Initial packets are encrypted with keys anyone can
derive from the client's first Destination Connection ID (RFC 9001 §5.2), so this is what
every QUIC load balancer that routes by SNI does: derive the keys (aioquic's `CryptoPair`),
remove header protection and decrypt, collect the CRYPTO frames (RFC 9000 §19.6), and give
the reassembled handshake bytes to the project's ClientHello reader (l4lb/tls/clienthello.py)
wrapped in a TLS record header, which is how it reads a hello arriving over TCP.

A hello is not always in one datagram: with post-quantum key shares (Chrome's X25519MLKEM768)
it spans two, and extensions come in random order, so the name may be in the second one.
`HelloReader` is fed datagram after datagram until it knows; the endpoint bounds how many it
keeps per client and how many clients may be half-read at once.

Sans-IO: bytes in, a name (or None) out; the input is untrusted and nothing here raises on it.
"""

from __future__ import annotations

import enum

from aioquic.buffer import Buffer
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import QuicPacketType, pull_quic_header

from l4lb.errors import RemoteProtocolError
from l4lb.tls.clienthello import NEED_DATA, ClientHelloReader

__all__ = ["MAX_HELLO_DATAGRAMS", "HelloReader", "Result"]

MAX_HELLO_DATAGRAMS = 4  # more than any real ClientHello needs (2 with post-quantum shares)
_MAX_CRYPTO = 1 << 14  # the ClientHello reader's bound too

_PADDING, _PING, _ACK, _ACK_ECN, _CRYPTO = 0x00, 0x01, 0x02, 0x03, 0x06


class Result(enum.Enum):
    NEED_DATA = "NEED_DATA"  # feed the client's next Initial datagram
    UNKNOWN = "UNKNOWN"  # no name can be read (broken, no SNI): serve the default certificate


class HelloReader:
    """Feeds a client's Initial datagrams (same Destination Connection ID) and says which
    server name its ClientHello asks for. `feed` returns the name, `Result.NEED_DATA`, or
    `Result.UNKNOWN` (not decryptable, not a hello, no SNI, or too many datagrams)."""

    __slots__ = ("_crypto", "_datagrams", "_dcid", "_fragments", "_version")

    def __init__(self, dcid: bytes, version: int) -> None:
        self._dcid = dcid
        self._version = version
        self._crypto: CryptoPair | None = None
        self._fragments: dict[int, bytes] = {}
        self._datagrams = 0

    def feed(self, data: bytes) -> str | Result:
        """One datagram from the client; never raises on bad input."""
        self._datagrams += 1
        if self._datagrams > MAX_HELLO_DATAGRAMS:
            return Result.UNKNOWN
        try:
            self._packets(data)
        except ValueError:  # aioquic's BufferReadError and CryptoError are ValueErrors
            return Result.UNKNOWN
        return self._hello()

    def _packets(self, data: bytes) -> None:
        """Decrypt the datagram's Initial packets (coalesced packets of other types, whose
        keys we do not have, are skipped) and keep their CRYPTO data."""
        buf = Buffer(data=data)
        while not buf.eof():
            start = buf.tell()
            try:
                header = pull_quic_header(buf, host_cid_length=len(self._dcid))
            except ValueError:
                if start == 0:
                    raise
                return  # padding after the packets (RFC 9000 §14.1 lets a client pad so)
            end = start + header.packet_length
            if (
                header.packet_type == QuicPacketType.INITIAL
                and header.version == self._version
                and header.destination_cid == self._dcid
            ):
                if self._crypto is None:
                    self._crypto = CryptoPair()
                    self._crypto.setup_initial(self._dcid, is_client=False, version=self._version)
                _, payload, _ = self._crypto.decrypt_packet(data[start:end], buf.tell() - start, 0)
                self._frames(payload)
            if header.version is None:
                return  # a short header packet takes the rest of the datagram
            buf.seek(end)

    def _frames(self, payload: bytes) -> None:
        buf = Buffer(data=payload)
        while not buf.eof():
            kind = buf.pull_uint_var()
            if kind in (_PADDING, _PING):
                continue
            if kind in (_ACK, _ACK_ECN):
                buf.pull_uint_var()  # largest acknowledged
                buf.pull_uint_var()  # delay
                ranges = buf.pull_uint_var()
                buf.pull_uint_var()  # first range
                for _ in range(2 * ranges + (3 if kind == _ACK_ECN else 0)):
                    buf.pull_uint_var()
            elif kind == _CRYPTO:
                offset = buf.pull_uint_var()
                length = buf.pull_uint_var()
                if offset + length > _MAX_CRYPTO:
                    raise ValueError("CRYPTO data beyond any ClientHello")
                self._fragments.setdefault(offset, buf.pull_bytes(length))
            else:
                return  # CONNECTION_CLOSE, or a frame not allowed in Initials: stop here

    def _hello(self) -> str | Result:
        """The name, once the fragments from offset 0 make a whole ClientHello."""
        data = bytearray()
        for offset in sorted(self._fragments):
            if offset > len(data):
                break
            data += self._fragments[offset][len(data) - offset :]
        if len(data) < 4:
            return Result.NEED_DATA
        reader = ClientHelloReader()
        reader.feed(b"\x16\x03\x03" + len(data).to_bytes(2, "big") + bytes(data))
        try:
            hello = reader.next_event()
        except RemoteProtocolError:
            return Result.UNKNOWN
        if hello is NEED_DATA:
            return Result.NEED_DATA
        return hello.sni if hello.sni else Result.UNKNOWN
