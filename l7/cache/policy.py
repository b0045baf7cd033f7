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

import math
from email.utils import parsedate_to_datetime
from functools import lru_cache
from typing import Final

from l7.model import Headers

__all__ = [
    "CACHEABLE_STATUSES",
    "cache_control",
    "cache_status",
    "current_age",
    "fresh_enough",
    "freshness_lifetime",
    "http_date",
    "initial_age",
    "not_modified",
    "not_modified_fields",
    "revalidation_request",
    "stale_allowed",
    "storable",
    "updated_fields",
    "vary_key",
    "vary_names",
    "vary_values",
]

#: Heuristically cacheable statuses (RFC 9110 §15.1); l4lb stores only these, and only with
#: explicit freshness unless `heuristic` is set.
CACHEABLE_STATUSES: Final = frozenset({200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501})


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
    return _parsed_date(value)


@lru_cache(maxsize=4096)
def _parsed_date(value: bytes) -> float | None:
    """Kept: a stored response's Date and Expires are read on every hit (email.utils parses
    slowly), and few distinct values are in use at once."""
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
    if "no-cache" in cc:  # stored, but revalidated on every use (§5.2.2.4): needs a validator
        return (
            _first(response, b"etag") is not None or _first(response, b"last-modified") is not None
        )
    explicit = (
        "s-maxage" in cc or "max-age" in cc or _first(response, b"expires") is not None
    ) or "public" in cc
    return explicit or (heuristic > 0 and _first(response, b"last-modified") is not None)


def freshness_lifetime(response: Headers, heuristic: int = 0) -> float:
    """Seconds a stored response stays fresh (RFC 9111 §4.2.1); 0 when it is stale at once
    (and always for `no-cache`, which is a revalidation on every use, §5.2.2.4)."""
    cc = cache_control(response)
    if "no-cache" in cc:
        return 0.0
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
    return initial_age(response, request_time, response_time) + (now - response_time)


def initial_age(response: Headers, request_time: float, response_time: float) -> float:
    """RFC 9111 §4.2.3's corrected initial age: what `current_age` adds the time resident
    here to (the same for every use of a stored response, l7/cache/hit.py keeps it)."""
    date = http_date(_first(response, b"date"))
    apparent = max(0.0, response_time - date) if date is not None else 0.0
    age = _seconds((_first(response, b"age") or b"").decode("latin-1")) or 0
    return max(apparent, age + (response_time - request_time))


def vary_key(response: Headers, request: Headers) -> tuple[tuple[bytes, bytes], ...]:
    """The request's values of the fields the response varies on, normalised (§4.1)."""
    return vary_values(vary_names(response), request)


def vary_names(response: Headers) -> tuple[bytes, ...]:
    """The field names the response's Vary lists, lower-case, sorted, once each."""
    names: list[bytes] = []
    for key, value in response:
        if key == b"vary":
            names += [n.strip().lower() for n in value.split(b",") if n.strip()]
    return tuple(sorted(set(names)))


def vary_values(names: tuple[bytes, ...], request: Headers) -> tuple[tuple[bytes, bytes], ...]:
    """The request's values of `names` (`vary_names`), normalised (§4.1)."""
    out = []
    for name in names:
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


# -- validation (RFC 9111 §4.3) ------------------------------------------------------------------

#: The request fields a revalidation replaces: the cache asks with its own validators, for the
#: whole representation (nginx's proxy_cache does the same), then answers the client's own
#: conditional and Range from what it holds.
_CLIENT_CONDITIONALS: Final = frozenset(
    {
        b"if-none-match",
        b"if-modified-since",
        b"if-range",
        b"range",
        b"if-match",
        b"if-unmodified-since",
    }
)
#: Fields a 304 never replaces in the stored response (§3.2: Content-Length, and those the
#: stored body depends on).
_NOT_UPDATED: Final = frozenset(
    {b"content-length", b"content-encoding", b"content-range", b"transfer-encoding"}
)
#: What a 304 carries of the 200 it stands for (RFC 9110 §15.4.5), plus Last-Modified.
_304_FIELDS = frozenset(
    {b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary", b"last-modified"}
)


def revalidation_request(request: Headers, stored: Headers) -> Headers:
    """The request fields to send upstream to validate `stored` (§4.3.1): the client's
    conditionals and Range replaced by If-None-Match (the stored ETag) and If-Modified-Since
    (the stored Last-Modified). Without either validator this is a plain fetch."""
    out = [(n, v) for n, v in request if n not in _CLIENT_CONDITIONALS]
    etag = _first(stored, b"etag")
    if etag is not None:
        out.append((b"if-none-match", etag))
    modified = _first(stored, b"last-modified")
    if modified is not None:
        out.append((b"if-modified-since", modified))
    return out


def _tags(value: bytes) -> list[bytes]:
    """The entity-tags of an If-None-Match list, weak prefix dropped (weak comparison)."""
    out = []
    for item in value.split(b","):
        tag = item.strip()
        out.append(tag[2:] if tag.startswith(b"W/") else tag)
    return out


def not_modified(request: Headers, stored: Headers) -> bool:
    """Does the client's conditional GET/HEAD get 304 from `stored` (RFC 9110 §13.1.2,
    §13.1.3, §13.2.2)? If-None-Match, when present, decides alone (weak comparison; `*`
    matches any); else If-Modified-Since against Last-Modified (or Date when there is none).
    An invalid date is ignored."""
    inm = _first(request, b"if-none-match")
    if inm is not None:
        etag = _first(stored, b"etag")
        tags = _tags(inm)
        if b"*" in tags:
            return True
        if etag is None:
            return False
        return (etag[2:] if etag.startswith(b"W/") else etag) in tags
    since = http_date(_first(request, b"if-modified-since"))
    if since is None:
        return False
    modified = http_date(_first(stored, b"last-modified") or _first(stored, b"date"))
    return modified is not None and modified <= since


def not_modified_fields(stored: Headers) -> Headers:
    """The stored fields a 304 sent from the cache carries (RFC 9110 §15.4.5)."""
    return [(n, v) for n, v in stored if n in _304_FIELDS]


def updated_fields(stored: Headers, fresh: Headers) -> Headers:
    """The stored fields updated from a 304 (RFC 9111 §4.3.4, §3.2): each field of the 304
    replaces the stored ones of that name, except Content-Length and the fields the stored
    body depends on (its encoding, its range)."""
    given = [(n, v) for n, v in fresh if n not in _NOT_UPDATED]
    names = {n for n, _ in given}
    return [(n, v) for n, v in stored if n not in names] + given


def same_validator(stored: Headers, fresh: Headers) -> bool:
    """May this 304 update `stored` (§4.3.4)? Not when it names another strong ETag."""
    etag = _first(fresh, b"etag")
    if etag is None or etag.startswith(b"W/"):
        return True
    return _first(stored, b"etag") == etag


# -- serving stale (RFC 9111 §4.2.4, RFC 5861) ---------------------------------------------------


def stale_allowed(stored: Headers, request: Headers, staleness: float, directive: str) -> bool:
    """May `stored`, stale by `staleness` seconds, be served under `directive`
    ("stale-while-revalidate" or "stale-if-error", RFC 5861)? The response's directive gives
    the window; a request may also give stale-if-error. Never under must-revalidate,
    proxy-revalidate or no-cache (§5.2.2.2, §5.2.2.8, §5.2.2.4). `s-maxage` implies
    proxy-revalidate (§5.2.2.10), but an explicit stale directive beside it is the origin's
    permission (Fastly, Cloudflare and Vercel honour `s-maxage=1, stale-while-revalidate=59`,
    which Next.js sends), so it is honoured too."""
    cc = cache_control(stored)
    if "must-revalidate" in cc or "proxy-revalidate" in cc or "no-cache" in cc:
        return False
    window = _seconds(cc.get(directive))
    if directive == "stale-if-error":
        asked = _seconds(cache_control(request).get(directive))
        if asked is not None:
            window = max(window or 0, asked)
    return window is not None and staleness <= window


# -- Cache-Status (RFC 9211) ---------------------------------------------------------------------


def cache_status(
    hit: bool = False,
    fwd: str = "",
    ttl: float | None = None,
    fwd_status: int = 0,
    stored: bool = False,
    collapsed: bool = False,
    detail: str = "",
) -> bytes:
    """One `Cache-Status` member for l4lb (RFC 9211 §2): `hit` or `fwd=REASON`
    (uri-miss, vary-miss, request, stale, method), `fwd-status`, `ttl` (negative: stale),
    `stored`, `collapsed`, `detail`."""
    out = ["l4lb"]
    if hit:
        out.append("hit")
    if fwd:
        out.append(f"fwd={fwd}")
    if fwd_status:
        out.append(f"fwd-status={fwd_status}")
    if ttl is not None:
        out.append(f"ttl={math.floor(ttl)}")  # (stale by a fraction of a second: -1)
    if stored:
        out.append("stored")
    if collapsed:
        out.append("collapsed")
    if detail:
        out.append(f"detail={detail}")
    return "; ".join(out).encode()
