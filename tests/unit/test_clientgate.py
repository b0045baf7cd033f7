"""ClientGate: IP rules, concurrent and per-second limits per client address, reload."""

from l4lb.clientgate import ClientGate
from l4lb.config.schema import AccessConfig


def test_rules_first():
    gate = ClientGate(AccessConfig(deny=("192.0.2.0/24",)))
    assert gate.admit("192.0.2.1", 0.0) == "denied"
    assert gate.admit("198.51.100.1", 0.0) is None
    assert gate.current == {"198.51.100.1": 1}  # a denied client is not counted


def test_max_per_client():
    gate = ClientGate(AccessConfig(max_per_client=2))
    assert gate.admit("a", 0.0) is None and gate.admit("a", 0.0) is None
    assert gate.admit("a", 0.0) == "client_max"
    assert gate.admit("b", 0.0) is None
    gate.release("a")
    assert gate.admit("a", 0.0) is None
    for _ in range(3):
        gate.release("a")
    assert "a" not in gate.current


def test_rate_per_client_with_burst():
    gate = ClientGate(AccessConfig(rate_per_client=2, rate_burst=3))
    assert [gate.admit("a", 10.0) for _ in range(4)] == [None, None, None, "client_rate"]
    assert gate.admit("a", 10.5) is None
    assert gate.admit("b", 10.0) is None


def test_reload_keeps_counts_and_rate_state():
    gate = ClientGate(AccessConfig(max_per_client=1, rate_per_client=1))
    assert gate.admit("a", 0.0) is None
    rate = gate.rate
    gate.configure(AccessConfig(max_per_client=1, rate_per_client=1, deny=("10.0.0.0/8",)))
    assert gate.rate is rate
    assert gate.admit("a", 5.0) == "client_max"  # the live connection still counts
    assert gate.admit("10.1.1.1", 5.0) == "denied"
    gate.configure(AccessConfig())
    assert gate.rate is None and gate.admit("10.1.1.1", 5.0) is None
