"""HPACK for what l4lb sends (l7.hpackout): every block decodes, with python-hyper's hpack (an
implementation apart), to the fields encoded, and leaves the decoder's table empty."""

from __future__ import annotations

from hpack import Decoder
from hypothesis import given
from hypothesis import strategies as st

from l7.hpackout import TABLE_SIZE_ZERO, encode_block

NAMES = st.sampled_from([b":status", b"content-type", b"server", b"date", b"x-custom", b"etag"])
FIELD = st.tuples(NAMES | st.binary(min_size=1, max_size=300), st.binary(max_size=600))


def decoded(block: bytes, decoder: Decoder | None = None) -> list[tuple[bytes, bytes]]:
    decoder = decoder or Decoder()
    return [(bytes(n), bytes(v)) for n, v in decoder.decode(block, raw=True)]


def test_static_matches_indexes_and_literals():
    fields = [(b":status", b"200"), (b":status", b"418"), (b"content-type", b"text/plain"),
              (b"x-long", b"v" * 5000), (b"accept-encoding", b"gzip, deflate")]  # fmt: skip
    block = encode_block(fields)
    assert block[:1] == b"\x88"  # :status 200, index 8
    assert decoded(block) == fields
    assert len(encode_block([(b"accept-encoding", b"gzip, deflate")])) == 1  # index 16


@given(st.lists(FIELD, max_size=12))
def test_any_fields_decode_to_themselves_and_the_table_stays_empty(fields):
    decoder = Decoder()
    assert decoded(encode_block(fields), decoder) == fields
    assert decoded(TABLE_SIZE_ZERO + encode_block(fields), decoder) == fields
    assert len(decoder.header_table.dynamic_entries) == 0
