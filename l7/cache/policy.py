"""RFC 9111 decisions for a shared cache, sans-IO: no clock (times are passed in, wall-clock
seconds as `time.time()` gives, because Date and Expires are wall-clock), no IO.

What is covered: storability (§3: method, status, no-store, private, Authorization §3.5,
Set-Cookie unless configured, Vary: * is stored never), freshness lifetime (§4.2.1:
s-maxage, then max-age, then Expires minus Date; heuristic §4.2.2 only when configured, as a
percentage of Date minus Last-Modified), age (§4.2.3), whether a stored response may be
served (fresh, no `no-cache`, request `no-cache`/`max-age=0` honoured) and the secondary key
from Vary (§4.1: values normalised by dropping spaces around commas and lower-casing).
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime

from l7.model import Headers

__all__ = [
    "CACHEABLE_STATUSES",
    "cache_control",
    "current_age",
    "freshness_lifetime",
    "http_date",
    "storable",
    "vary_key",
]

#: Heuristically cacheable statuses (RFC 9110 §15.1); l4lb stores only these, and only with
#: explicit freshness unless `heuristic` is set.
CACHEABLE_STATUSES = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})


def cache_control(headers: Headers) -> dict[str, str | None]:
    """Every Cache-Control directive (names lower-case, quotes removed from values)."""
    out: dict[str, str | None] = {}
    for name, value in headers:
        if name != b"cache-control":
            continue
        for item in value.decode("latin-1").split(","):
            key, eq, arg = item.strip().partition("=")
            if key:
                out.setdefault(key.lower(), arg.strip().strip('"') if eq else None)
    return out


def _seconds(value: str | None) -> int | None:
    if value is None or not value.isdigit():
        return None
    return int(value)


def http_date(value: bytes | None) -> float | None:
    """An HTTP-date as epoch seconds, or None (an invalid date is treated as absent, except
    Expires, where the caller treats it as in the past: §5.3)."""
    if value is None:
        return None
    try:
        return parsedate_to_datetime(value.decode("latin-1")).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _first(headers: Headers, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None


def storable(
    method: str,
    status: int,
    request: Headers,
    response: Headers,
    *,
    heuristic: int = 0,
    store_set_cookie: bool = False,
) -> bool:
    """May a shared cache store this response (RFC 9111 §3)?"""
    if method not in ("GET", "HEAD") or status not in CACHEABLE_STATUSES:
        return False
    rcc = cache_control(request)
    cc = cache_control(response)
    if "no-store" in rcc or "no-store" in cc or "private" in cc:
        return False
    if not store_set_cookie and _first(response, b"set-cookie") is not None:
        return False
    vary = _first(response, b"vary")
    if vary is not None and b"*" in [v.strip() for v in vary.split(b",")]:
        return False
    if _first(request, b"authorization") is not None and not (
        "must-revalidate" in cc or "public" in cc or "s-maxage" in cc
    ):
        return False  # §3.5
    if "no-cache" in cc:
        return False  # would need a revalidation on every use: not stored (yet)
    explicit = (
        "s-maxage" in cc or "max-age" in cc or _first(response, b"expires") is not None
    ) or "public" in cc
    return explicit or (heuristic > 0 and _first(response, b"last-modified") is not None)


def freshness_lifetime(response: Headers, heuristic: int = 0) -> float:
    """Seconds a stored response stays fresh (RFC 9111 §4.2.1); 0 when it is stale at once."""
    cc = cache_control(response)
    for key in ("s-maxage", "max-age"):
        if key in cc:
            n = _seconds(cc[key])
            return float(n) if n is not None else 0.0  # a bad value: stale (§4.2.1)
    date = http_date(_first(response, b"date"))
    expires = _first(response, b"expires")
    if expires is not None:
        when = http_date(expires)
        if when is None or date is None:
            return 0.0
        return max(0.0, when - date)
    modified = http_date(_first(response, b"last-modified"))
    if heuristic and date is not None and modified is not None and modified < date:
        return (date - modified) * heuristic / 100
    return 0.0


def current_age(response: Headers, request_time: float, response_time: float, now: float) -> float:
    """RFC 9111 §4.2.3: corrected initial age plus the time resident here."""
    date = http_date(_first(response, b"date"))
    apparent = max(0.0, response_time - date) if date is not None else 0.0
    age = _seconds((_first(response, b"age") or b"").decode("latin-1")) or 0
    initial = max(apparent, age + (response_time - request_time))
    return initial + (now - response_time)


def vary_key(response: Headers, request: Headers) -> tuple[tuple[bytes, bytes], ...]:
    """The request's values of the fields the response varies on, normalised (§4.1)."""
    names: list[bytes] = []
    for key, value in response:
        if key == b"vary":
            names += [n.strip().lower() for n in value.split(b",") if n.strip()]
    out = []
    for name in sorted(set(names)):
        values = [v for k, v in request if k == name]
        joined = b",".join(b",".join(p.strip() for p in v.split(b",")) for v in values)
        out.append((name, joined.lower() if name.startswith(b"accept") else joined))
    return tuple(out)


def fresh_enough(request: Headers, lifetime: float, age: float) -> bool:
    """May a stored response of this `age` and `lifetime` answer this request without
    revalidation (RFC 9111 §4.2, §5.2.1: request no-cache, max-age, min-fresh)?"""
    rcc = cache_control(request)
    if "no-cache" in rcc or (_first(request, b"pragma") == b"no-cache" and not rcc):
        return False
    max_age = _seconds(rcc.get("max-age"))
    if max_age is not None and age > max_age:
        return False
    min_fresh = _seconds(rcc.get("min-fresh")) or 0
    return lifetime - age > min_fresh
