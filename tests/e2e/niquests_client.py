"""Run by tests/e2e/test_http3_niquests.py in the niquests virtualenv (never imported by the
tests: niquests' urllib3 fork, urllib3-future, shadows urllib3). Its HTTP/3 is qh3, a QUIC
and HTTP/3 implementation apart from aioquic, which the rest of the tests and l4lb use.

    python niquests_client.py BASE_URL MODE

MODE `h3`: HTTP/1.1 and HTTP/2 disabled, so every request goes over QUIC at once. MODE
`alt-svc`: a default session, which starts on TCP and moves to HTTP/3 when a response's
Alt-Svc offers it (as a browser does). Prints one JSON line: each exchange's method, path,
status, HTTP version (11, 20, 30), headers and body (latin-1).
"""

from __future__ import annotations

import json
import sys

import niquests


def main() -> None:
    base, mode = sys.argv[1], sys.argv[2]
    if mode == "h3":
        session = niquests.Session(disable_http1=True, disable_http2=True)
    else:
        session = niquests.Session()
    out = []
    with session:
        steps = [("GET", "/", None, {})]
        if mode == "alt-svc":
            steps += [("GET", "/", None, {})] * 2
        else:
            steps += [
                ("POST", "/digest", b"hello niquests" * 1000, {}),
                ("GET", "/nowhere", None, {"host": "unknown.example"}),
                ("GET", "/headers", None, {"x-client": "niquests", "x-request-id": "nq-1"}),
                ("GET", f"/bytes/{1 << 20}", None, {}),
            ]
        for method, path, body, headers in steps:
            r = session.request(
                method, base + path, data=body, headers=headers, timeout=20, verify=False
            )  # the tests' self-signed certificate
            out.append(
                {
                    "method": method,
                    "path": path,
                    "status": r.status_code,
                    "version": r.http_version,
                    "headers": {k.lower(): v for k, v in r.headers.items()},
                    "body": r.content.decode("latin-1") if r.content else "",
                }
            )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
