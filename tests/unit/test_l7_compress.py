"""The compression stage's decisions (negotiation, eligibility, header edits) and its
streaming encoders, round-tripped through each decoder."""

from __future__ import annotations

import zlib

import brotli
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from l7.compress import CompressConfig, Encoder, choose, parse_accept_encoding, start_encoder
from l7.model import Request, Response

ALL = ("zstd", "br", "gzip")


def decode(encoding: str, data: bytes) -> bytes:
    if encoding == "gzip":
        return zlib.decompress(data, 31)
    if encoding == "br":
        return brotli.decompress(data)
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (b"gzip", "gzip"),
        (b"gzip, br", "br"),  # equal q: the server's order
        (b"gzip, br, zstd", "zstd"),
        (b"br;q=0.5, gzip", "gzip"),  # higher q wins over server order
        (b"br;q=0, gzip;q=0", None),  # q=0: not acceptable
        (b"*", "zstd"),
        (b"*;q=0.1, gzip;q=0", "zstd"),
        (b"*, zstd;q=0, br;q=0", "gzip"),  # gzip covered by *
        (b"identity", None),
        (b"", None),
        (None, None),
        (b"GZIP", "gzip"),  # codings are case-insensitive
        (b"x-gzip", "gzip"),  # RFC 9110 §8.4.1.3
        (b"gzip;q=2", None),  # q out of range: member ignored
        (b"gzip;q=abc, br", "br"),
        (b" gzip ; q=0.8 , br ; q=0.9", "br"),
    ],
)
def test_choose(accept, expected):
    assert choose(accept, ALL) == expected


def test_choose_only_offered():
    assert choose(b"br, zstd", ("gzip",)) is None
    assert choose(b"br, gzip", ("gzip", "br")) == "gzip"


def test_parse_accept_encoding():
    assert parse_accept_encoding(b"gzip;q=0.5, br") == {"gzip": 0.5, "br": 1.0}


def request(method="GET", accept=b"gzip"):
    headers = [(b"host", b"x")] + ([(b"accept-encoding", accept)] if accept else [])
    return Request(method, "/", headers)


def response(status=200, length=b"1000", **fields):
    headers = [(b"content-type", b"text/html; charset=utf-8")]
    if length is not None:
        headers.append((b"content-length", length))
    for name, value in fields.items():
        headers.append((name.replace("_", "-").encode(), value.encode()))
    return Response(status, headers, length=length)


def test_compressed_head_is_rewritten():
    r = response(etag='"abc"')
    enc = start_encoder(CompressConfig(), request(), r)
    assert enc is not None and enc.encoding == "gzip"
    fields = dict(r.fields())
    assert b"content-length" not in fields and r.length is None
    assert fields[b"content-encoding"] == b"gzip"
    assert fields[b"vary"] == b"accept-encoding"
    assert fields[b"etag"] == b'W/"abc"'


def test_weak_etag_kept_and_vary_not_doubled():
    r = response(etag='W/"abc"', vary="Accept-Encoding, Origin")
    assert start_encoder(CompressConfig(), request(), r) is not None
    assert [v for n, v in r.fields() if n == b"vary"] == [b"Accept-Encoding, Origin"]
    assert dict(r.fields())[b"etag"] == b'W/"abc"'


def test_not_accepted_still_varies():
    r = response()
    assert start_encoder(CompressConfig(), request(accept=None), r) is None
    assert dict(r.fields())[b"vary"] == b"accept-encoding"
    assert dict(r.fields())[b"content-length"] == b"1000"


@pytest.mark.parametrize(
    ("method", "r"),
    [
        ("HEAD", response()),
        ("GET", response(status=204, length=None)),
        ("GET", response(status=304, length=None)),
        ("GET", response(status=206, content_range="bytes 0-9/100")),
        ("GET", response(content_range="bytes 0-9/100")),
        ("GET", response(content_encoding="br")),  # no double compression
        ("GET", response(cache_control="public, no-transform")),
        ("GET", response(length=b"100")),  # under min_length
        ("GET", Response(200, [(b"content-type", b"image/png")], length=None)),
        ("GET", Response(200, [], length=None)),  # no type: unknown, left alone
    ],
)
def test_left_alone(method, r):
    before = list(r.fields())
    assert start_encoder(CompressConfig(), request(method), r) is None
    assert [p for p in r.fields() if p[0] != b"vary"] == before


def test_unknown_length_and_wildcard_types():
    r = Response(200, [(b"content-type", b"text/csv")], length=None)
    assert start_encoder(CompressConfig(), request(), r) is not None
    r = Response(200, [(b"content-type", b"text/csv")], length=None)
    assert start_encoder(CompressConfig(types=("application/json",)), request(), r) is None


def test_off():
    assert start_encoder(CompressConfig(encodings=()), request(), response()) is None


@pytest.mark.parametrize("encoding", ALL)
def test_each_chunk_is_decodable_on_its_own_arrival(encoding):
    """Flushed per chunk: what was sent so far decodes to what came in so far."""
    enc = Encoder(encoding, 3)
    if encoding == "gzip":
        d = zlib.decompressobj(31)
        feed = d.decompress
    elif encoding == "br":
        d = brotli.Decompressor()
        feed = d.process
    else:
        d = zstandard.ZstdDecompressor().decompressobj()
        feed = d.decompress
    assert feed(enc.compress(b"first chunk ")) == b"first chunk "
    assert feed(enc.compress(b"second")) == b"second"


@settings(max_examples=60, deadline=None)
@given(
    encoding=st.sampled_from(ALL),
    chunks=st.lists(st.binary(max_size=3000), max_size=12),
    level=st.integers(1, 9),
)
def test_round_trip(encoding, chunks, level):
    enc = Encoder(encoding, level)
    out = b"".join(enc.compress(c) for c in chunks) + enc.finish()
    assert decode(encoding, out) == b"".join(chunks)


def test_decoder_round_trips_and_survives_a_corrupt_body():
    import gzip

    from l7.compress import Decoder

    body = b"hello decoder " * 500
    packed = gzip.compress(body)
    d = Decoder("gzip")
    out = b"".join(d.compress(packed[i : i + 100]) for i in range(0, len(packed), 100))
    assert out + d.finish() == body
    bad = Decoder("gzip")
    assert bad.compress(b"not gzip at all") == b"" and bad.compress(packed) == b""
    assert bad.finish() == b""
