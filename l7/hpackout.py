"""HPACK for the header blocks l4lb sends on HTTP/2 (RFC 7541), sans-IO: static-table
indexes and literals without indexing, never the dynamic table, no Huffman coding.

Why not the library's encoder: responses repeat little that a table would save (dates,
lengths and ids change), nginx does the same (no dynamic table for responses), and jh2's
Rust encoder searched its table linearly for each field: about 40,000 instructions per
response head, against a few dictionary lookups here. A table we never use needs no
eviction and no size bookkeeping; a client's SETTINGS_HEADER_TABLE_SIZE only asks that the
next block start with a size update (`l7.h2send`), to 0.
"""

from __future__ import annotations

from typing import Final

from jh2.hpack.table import HeaderTable

__all__ = ["TABLE_SIZE_ZERO", "encode_block"]

TABLE_SIZE_ZERO: Final = b"\x20"  # a dynamic table size update to 0 (§6.3)

_STATIC: Final[tuple[tuple[bytes, bytes], ...]] = HeaderTable.STATIC_TABLE
# An indexed field (§6.1) for each full match, the index of a name for a literal (§6.2.2).
_FULL: Final[dict[tuple[bytes, bytes], bytes]] = {}
_NAME: Final[dict[bytes, bytes]] = {}
for _index, _field in enumerate(_STATIC, 1):
    if _field[1]:
        _FULL.setdefault(_field, bytes([0x80 | _index]))
    # Literal without indexing, indexed name: a 4-bit prefix (§5.1).
    _NAME.setdefault(_field[0], bytes([_index]) if _index < 15 else bytes([15, _index - 15]))
_LENGTH: Final = [bytes([n]) for n in range(127)]  # a string's length, H = 0, 7-bit prefix


def _length(n: int) -> bytes:
    if n < 127:
        return _LENGTH[n]
    out = bytearray(b"\x7f")
    n -= 127
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_block(fields: list[tuple[bytes, bytes]]) -> bytes:
    """A header block for `fields` (names already lower case, as HTTP/2 needs)."""
    out: list[bytes] = []
    full = _FULL
    names = _NAME
    for name, value in fields:
        indexed = full.get((name, value))
        if indexed is not None:
            out.append(indexed)
            continue
        prefix = names.get(name)
        if prefix is None:
            out.append(b"\x00")
            out.append(_length(len(name)))
            out.append(name)
        else:
            out.append(prefix)
        out.append(_length(len(value)))
        out.append(value)
    return b"".join(out)
