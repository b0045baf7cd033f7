"""The WAF corpora as requests: `attacks()` and `benign()` give (label, Request, body, kind).

Attack payloads (attacks-*.txt, one per line, as typed) are placed in turn in a query
parameter, a form field, a JSON value, a cookie and a header, each encoded as a client
would encode it there; attacks-requests.jsonl holds whole requests (paths, methods, header
tricks). benign.jsonl is written by make_benign.py. Used by tests/unit/test_waf_corpus.py
and bench/waf_stage.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlencode

from l7.model import Request
from l7.waf.extract import body_kind

__all__ = ["PLACES", "attacks", "benign", "make_request"]

HERE = Path(__file__).parent
PLACES = ("query", "form", "json", "cookie", "header")
_BROWSER = [
    (b"host", b"shop.example.com"),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"),
    (b"accept", b"*/*"),
]

Sample = tuple[str, Request, bytes | None, str]


def make_request(method: str, target: str, headers: list, body: str | None) -> Sample:
    fields = [(k.lower().encode(), v.encode("utf-8")) for k, v in headers]
    raw = body.encode("utf-8") if body is not None else None
    content_type = next((v for k, v in fields if k == b"content-type"), None)
    request = Request(method, target, fields, length=len(raw) if raw else 0)
    return "", request, raw, body_kind(content_type) if raw else ""


def _placed(payload: str, place: str) -> Sample:
    headers = [(k.decode(), v.decode()) for k, v in _BROWSER]
    if place == "query":
        return make_request(
            "GET", "/search?" + urlencode({"q": payload, "page": "1"}), headers, None
        )
    if place == "form":
        headers.append(("content-type", "application/x-www-form-urlencoded"))
        body = urlencode({"name": "Anna", "comment": payload})
        return make_request("POST", "/comments", headers, body)
    if place == "json":
        headers.append(("content-type", "application/json"))
        return make_request("POST", "/api/items", headers, json.dumps({"id": 7, "value": payload}))
    if place == "cookie":
        headers.append(("cookie", "theme=dark; pref=" + quote(payload, safe="")))
        return make_request("GET", "/account", headers, None)
    headers.append(("x-search-term", payload))
    return make_request("GET", "/", headers, None)


def attacks() -> Iterator[Sample]:
    """Every attack, labelled `category:place` (or `category:request:N`)."""
    for path in sorted(HERE.glob("attacks-*.txt")):
        category = path.stem.removeprefix("attacks-")
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines()]
        payloads = [ln for ln in lines if ln and not ln.startswith("# ")]
        for i, payload in enumerate(payloads):
            place = PLACES[i % len(PLACES)]
            _, request, body, kind = _placed(payload, place)
            yield f"{category}:{place}:{payload}", request, body, kind
    with (HERE / "attacks-requests.jsonl").open(encoding="utf-8") as f:
        for n, line in enumerate(f):
            row = json.loads(line)
            _, request, body, kind = make_request(
                row["method"],
                row["target"],
                row.get("headers", []) or [["host", "x"]],
                row.get("body"),
            )
            yield f"{row['category']}:request:{n}:{row['target']}", request, body, kind


def benign() -> Iterator[Sample]:
    with (HERE / "benign.jsonl").open(encoding="utf-8") as f:
        for n, line in enumerate(f):
            row = json.loads(line)
            _, request, body, kind = make_request(
                row["method"], row["target"], row["headers"], row["body"]
            )
            yield f"benign:{n}:{row['method']} {row['target'][:80]}", request, body, kind
