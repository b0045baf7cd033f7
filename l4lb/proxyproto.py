"""PROXY protocol v1 and v2, sans-IO: tell a server who the client really is.

HAProxy's specification (doc/proxy-protocol.txt) defines a header sent once, before any data,
on a connection a proxy opens to a server: v1 is one US-ASCII line (§2.1), v2 a binary block
(§2.2). l4lb writes it towards servers (`encode_v1`, `encode_v2`) and reads it from trusted
balancers in front of it (`ProxyHeaderReader`).

Why the reader is strict and quick:

- §2 says a receiver "MUST not try to guess whether the protocol header is present" and that a
  sequence which does not match "must be discarded and cause the receiver to abort the
  connection ... as soon as possible". So the version is told from the first byte ("P" for v1,
  CR for v2's signature) and every later byte is checked as it arrives: a wrong byte is
  `BadProxyHeader` at once, without waiting for a full header.
- TCP may split the header anywhere (§2: "nothing forces any intermediary to forward the whole
  header at once"), so the reader accepts it one byte at a time, and keeps the bytes that follow
  the header for the stream (`rest()`).
- The input is bounded: a v1 line is at most 107 bytes with its CRLF (§2.1); a v2 header is
  16 bytes plus a length the reader caps at `max_v2_length` (TLVs, §2.2, are skipped).
- For LOCAL (v2), UNKNOWN (v1) and the v2 families or transports a TCP listener cannot use
  (AF_UNSPEC, AF_UNIX, DGRAM), the addresses are None: §2.2 lets a receiver "fall back to the
  UNSPEC mode" and use the real connection endpoints.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import struct
from dataclasses import dataclass
from typing import Literal

from l4lb.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "MAX_V1_LENGTH",
    "MAX_V2_LENGTH",
    "NEED_DATA",
    "V2_SIGNATURE",
    "BadProxyHeader",
    "ProxyHeader",
    "ProxyHeaderReader",
    "encode_v1",
    "encode_v2",
]

Address = tuple[str, int]
_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# §2.1: "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n" is the worst case.
MAX_V1_LENGTH = 107
# §2.2 allows up to 65535 bytes after the fixed 16; real senders use tens to a few hundred
# (addresses plus SSL/ALPN/authority/cloud TLVs). dnsdist caps at 512, HAProxy at its buffer.
MAX_V2_LENGTH = 4096

V1_PREFIX = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"  # §2.2, 12 bytes
_V2_HEADER = struct.Struct("!12sBBH")  # signature, ver_cmd, fam, len
_V2_FIXED = _V2_HEADER.size  # 16

_V2_VERSION = 0x2
_CMD_LOCAL = 0x0
_CMD_PROXY = 0x1
_AF_UNSPEC, _AF_INET, _AF_INET6, _AF_UNIX = 0x0, 0x1, 0x2, 0x3
_TRANSPORT_UNSPEC, _TRANSPORT_STREAM, _TRANSPORT_DGRAM = 0x0, 0x1, 0x2
# Address block sizes by family (§2.2): 2*4+2*2, 2*16+2*2, 2*108.
_ADDRESS_SIZE = {_AF_UNSPEC: 0, _AF_INET: 12, _AF_INET6: 36, _AF_UNIX: 216}
_INET4 = struct.Struct("!4s4sHH")
_INET6 = struct.Struct("!16s16sHH")
_TLV_HEADER = struct.Struct("!BH")

_V1_PROTOCOLS = (b"TCP4", b"TCP6", b"UNKNOWN")
_PORT = re.compile(r"(0|[1-9][0-9]{0,4})\Z")  # §2.1: decimal, no heading zeroes
_IPV4_TEXT = re.compile(r"[0-9.]{7,15}\Z")
_IPV6_TEXT = re.compile(r"[0-9A-Fa-f:.]{2,45}\Z")


class _NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData.NEED_DATA
"""Returned by `next_event` while the header is not complete: feed more bytes."""


class BadProxyHeader(RemoteProtocolError):
    """The connection does not start with a valid PROXY protocol header: abort it (§2)."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed PROXY header.

    `version` is 1 or 2. `src` and `dst` are (address, port) with the address in canonical
    text form (`ipaddress`), or None when the header carries no usable TCP addresses
    (v1 UNKNOWN, v2 LOCAL, AF_UNSPEC, AF_UNIX, DGRAM): use the real connection endpoints then.
    `length` is the number of bytes the header took from the stream.
    """

    version: int
    src: Address | None
    dst: Address | None
    length: int


# -- encoding ------------------------------------------------------------------------------------


def encode_v1(src: Address | None, dst: Address | None) -> bytes:
    """A v1 line (§2.1): `PROXY TCP4|TCP6 src dst sport dport\\r\\n`.

    Both None gives `PROXY UNKNOWN\\r\\n`, which §2.1 keeps for when the addresses cannot be
    filled. An IPv4 address beside an IPv6 one is written IPv4-mapped, as HAProxy does.
    Raises `LocalProtocolError` for an address or port we cannot encode.
    """
    if src is None and dst is None:
        return b"PROXY UNKNOWN\r\n"
    (src_ip, src_port), (dst_ip, dst_port) = _endpoints(src, dst)
    family = "TCP4" if src_ip.version == 4 else "TCP6"
    return f"PROXY {family} {src_ip} {dst_ip} {src_port} {dst_port}\r\n".encode("ascii")


def encode_v2(src: Address | None, dst: Address | None, *, local: bool = False) -> bytes:
    """A v2 header (§2.2) for TCP over IPv4 or IPv6, with no TLVs.

    `local=True` sends the LOCAL command with AF_UNSPEC and no address block, as §2.2 asks for
    connections the proxy makes on its own behalf (health checks); `src`/`dst` are then ignored.
    Raises `LocalProtocolError` for an address or port we cannot encode.
    """
    if local:
        return _V2_HEADER.pack(V2_SIGNATURE, _V2_VERSION << 4 | _CMD_LOCAL, 0, 0)
    (src_ip, src_port), (dst_ip, dst_port) = _endpoints(src, dst)
    if src_ip.version == 4:
        fam, block = _AF_INET, _INET4
    else:
        fam, block = _AF_INET6, _INET6
    addresses = block.pack(src_ip.packed, dst_ip.packed, src_port, dst_port)
    ver_cmd = _V2_VERSION << 4 | _CMD_PROXY
    fam_proto = fam << 4 | _TRANSPORT_STREAM
    return _V2_HEADER.pack(V2_SIGNATURE, ver_cmd, fam_proto, len(addresses)) + addresses


def _endpoints(
    src: Address | None, dst: Address | None
) -> tuple[tuple[_IPAddress, int], tuple[_IPAddress, int]]:
    """Validate both endpoints and put them in one family (IPv4-mapped IPv6 if mixed)."""
    if src is None or dst is None:
        raise LocalProtocolError("PROXY header needs both addresses, or neither for UNKNOWN")
    src_ip, src_port = _endpoint(src)
    dst_ip, dst_port = _endpoint(dst)
    if src_ip.version != dst_ip.version:
        src_ip, dst_ip = _as_ipv6(src_ip), _as_ipv6(dst_ip)
    return (src_ip, src_port), (dst_ip, dst_port)


def _endpoint(address: Address) -> tuple[_IPAddress, int]:
    host, port = address
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise LocalProtocolError(f"{host!r} is not an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        ip = ipaddress.IPv6Address(ip.packed)  # a zone means nothing to the server
    if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise LocalProtocolError(f"port {port!r} is not in 0..65535")
    return ip, port


def _as_ipv6(ip: _IPAddress) -> ipaddress.IPv6Address:
    if isinstance(ip, ipaddress.IPv6Address):
        return ip
    return ipaddress.IPv6Address(b"\x00" * 10 + b"\xff\xff" + ip.packed)


# -- decoding ------------------------------------------------------------------------------------


class ProxyHeaderReader:
    """Feed it the first bytes of a connection; ask it for the PROXY header.

    Accepts v1 and v2 (telling them apart by the first byte, §2.2). `feed` checks each byte as
    it arrives, so a wrong first byte is an error before any more data. After the header,
    `rest()` gives the bytes that followed it, which belong to the proxied stream.
    """

    __slots__ = ("_buf", "_error", "_header", "_max_v2_length")

    def __init__(self, max_v2_length: int = MAX_V2_LENGTH) -> None:
        if not 0 <= max_v2_length <= 0xFFFF:
            raise ValueError("max_v2_length must be in 0..65535")
        self._max_v2_length = max_v2_length
        self._buf = bytearray()
        self._header: ProxyHeader | None = None
        self._error: BadProxyHeader | None = None

    def feed(self, data: bytes) -> None:
        """Add bytes from the connection. Never raises: errors come out of `next_event`.

        After the header, bytes are kept for `rest()`; after an error, they are dropped.
        """
        if self._error is not None:
            return
        self._buf += data
        if self._header is not None:
            return
        try:
            self._header = _parse(self._buf, self._max_v2_length)
        except BadProxyHeader as exc:
            self._error = exc
            self._buf.clear()
            return
        if self._header is not None:
            del self._buf[: self._header.length]

    def next_event(self) -> ProxyHeader | Literal[_NeedData.NEED_DATA]:
        """Return the header once complete (again on every call), or NEED_DATA before.

        Raises `BadProxyHeader` and nothing else; any other exception is a bug.
        """
        if self._error is not None:
            raise self._error
        if self._header is not None:
            return self._header
        return NEED_DATA

    def rest(self) -> bytes:
        """The bytes fed after the header: the start of the proxied stream.

        Raises `LocalProtocolError` if the header has not been read yet.
        """
        if self._header is None:
            raise LocalProtocolError("rest() called before a complete PROXY header")
        return bytes(self._buf)


def _parse(buf: bytearray, max_v2_length: int) -> ProxyHeader | None:
    """The header at the start of `buf`, None if more bytes are needed."""
    if not buf:
        return None
    if buf[0] == V1_PREFIX[0]:
        return _parse_v1(buf)
    if buf[0] == V2_SIGNATURE[0]:
        return _parse_v2(buf, max_v2_length)
    raise BadProxyHeader(f"first byte 0x{buf[0]:02x} starts neither a v1 nor a v2 PROXY header")


def _check_prefix(buf: bytearray, expected: bytes, what: str) -> bool:
    """True when `buf` holds all of `expected`; raises on the first byte that differs."""
    n = min(len(buf), len(expected))
    if buf[:n] != expected[:n]:
        raise BadProxyHeader(f"bad {what}")
    return len(buf) >= len(expected)


# v1 (§2.1) --------------------------------------------------------------------------------------


def _parse_v1(buf: bytearray) -> ProxyHeader | None:
    if not _check_prefix(buf, V1_PREFIX, "v1 PROXY prefix"):
        return None
    end = buf.find(b"\r\n", 0, MAX_V1_LENGTH)
    line = bytes(buf[: MAX_V1_LENGTH if end < 0 else end])
    _check_v1_partial(line, complete=end >= 0)
    if end < 0:
        if len(buf) >= MAX_V1_LENGTH:
            raise BadProxyHeader(f"no CRLF in the first {MAX_V1_LENGTH} bytes of a v1 header")
        return None
    return _decode_v1(line.decode("ascii"), end + 2)


def _check_v1_partial(line: bytes, *, complete: bool) -> None:
    """Reject a v1 line early: stray CR/LF, non-printable bytes, an unknown protocol word."""
    if not complete and line.endswith(b"\r"):
        line = line[:-1]  # may be the CR of the CRLF still on its way
    for byte in line:
        if not 0x20 <= byte <= 0x7E:
            raise BadProxyHeader(f"byte 0x{byte:02x} in a v1 PROXY line (§2.1: US-ASCII, CRLF)")
    word = line[len(V1_PREFIX) :].split(b" ", 1)[0]
    finished = complete or b" " in line[len(V1_PREFIX) :]
    if not any(p == word if finished else p.startswith(word) for p in _V1_PROTOCOLS):
        raise BadProxyHeader(f"v1 protocol {word!r} is not TCP4, TCP6 or UNKNOWN")


def _decode_v1(line: str, length: int) -> ProxyHeader:
    fields = line.split(" ")
    if fields[1] == "UNKNOWN":
        # §2.1: "the receiver must ignore anything presented before the CRLF".
        return ProxyHeader(version=1, src=None, dst=None, length=length)
    if len(fields) != 6:
        raise BadProxyHeader(f"v1 line has {len(fields)} fields, expected 6: {line!r}")
    _, proto, src_ip, dst_ip, src_port, dst_port = fields
    version = 4 if proto == "TCP4" else 6
    return ProxyHeader(
        version=1,
        src=(_v1_address(src_ip, version), _v1_port(src_port)),
        dst=(_v1_address(dst_ip, version), _v1_port(dst_port)),
        length=length,
    )


def _v1_address(text: str, version: int) -> str:
    """§2.1: dotted decimal without heading zeroes, or IPv6 text; the family must match."""
    pattern = _IPV4_TEXT if version == 4 else _IPV6_TEXT
    try:
        if not pattern.match(text):
            raise ValueError(text)
        ip = ipaddress.ip_address(text)  # rejects IPv4 heading zeroes itself (Python >= 3.9.5)
    except ValueError:
        raise BadProxyHeader(f"{text!r} is not an IPv{version} address") from None
    if ip.version != version:
        raise BadProxyHeader(f"{text!r} is not an IPv{version} address")
    return str(ip)


def _v1_port(text: str) -> int:
    if not _PORT.match(text) or int(text) > 0xFFFF:
        raise BadProxyHeader(f"{text!r} is not a port in 0..65535 (no heading zeroes)")
    return int(text)


# v2 (§2.2) --------------------------------------------------------------------------------------


def _parse_v2(buf: bytearray, max_v2_length: int) -> ProxyHeader | None:
    if not _check_prefix(buf, V2_SIGNATURE, "v2 PROXY signature"):
        return None
    if len(buf) > 12:
        _check_v2_ver_cmd(buf[12])
    if len(buf) > 13:
        _check_v2_family(buf[13])
    if len(buf) < _V2_FIXED:
        return None
    _, ver_cmd, fam_proto, length = _V2_HEADER.unpack_from(buf)
    if length > max_v2_length:
        raise BadProxyHeader(f"v2 header of {length} bytes exceeds the {max_v2_length} limit")
    # §2.2: LOCAL "must use the real connection endpoints and discard the protocol block
    # including the family", and with AF_UNSPEC or an UNSPEC transport the block has no
    # defined layout: in those cases the block is skipped unread.
    command, family, transport = ver_cmd & 0x0F, fam_proto >> 4, fam_proto & 0x0F
    defined = command == _CMD_PROXY and family != _AF_UNSPEC and transport != _TRANSPORT_UNSPEC
    if defined and length < _ADDRESS_SIZE[family]:
        raise BadProxyHeader(f"v2 address block of {length} bytes is too short for its family")
    total = _V2_FIXED + length
    if len(buf) < total:
        return None
    if not defined:
        return ProxyHeader(version=2, src=None, dst=None, length=total)
    block = bytes(buf[_V2_FIXED:total])
    _check_tlvs(block[_ADDRESS_SIZE[family] :])
    src, dst = _v2_addresses(family, transport, block)
    return ProxyHeader(version=2, src=src, dst=dst, length=total)


def _check_v2_ver_cmd(ver_cmd: int) -> None:
    if ver_cmd >> 4 != _V2_VERSION:
        raise BadProxyHeader(f"v2 header version {ver_cmd >> 4} (only 2 exists)")
    if ver_cmd & 0x0F not in (_CMD_LOCAL, _CMD_PROXY):
        raise BadProxyHeader(f"v2 command {ver_cmd & 0x0F} is neither LOCAL nor PROXY")


def _check_v2_family(fam_proto: int) -> None:
    if fam_proto >> 4 not in _ADDRESS_SIZE:
        raise BadProxyHeader(f"v2 address family {fam_proto >> 4} is not defined")
    if fam_proto & 0x0F > _TRANSPORT_DGRAM:
        raise BadProxyHeader(f"v2 transport protocol {fam_proto & 0x0F} is not defined")


def _v2_addresses(
    family: int, transport: int, block: bytes
) -> tuple[Address, Address] | tuple[None, None]:
    """TCP addresses, or (None, None) where §2.2 lets us fall back to UNSPEC."""
    if transport != _TRANSPORT_STREAM or family not in (_AF_INET, _AF_INET6):
        return None, None
    layout = _INET4 if family == _AF_INET else _INET6
    src_ip, dst_ip, src_port, dst_port = layout.unpack_from(block)
    src = (str(ipaddress.ip_address(src_ip)), src_port)
    dst = (str(ipaddress.ip_address(dst_ip)), dst_port)
    return src, dst


def _check_tlvs(data: bytes) -> None:
    """TLVs (§2.2) are skipped, but a TLV that overruns the header is a broken sender."""
    pos = 0
    while pos < len(data):
        if len(data) - pos < _TLV_HEADER.size:
            raise BadProxyHeader("truncated TLV header in a v2 PROXY header")
        _, length = _TLV_HEADER.unpack_from(data, pos)
        pos += _TLV_HEADER.size + length
        if pos > len(data):
            raise BadProxyHeader("TLV longer than the v2 PROXY header")
