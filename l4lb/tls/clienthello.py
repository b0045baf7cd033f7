"""Sans-IO reader for a TLS ClientHello: just enough of it to route a passthrough connection.

A `tls-passthrough` listener picks a pool by the name the client asks for (SNI, RFC 6066 §3)
without terminating TLS. The reader is given the first bytes of a connection and says what the
ClientHello holds, or that the peer is not speaking TLS, or that the hello is broken. It only
inspects: the caller keeps every byte it fed and forwards them untouched to the chosen server.

Why it is written this way:

- TCP may deliver the hello in any number of segments, and TLS may spread one handshake message
  over several records (RFC 8446 §5.1: "Handshake messages MAY be fragmented across multiple
  records"). The reader takes one byte at a time as well as the whole flight, and reassembles the
  handshake fragments of consecutive records of content type 22.
- A hello is not always small: post-quantum key shares (X25519MLKEM768 alone is 1,216 bytes) push
  it past one MSS. The handshake message is bounded by `max_size` (16 KiB by default, as one
  record's plaintext, RFC 8446 §5.1); bigger is `BadClientHello`. Raw bytes are consumed record by
  record, so the buffer never holds more than one partial record.
- Anything that is not TLS (plain HTTP, an SSLv2-compatible hello, RFC 5246 Appendix E.2) is
  reported as `NotTLS` from the first byte that shows it, without waiting for more.
- GREASE values (RFC 8701) may appear in every list; they are dropped from `versions` and `alpn`.
- The input is untrusted: `next_event` raises `NotTLS` or `BadClientHello` and nothing else. Any
  other exception is a bug.
- With Encrypted Client Hello (ECH) the real name is encrypted; the outer hello carries a public
  name in its SNI, and that is what we route on (`has_ech` says so).
"""

from __future__ import annotations

import enum
import re
import struct
from dataclasses import dataclass
from typing import Literal

from l4lb.errors import RemoteProtocolError

__all__ = [
    "MAX_HELLO_SIZE",
    "NEED_DATA",
    "BadClientHello",
    "ClientHello",
    "ClientHelloReader",
    "NotTLS",
    "is_grease",
]

# RFC 8446 §5.1: a record's plaintext "MUST NOT exceed 2^14 bytes".
MAX_RECORD_SIZE = 1 << 14
# The largest handshake message we accept as a ClientHello. Real hellos with hybrid
# post-quantum key shares are around 2 KB; 16 KiB leaves room and bounds memory.
MAX_HELLO_SIZE = 1 << 14

_HANDSHAKE = 22  # ContentType.handshake, RFC 8446 §5.1
_CLIENT_HELLO = 1  # HandshakeType.client_hello, RFC 8446 §4
_RECORD_HEADER = 5  # type(1) legacy_record_version(2) length(2)
_HANDSHAKE_HEADER = 4  # msg_type(1) length(3)
# legacy_version(2) random(32) session_id<0..32>(1+0) cipher_suites<2..>(2+2)
# compression_methods<1..>(1+1): the smallest body that can be a ClientHello.
_MIN_HELLO_BODY = 2 + 32 + 1 + 2 + 2 + 1 + 1

_EXT_SERVER_NAME = 0  # RFC 6066 §3
_EXT_ALPN = 16  # RFC 7301 §3.1
_EXT_SUPPORTED_VERSIONS = 43  # RFC 8446 §4.2.1
_EXT_ECH = 0xFE0D  # draft-ietf-tls-esni: encrypted_client_hello
_NAME_TYPE_HOST_NAME = 0

_U16 = struct.Struct("!H")
_RECORD = struct.Struct("!BHH")


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData.NEED_DATA
"""Returned by `next_event` while the ClientHello is not complete: feed more bytes."""


class NotTLS(RemoteProtocolError):
    """The first bytes of the connection are not a TLS handshake record."""


class BadClientHello(RemoteProtocolError):
    """The peer speaks TLS but its ClientHello breaks the rules or our size bound."""


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What a layer-4 router needs from a ClientHello.

    `sni` is the host_name from server_name (RFC 6066 §3), lower-cased, trailing dot removed,
    or None when the client sent none (an IP literal target, an old client). `alpn` lists the
    offered protocols in the client's order (RFC 7301), decoded byte for byte (latin-1) so no
    identifier is lost. `versions` is supported_versions (RFC 8446 §4.2.1) in the client's
    order, empty for a client that only knows TLS 1.2 or older; `legacy_version` is the
    ClientHello's own version field (0x0303 for TLS 1.2 and 1.3). GREASE values are removed.
    `has_ech` is true when encrypted_client_hello is present: `sni` is then the outer, public
    name. `length` is how many bytes of the stream the records carrying the hello occupied,
    record headers included.
    """

    sni: str | None
    alpn: tuple[str, ...]
    versions: tuple[int, ...]
    legacy_version: int
    has_ech: bool
    length: int


def is_grease(value: int) -> bool:
    """True for the 16 GREASE code points 0x0A0A, 0x1A1A, ... 0xFAFA (RFC 8701 §2)."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


class ClientHelloReader:
    """Feed it the first bytes of a connection; ask it for the ClientHello.

    `feed` consumes complete records as they arrive, so the internal buffer stays under one
    record plus the reassembled handshake (bounded by `max_size`). Once a result or an error is
    known, further bytes are ignored: the caller keeps its own copy to forward.
    """

    __slots__ = ("_consumed", "_error", "_handshake", "_hello", "_max_size", "_raw")

    def __init__(self, max_size: int = MAX_HELLO_SIZE) -> None:
        if max_size < _MIN_HELLO_BODY:
            raise ValueError(f"max_size must be at least {_MIN_HELLO_BODY} bytes")
        self._max_size = max_size
        self._raw = bytearray()  # bytes of the current, incomplete record
        self._handshake = bytearray()  # reassembled handshake fragments
        self._consumed = 0  # bytes of complete records taken from the stream
        self._hello: ClientHello | None = None
        self._error: RemoteProtocolError | None = None

    def feed(self, data: bytes) -> None:
        """Add bytes received from the client. Never raises: errors come out of `next_event`."""
        if self._hello is not None or self._error is not None or not data:
            return
        self._raw += data
        try:
            self._advance()
        except RemoteProtocolError as exc:
            self._error = exc
            self._raw.clear()
            self._handshake.clear()

    def next_event(self) -> ClientHello | Literal[_NeedData.NEED_DATA]:
        """Return the ClientHello once complete (again on every call), or NEED_DATA before.

        Raises `NotTLS` when the stream is not TLS, `BadClientHello` when the hello is malformed
        or larger than `max_size`. It raises nothing else; any other exception is a bug.
        """
        if self._error is not None:
            raise self._error
        if self._hello is not None:
            return self._hello
        return NEED_DATA

    # -- records (RFC 8446 §5.1) ---------------------------------------------------------------

    def _advance(self) -> None:
        """Take every complete record out of `_raw`; parse the hello when it is whole."""
        while self._hello is None:
            _check_record_header(self._raw, first=self._consumed == 0)
            if len(self._raw) < _RECORD_HEADER:
                return
            _, _, length = _RECORD.unpack_from(self._raw)
            end = _RECORD_HEADER + length
            if len(self._raw) < end:
                # Judge the handshake header before its record is complete: an oversized or
                # wrong message is rejected without buffering up to 16 KiB of it first.
                if len(self._handshake) < _HANDSHAKE_HEADER:
                    head = self._raw[_RECORD_HEADER : _RECORD_HEADER + _HANDSHAKE_HEADER]
                    self._hello_length(self._handshake + head)
                return
            self._handshake += self._raw[_RECORD_HEADER:end]
            del self._raw[:end]
            self._consumed += end
            self._check_handshake()

    def _check_handshake(self) -> None:
        """Check the handshake header as soon as it is known; parse the body once complete."""
        hs = self._handshake
        length = self._hello_length(hs)
        if length is None:
            return
        if len(hs) < _HANDSHAKE_HEADER + length:
            return
        # Bytes after the hello in its last record are not ours to judge: ignore them.
        body = bytes(hs[_HANDSHAKE_HEADER : _HANDSHAKE_HEADER + length])
        self._hello = _parse_body(body, self._consumed)
        self._raw.clear()
        self._handshake.clear()

    def _hello_length(self, hs: bytearray) -> int | None:
        """The ClientHello body length from a handshake prefix, None until 4 bytes are known."""
        if hs and hs[0] != _CLIENT_HELLO:
            raise BadClientHello(f"first handshake message has type {hs[0]}, not client_hello")
        if len(hs) < _HANDSHAKE_HEADER:
            return None
        length = int.from_bytes(hs[1:4], "big")
        if length > self._max_size:
            raise BadClientHello(
                f"ClientHello of {length} bytes is larger than the {self._max_size}-byte limit"
            )
        if length < _MIN_HELLO_BODY:
            raise BadClientHello(f"ClientHello of {length} bytes is too short to be valid")
        return length


def _check_record_header(raw: bytearray, *, first: bool) -> None:
    """Validate as much of a record header as has arrived, so bad input fails at once.

    The first record decides between NotTLS and TLS: its type must be handshake (22) and its
    major version 3. A later record that is not a handshake record cannot continue a hello.
    """
    if not raw:
        return
    if raw[0] != _HANDSHAKE:
        if not first:
            raise BadClientHello(f"record of type {raw[0]} inside the ClientHello")
        if raw[0] & 0x80:
            raise NotTLS("SSLv2-compatible ClientHello (RFC 5246 Appendix E.2) is not supported")
        raise NotTLS(f"first byte 0x{raw[0]:02x} does not start a TLS handshake record")
    if len(raw) < 2:
        return
    if raw[1] != 3:
        if first:
            raise NotTLS(f"record version major {raw[1]} is not TLS")
        raise BadClientHello(f"record version major {raw[1]} is not TLS")
    if len(raw) < 3:
        return
    if raw[2] > 4:
        raise BadClientHello(f"record version 0x03{raw[2]:02x} is not a TLS version")
    if len(raw) < _RECORD_HEADER:
        return
    length = _U16.unpack_from(raw, 3)[0]
    if length == 0:
        # RFC 8446 §5.1: "Implementations MUST NOT send zero-length fragments of Handshake types".
        raise BadClientHello("empty handshake record")
    if length > MAX_RECORD_SIZE:
        raise BadClientHello(f"record of {length} bytes exceeds 2^14 (record_overflow)")


# -- the ClientHello body (RFC 8446 §4.1.2) ------------------------------------------------------


class _Cursor:
    """Reads big-endian integers and length-prefixed vectors; short input is BadClientHello."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def take(self, n: int) -> bytes:
        if n > self.remaining():
            raise BadClientHello(f"{self._what}: needs {n} bytes, {self.remaining()} left")
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def vector(self, length_size: int, what: str, minimum: int = 0) -> _Cursor:
        """A `<minimum..2^(8*length_size)-1>` vector (RFC 8446 §3.4) as a cursor of its own."""
        length = self.uint(length_size)
        if length < minimum:
            raise BadClientHello(f"{what}: {length} bytes, at least {minimum} required")
        return _Cursor(self.take(length), what)

    def rest(self) -> bytes:
        return self.take(self.remaining())


def _parse_body(body: bytes, consumed: int) -> ClientHello:
    """Walk legacy fields, then extensions; keep only what routing needs."""
    cur = _Cursor(body, "ClientHello")
    legacy_version = cur.uint(2)
    if legacy_version >> 8 != 3:
        raise BadClientHello(f"legacy_version 0x{legacy_version:04x} is not TLS")
    cur.take(32)  # random
    session_id = cur.vector(1, "legacy_session_id")
    if session_id.remaining() > 32:
        raise BadClientHello("legacy_session_id longer than 32 bytes")
    suites = cur.vector(2, "cipher_suites", minimum=2)
    if suites.remaining() % 2:
        raise BadClientHello("cipher_suites has an odd length")
    cur.vector(1, "legacy_compression_methods", minimum=1)
    # A TLS 1.2 hello may end here: extensions are optional (RFC 5246 §7.4.1.2).
    extensions = _read_extensions(cur) if cur.remaining() else {}
    if cur.remaining():
        raise BadClientHello(f"{cur.remaining()} bytes after the extensions")
    return ClientHello(
        sni=_parse_sni(extensions[_EXT_SERVER_NAME]) if _EXT_SERVER_NAME in extensions else None,
        alpn=_parse_alpn(extensions[_EXT_ALPN]) if _EXT_ALPN in extensions else (),
        versions=(
            _parse_versions(extensions[_EXT_SUPPORTED_VERSIONS])
            if _EXT_SUPPORTED_VERSIONS in extensions
            else ()
        ),
        legacy_version=legacy_version,
        has_ech=_EXT_ECH in extensions,
        length=consumed,
    )


def _read_extensions(cur: _Cursor) -> dict[int, bytes]:
    """Extensions by type. RFC 8446 §4.2: no type may appear twice in one block."""
    block = cur.vector(2, "extensions")
    found: dict[int, bytes] = {}
    while block.remaining():
        ext_type = block.uint(2)
        data = block.vector(2, f"extension 0x{ext_type:04x}").rest()
        if ext_type in found:
            raise BadClientHello(f"extension 0x{ext_type:04x} appears twice")
        found[ext_type] = data
    return found


# RFC 1123 §2.1 labels; underscores are tolerated because real names carry them and a router
# that rejects them only breaks clients that every browser accepts.
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\Z")


def _parse_sni(data: bytes) -> str:
    """The single host_name of a ServerNameList (RFC 6066 §3), validated and normalised."""
    names = _Cursor(data, "server_name")
    entries = names.vector(2, "server_name_list", minimum=1)
    if names.remaining():
        raise BadClientHello("bytes after server_name_list")
    host: bytes | None = None
    while entries.remaining():
        name_type = entries.uint(1)
        if name_type != _NAME_TYPE_HOST_NAME:
            # Only host_name is defined, and unknown types carry no length we could skip by.
            raise BadClientHello(f"server_name of unknown type {name_type}")
        if host is not None:
            raise BadClientHello("more than one host_name in server_name (RFC 6066 §3)")
        host = entries.vector(2, "host_name", minimum=1).rest()
    assert host is not None  # the list is at least one byte, so one entry was read
    return _validate_hostname(host)


def _validate_hostname(raw: bytes) -> str:
    """ASCII (A-labels for IDNs), no IP literal, lower-cased, one trailing dot tolerated."""
    if not raw.isascii():
        raise BadClientHello("server_name is not ASCII (IDNs are sent as A-labels)")
    name = raw.decode("ascii").lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253:
        raise BadClientHello(f"server_name {name!r} has an invalid length")
    labels = name.split(".")
    for label in labels:
        if not _LABEL.match(label):
            raise BadClientHello(f"server_name {name!r} is not a valid hostname")
    if labels[-1].isdigit():
        raise BadClientHello(f"server_name {name!r} is an IP literal (not allowed, RFC 6066 §3)")
    return name


def _parse_alpn(data: bytes) -> tuple[str, ...]:
    """ProtocolNameList (RFC 7301 §3.1), GREASE identifiers (RFC 8701 §2) dropped."""
    outer = _Cursor(data, "application_layer_protocol_negotiation")
    names = outer.vector(2, "protocol_name_list", minimum=2)
    if outer.remaining():
        raise BadClientHello("bytes after protocol_name_list")
    protocols: list[str] = []
    while names.remaining():
        name = names.vector(1, "protocol_name", minimum=1).rest()
        if len(name) == 2 and is_grease(_U16.unpack(name)[0]):
            continue
        protocols.append(name.decode("latin-1"))
    return tuple(protocols)


def _parse_versions(data: bytes) -> tuple[int, ...]:
    """ClientHello supported_versions: `ProtocolVersion versions<2..254>` (RFC 8446 §4.2.1)."""
    outer = _Cursor(data, "supported_versions")
    versions = outer.vector(1, "supported_versions", minimum=2)
    if outer.remaining() or versions.remaining() % 2:
        raise BadClientHello("supported_versions is malformed")
    found = (versions.uint(2) for _ in range(versions.remaining() // 2))
    return tuple(v for v in found if not is_grease(v))
