"""Allow/deny lists of address ranges, matched by longest prefix (sans-IO, precompiled).

Why longest prefix: it lets one list carve exceptions out of the other in either direction
(`allow = ["10.0.0.0/8"]` with `deny = ["10.6.6.6"]`, or `deny = ["10.0.0.0/8"]` with
`allow = ["10.1.0.0/16"]`) without an order to get wrong, as a routing table or nginx's
`geo` module decide. A range in both lists denies. An address no range covers is allowed
when `allow` is empty and denied otherwise (HAProxy `src` ACL and nginx `allow ... deny all`
say the same). IPv4-mapped IPv6 addresses (`::ffff:192.0.2.7`, what a dual-stack socket
reports) are matched as the IPv4 address they carry.

Matching masks the address once per distinct prefix length in the lists and looks the
result up in a set: at most 33 (IPv4) or 129 (IPv6) set lookups however many ranges there
are, so a deny list of 100,000 networks costs what a list of a few does.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["IpRules", "parse_ip"]

_Addr = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_ip(text: str) -> _Addr | None:
    """The address in `text` (a peer's host), IPv4-mapped IPv6 unwrapped; None if not one."""
    try:
        addr = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class _Table:
    """One address family: prefix length -> {(network int, verdict)} as a dict."""

    __slots__ = ("bits", "lengths", "nets")

    def __init__(self, bits: int) -> None:
        self.bits = bits
        self.nets: dict[int, dict[int, bool]] = {}
        self.lengths: tuple[tuple[int, int, dict[int, bool]], ...] = ()

    def add(self, network: ipaddress.IPv4Network | ipaddress.IPv6Network, allow: bool) -> None:
        by_len = self.nets.setdefault(network.prefixlen, {})
        key = int(network.network_address)
        by_len[key] = allow and by_len.get(key, True)  # both lists: deny

    def freeze(self) -> None:
        full = (1 << self.bits) - 1
        self.lengths = tuple(
            (full ^ ((1 << (self.bits - n)) - 1), n, self.nets[n])
            for n in sorted(self.nets, reverse=True)
        )

    def lookup(self, value: int) -> bool | None:
        for mask, _n, nets in self.lengths:
            verdict = nets.get(value & mask)
            if verdict is not None:
                return verdict
        return None


class IpRules:
    """`allowed(host)` for a listener's or a route's `allow`/`deny` ranges (CIDR strings as
    the config loader normalised them). Empty rules allow everything; `bool(rules)` says
    whether there are any."""

    __slots__ = ("_default", "_v4", "_v6", "count")

    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> None:
        self._v4, self._v6 = _Table(32), _Table(128)
        self.count = 0
        allow_any = False
        for ranges, verdict in ((allow, True), (deny, False)):
            for text in ranges:
                net = ipaddress.ip_network(text, strict=False)
                if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96:
                    mapped = net.network_address.ipv4_mapped
                    if mapped is not None:  # ::ffff:a.b.c.d/n written for an IPv4 range
                        net = ipaddress.ip_network(f"{mapped}/{net.prefixlen - 96}")
                (self._v4 if net.version == 4 else self._v6).add(net, verdict)
                self.count += 1
                allow_any = allow_any or verdict
        self._v4.freeze()
        self._v6.freeze()
        self._default = not allow_any

    def __bool__(self) -> bool:
        return self.count > 0

    def allowed(self, host: str) -> bool:
        """Whether a client at `host` (an address as a socket reports it) may pass. Something
        that is not an address (a Unix socket's empty name) passes only without `allow`."""
        addr = parse_ip(host)
        if addr is None:
            return self._default
        table = self._v4 if addr.version == 4 else self._v6
        verdict = table.lookup(int(addr))
        return self._default if verdict is None else verdict
