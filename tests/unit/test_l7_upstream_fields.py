"""The server adapter's table of field-name prefixes (l7/upstream.py): a response field is
sorted (hop-by-hop, Content-Length, end-to-end) and its line started from a table keyed by
the name as the server sent it; the table must give what lower-casing would, and stay
bounded whatever names a server invents."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from l7 import upstream
from l7.forwarded import HOP_BY_HOP

TOKEN = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!#$%&'*+^`|~",
    min_size=1,
    max_size=80,
)


def expected(name: bytes) -> bytes:
    lower = name.lower()
    return b"" if lower in HOP_BY_HOP else lower + b": "


@given(TOKEN)
def test_prefix_is_the_lower_cased_name_or_empty_for_hop_by_hop(name: str) -> None:
    raw = name.encode()
    first = upstream._line_prefix(raw)
    assert first == expected(raw)
    if len(raw) <= 64:  # kept: the next field of that name comes from the table
        assert upstream._PREFIXES[raw] == first


def test_hop_by_hop_and_content_length_in_any_case() -> None:
    for raw in (b"Connection", b"CONNECTION", b"Transfer-Encoding", b"keep-alive", b"Upgrade"):
        assert upstream._line_prefix(raw) == b""
        assert upstream._PREFIXES[raw] == b""
    for raw in (b"Content-Length", b"content-length", b"CONTENT-LENGTH"):
        assert upstream._line_prefix(raw) is upstream._CONTENT_LENGTH
        assert upstream._PREFIXES[raw] is upstream._CONTENT_LENGTH


def test_table_stays_bounded() -> None:
    for i in range(2000):
        upstream._line_prefix(b"X-Invented-%d" % i)
        assert len(upstream._PREFIXES) <= 512
    long = b"X-" + b"a" * 100
    assert upstream._line_prefix(long) == long.lower() + b": "
    assert long not in upstream._PREFIXES
