"""IpRules: longest prefix wins, deny on ties, IPv4-mapped IPv6, empty rules allow all."""

from hypothesis import given
from hypothesis import strategies as st

from l4lb.iprules import IpRules


def test_empty_allows_everything():
    rules = IpRules()
    assert not rules
    assert rules.allowed("203.0.113.9") and rules.allowed("::1") and rules.allowed("")


def test_deny_only():
    rules = IpRules(deny=["192.0.2.0/24", "2001:db8::/32"])
    assert not rules.allowed("192.0.2.77")
    assert rules.allowed("192.0.3.1")
    assert not rules.allowed("2001:db8::5")
    assert rules.allowed("2001:db9::5")


def test_allow_only_denies_the_rest():
    rules = IpRules(allow=["127.0.0.0/8", "::1/128"])
    assert rules.allowed("127.0.0.1") and rules.allowed("::1")
    assert not rules.allowed("10.0.0.1") and not rules.allowed("::2")
    assert not rules.allowed("not an address")


def test_longest_prefix_wins_both_ways():
    rules = IpRules(allow=["10.0.0.0/8", "10.6.0.0/16"], deny=["10.6.6.0/24", "172.16.0.0/12"])
    assert rules.allowed("10.1.2.3")
    assert not rules.allowed("10.6.6.6")  # deny /24 inside allow /16
    assert rules.allowed("10.6.7.1")
    carve = IpRules(allow=["10.1.0.0/16"], deny=["10.0.0.0/8"])
    assert carve.allowed("10.1.9.9") and not carve.allowed("10.2.0.1")


def test_same_range_in_both_denies():
    assert not IpRules(allow=["192.0.2.1/32"], deny=["192.0.2.1/32"]).allowed("192.0.2.1")


def test_ipv4_mapped_and_scoped():
    rules = IpRules(deny=["192.0.2.0/24"])
    assert not rules.allowed("::ffff:192.0.2.5")
    assert not IpRules(deny=["::ffff:192.0.2.0/120"]).allowed("192.0.2.5")
    assert not IpRules(deny=["fe80::/10"]).allowed("fe80::1%eth0")


def test_many_networks():
    deny = [f"10.{a}.{b}.0/24" for a in range(200) for b in range(0, 256, 4)]
    rules = IpRules(deny=deny)
    assert rules.count == len(deny)
    assert not rules.allowed("10.199.252.7")
    assert rules.allowed("10.199.253.7")


@given(st.ip_addresses(v=4), st.integers(0, 32))
def test_agrees_with_ipaddress(addr, prefix):
    import ipaddress

    net = ipaddress.ip_network(f"{addr}/{prefix}", strict=False)
    rules = IpRules(deny=[str(net)])
    probe = net.network_address + (net.num_addresses - 1)
    assert not rules.allowed(str(addr)) and not rules.allowed(str(probe))
    if prefix:
        outside = int(net.network_address) ^ (1 << (32 - prefix))
        assert rules.allowed(str(ipaddress.IPv4Address(outside)))
