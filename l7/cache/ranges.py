"""Range requests answered from a stored full response (RFC 9110 §14), sans-IO.

One byte range (`bytes=0-99`, `bytes=100-`, `bytes=-100`) gets 206 with Content-Range; a
range past the end gets 416 with `Content-Range: bytes */SIZE`. Several ranges are answered
with the whole 200, as the RFC allows (§14.2: a server MAY ignore Range) and as nginx does
for a cached response unless `max_ranges` says otherwise: multipart/byteranges costs more
than it saves. A syntax error, a unit other than bytes and a failed If-Range (§13.1.5, a
strong comparison with the stored ETag or Last-Modified) also give the 200.
"""

from __future__ import annotations

from l7.model import Headers, header

__all__ = ["UNSATISFIABLE", "byte_range"]

#: `byte_range`'s answer for a range that selects nothing (416).
UNSATISFIABLE = (-1, -1)


def _if_range_ok(request: Headers, stored: Headers) -> bool:
    cond = header(request, b"if-range")
    if cond is None:
        return True
    cond = cond.strip()
    if cond.startswith(b'"'):
        return header(stored, b"etag") == cond  # strong comparison: a weak tag never matches
    return header(stored, b"last-modified") == cond


def byte_range(request: Headers, stored: Headers, size: int) -> tuple[int, int] | None:
    """For a GET with Range on a stored body of `size` bytes: (first, last) inclusive for a
    206, `UNSATISFIABLE` for a 416, or None to answer with the whole body (no Range, several
    ranges, a bad one, or an If-Range that does not match)."""
    value = header(request, b"range")
    if value is None or not _if_range_ok(request, stored):
        return None
    unit, eq, spec = value.partition(b"=")
    if not eq or unit.strip().lower() != b"bytes" or b"," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition(b"-")
    if not dash:
        return None
    first_s, last_s = first_s.strip(), last_s.strip()
    if (first_s and not first_s.isdigit()) or (last_s and not last_s.isdigit()):
        return None
    if not first_s:  # a suffix: the last N bytes
        if not last_s:
            return None
        n = int(last_s)
        if n == 0 or size == 0:
            return UNSATISFIABLE
        return max(0, size - n), size - 1
    first = int(first_s)
    if last_s and int(last_s) < first:
        return None  # invalid (§14.1.1): ignored
    if first >= size:
        return UNSATISFIABLE
    last = int(last_s) if last_s else size - 1
    return first, min(last, size - 1)
