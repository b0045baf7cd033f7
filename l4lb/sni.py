"""Route a TLS connection to a pool by the name in its ClientHello, without decrypting it.

Routes are tried in config order and the first match wins (DESIGN.md). A pattern is an exact
name or `*.suffix`, which matches any name below the suffix but not the suffix itself, as
nginx's `map`/`server_name` wildcards do (a certificate wildcard covers one label only, but
routing is not certificate matching). A route with `alpn` also needs one of those protocols
among the client's. No match, or no SNI at all, goes to the listener's default pool if it has
one; otherwise there is no route and the connection is closed.
"""

from __future__ import annotations

from collections.abc import Sequence

from l4lb.config.schema import SniRoute

__all__ = ["SniRouter"]


class SniRouter:
    __slots__ = ("default", "routes")

    def __init__(self, routes: Sequence[SniRoute], default: str | None = None) -> None:
        self.routes = tuple(routes)
        self.default = default

    def match(self, sni: str | None, alpn: Sequence[str] = ()) -> str | None:
        """The pool name for this hello, or None if nothing matches and there is no default."""
        if sni is not None:
            for route in self.routes:
                if route.alpn and not any(p in route.alpn for p in alpn):
                    continue
                for pattern in route.sni:
                    if pattern == sni or (pattern.startswith("*.") and sni.endswith(pattern[1:])):
                        return route.pool
        return self.default
