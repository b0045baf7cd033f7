"""Unit tests for the balancing algorithms in l4lb.balance. No sockets, no clock."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l4lb import balance
from l4lb.balance import Balancer
from l4lb.balance.hash import Hash
from l4lb.balance.least_conn import LeastConn
from l4lb.balance.random_two import RandomTwo
from l4lb.balance.round_robin import RoundRobin
from l4lb.balance.weighted_round_robin import WeightedRoundRobin


@dataclasses.dataclass(frozen=True)
class FakeServer:
    """The three attributes a balancer reads. Frozen: a balancer that writes to it fails."""

    name: str
    weight_now: float = 1.0
    load: int = 0  # active connections over the instance (Server.load)


def servers(*names: str, **weights: float) -> list[FakeServer]:
    return [FakeServer(n, weights.get(n, 1.0)) for n in names]


def make(cls: type[Balancer], pool: Sequence[FakeServer]) -> Balancer:
    if cls is RandomTwo:
        return RandomTwo(pool, rng=random.Random(1234))
    return cls(pool)


def names(picks: Sequence[FakeServer | None]) -> str:
    return " ".join(p.name if p is not None else "-" for p in picks)


def keys(n: int) -> list[bytes]:
    """n distinct client-address-like keys (IPv4 addresses as 4 bytes)."""
    return [bytes((10, (i >> 16) & 255, (i >> 8) & 255, i & 255)) for i in range(n)]


# --- registry -----------------------------------------------------------------------------


def test_registry_names_and_lookup() -> None:
    assert balance.NAMES == (
        "hash",
        "least_conn",
        "random_two",
        "round_robin",
        "weighted_round_robin",
    )
    for name in balance.NAMES:
        cls = balance.get(name)
        assert cls.name == name
        assert issubclass(cls, Balancer)
        assert balance.ALGORITHMS[name] is cls


def test_registry_unknown_name_raises_keyerror_listing_known() -> None:
    with pytest.raises(KeyError, match="least_conn"):
        balance.get("leastconn")


def test_needs_declared() -> None:
    assert balance.get("hash").needs == frozenset({"key"})
    for name in ("round_robin", "weighted_round_robin", "least_conn", "random_two"):
        assert balance.get(name).needs == frozenset()


def test_base_is_abstract() -> None:
    with pytest.raises(TypeError):
        Balancer([])  # type: ignore[abstract]


@pytest.mark.parametrize("name", balance.NAMES)
def test_empty_candidates_return_none(name: str) -> None:
    pool = servers("a", "b", "c")
    b = make(balance.get(name), pool)
    assert b.pick([]) is None
    assert b.pick([], key=b"\x7f\x00\x00\x01") is None
    # Still works afterwards.
    assert b.pick(pool, key=b"\x7f\x00\x00\x01") in pool


@pytest.mark.parametrize("name", balance.NAMES)
def test_empty_pool(name: str) -> None:
    b = make(balance.get(name), [])
    assert b.pick([]) is None
    assert b.pick([], key=b"k") is None


@pytest.mark.parametrize("name", balance.NAMES)
def test_single_candidate_always_chosen(name: str) -> None:
    pool = servers("a", "b", "c")
    b = make(balance.get(name), pool)
    for i, k in enumerate(keys(50)):
        only = pool[i % 3]
        assert b.pick([only], key=k) is only


# --- round_robin --------------------------------------------------------------------------


def test_round_robin_rotates_in_order() -> None:
    pool = servers("a", "b", "c")
    b = RoundRobin(pool)
    assert names([b.pick(pool) for _ in range(7)]) == "a b c a b c a"


def test_round_robin_spreads_evenly() -> None:
    pool = servers(*"abcde")
    b = RoundRobin(pool)
    counts = Counter(b.pick(pool).name for _ in range(5000))
    assert counts == {n: 1000 for n in "abcde"}


def test_round_robin_stays_fair_when_candidate_disappears() -> None:
    pool = servers("a", "b", "c", "d")
    b = RoundRobin(pool)
    for _ in range(5):  # leave the counter mid-cycle
        b.pick(pool)
    remaining = [s for s in pool if s.name != "b"]
    picks = [b.pick(remaining) for _ in range(300)]
    assert all(p in remaining for p in picks)
    assert Counter(p.name for p in picks) == {"a": 100, "c": 100, "d": 100}
    # Every window of 3 consecutive picks covers each remaining server once.
    for i in range(0, 297):
        assert {p.name for p in picks[i : i + 3]} == {"a", "c", "d"}
    # And when b comes back, it gets its turn again.
    back = Counter(b.pick(pool).name for _ in range(400))
    assert back == {n: 100 for n in "abcd"}


def test_round_robin_ignores_key() -> None:
    pool = servers("a", "b")
    b = RoundRobin(pool)
    assert names([b.pick(pool, key=b"same") for _ in range(4)]) == "a b a b"


# --- weighted_round_robin -----------------------------------------------------------------


def test_smooth_wrr_nginx_sequence_5_1_1() -> None:
    pool = servers("a", "b", "c", a=5)
    b = WeightedRoundRobin(pool)
    assert names([b.pick(pool) for _ in range(7)]) == "a a b a c a a"
    # The cycle repeats exactly.
    assert names([b.pick(pool) for _ in range(7)]) == "a a b a c a a"


def test_smooth_wrr_proportions_over_many_picks() -> None:
    pool = servers("a", "b", "c", "d", a=4, b=3, c=2, d=1)
    b = WeightedRoundRobin(pool)
    counts = Counter(b.pick(pool).name for _ in range(10 * 1000))
    assert counts == {"a": 4000, "b": 3000, "c": 2000, "d": 1000}


def test_smooth_wrr_equal_weights_is_round_robin() -> None:
    pool = servers("a", "b", "c")
    b = WeightedRoundRobin(pool)
    assert names([b.pick(pool) for _ in range(6)]) == "a b c a b c"


def test_smooth_wrr_fractional_weights() -> None:
    # Slow start scales weights down; proportions must still follow them.
    pool = servers("a", "b", a=0.75, b=0.25)
    b = WeightedRoundRobin(pool)
    counts = Counter(b.pick(pool).name for _ in range(4000))
    assert counts["a"] == pytest.approx(3000, abs=2)
    assert counts["b"] == pytest.approx(1000, abs=2)


def test_smooth_wrr_state_is_keyed_by_name_not_position() -> None:
    # Reordering the candidate list must not change the outcome: the state follows names.
    pool = servers("a", "b", "c", a=5)
    ordered = WeightedRoundRobin(pool)
    shuffled = WeightedRoundRobin(pool)
    rng = random.Random(7)
    for _ in range(70):
        perm = pool[:]
        rng.shuffle(perm)
        x, y = ordered.pick(pool), shuffled.pick(perm)
        # b and c have equal weights, so which of them wins a tie depends on position;
        # the heavy server's picks must not.
        assert (x.name == "a") == (y.name == "a")


def test_smooth_wrr_proportions_hold_among_remaining_when_one_leaves() -> None:
    pool = servers("a", "b", "c", a=2, b=1, c=1)
    b = WeightedRoundRobin(pool)
    for _ in range(3):
        b.pick(pool)
    remaining = [s for s in pool if s.name != "b"]
    counts = Counter(b.pick(remaining).name for _ in range(3000))
    assert counts["a"] == pytest.approx(2000, abs=2)
    assert counts["c"] == pytest.approx(1000, abs=2)
    assert "b" not in counts


# --- least_conn ---------------------------------------------------------------------------


def test_least_conn_prefers_idle_server() -> None:
    pool = [FakeServer("a", load=3), FakeServer("b", load=0), FakeServer("c", load=2)]
    b = LeastConn(pool)
    for _ in range(5):
        assert b.pick(pool).name == "b"


def test_least_conn_respects_weights() -> None:
    # a: (4+1)/3 = 1.67; b: (1+1)/1 = 2. The heavier server is less loaded per weight.
    pool = [FakeServer("a", weight_now=3, load=4), FakeServer("b", weight_now=1, load=1)]
    b = LeastConn(pool)
    assert b.pick(pool).name == "a"
    # a: (6+1)/3 = 2.33 > b: 2.
    pool = [FakeServer("a", weight_now=3, load=6), FakeServer("b", weight_now=1, load=1)]
    assert b.pick(pool).name == "b"


def test_least_conn_idle_heavier_server_first() -> None:
    pool = [FakeServer("a", weight_now=1), FakeServer("b", weight_now=2)]
    assert LeastConn(pool).pick(pool).name == "b"


def test_least_conn_ties_rotate() -> None:
    pool = servers("a", "b", "c")
    b = LeastConn(pool)
    assert names([b.pick(pool) for _ in range(6)]) == "a b c a b c"


def test_least_conn_ties_rotate_only_among_tied() -> None:
    pool = [
        FakeServer("a", load=0),
        FakeServer("busy", load=5),
        FakeServer("b", load=0),
        FakeServer("c", load=0),
    ]
    b = LeastConn(pool)
    counts = Counter(b.pick(pool).name for _ in range(300))
    assert counts == {"a": 100, "b": 100, "c": 100}


def test_least_conn_tracks_load_as_pool_updates_it() -> None:
    # Simulate the pool: each pick opens a connection on the chosen server.
    active = {"a": 0, "b": 0, "c": 0}
    weights = {"a": 2.0, "b": 1.0, "c": 1.0}
    b = LeastConn([FakeServer(n, weights[n]) for n in active])
    for _ in range(400):
        cands = [FakeServer(n, weights[n], active[n]) for n in active]
        active[b.pick(cands).name] += 1
    assert active["a"] == pytest.approx(200, abs=2)
    assert active["b"] == pytest.approx(100, abs=2)
    assert active["c"] == pytest.approx(100, abs=2)


# --- hash ---------------------------------------------------------------------------------


def ten() -> list[FakeServer]:
    return [FakeServer(f"s{i}") for i in range(10)]


def test_hash_same_key_same_server() -> None:
    pool = ten()
    b = Hash(pool)
    for k in keys(200):
        first = b.pick(pool, key=k)
        assert all(b.pick(pool, key=k) is first for _ in range(3))


def test_hash_is_stable_across_instances() -> None:
    # A fresh ring (another worker, a reload) maps keys the same way.
    pool = ten()
    one, two = Hash(pool), Hash(list(pool))
    assert [one.pick(pool, key=k).name for k in keys(500)] == [
        two.pick(pool, key=k).name for k in keys(500)
    ]


def test_hash_distribution_is_even() -> None:
    pool = ten()
    b = Hash(pool)
    counts = Counter(b.pick(pool, key=k).name for k in keys(10_000))
    assert set(counts) == {s.name for s in pool}
    for name, count in counts.items():
        assert 0.05 <= count / 10_000 <= 0.15, (name, count)


def test_hash_removing_a_server_moves_only_its_keys() -> None:
    pool = ten()
    b = Hash(pool)
    ks = keys(10_000)
    before = {k: b.pick(pool, key=k).name for k in ks}
    gone = "s3"
    remaining = [s for s in pool if s.name != gone]
    after = {k: b.pick(remaining, key=k).name for k in ks}
    moved = [k for k in ks if before[k] != after[k]]
    # Only keys that were on the removed server move...
    assert all(before[k] == gone for k in moved)
    # ...all of them do (the server is not a candidate)...
    assert {k for k in ks if before[k] == gone} == set(moved)
    # ...and that is roughly 1/N of the keys.
    assert 0.05 <= len(moved) / len(ks) <= 0.15
    # The displaced keys spread over the others rather than landing on one neighbour.
    assert len({after[k] for k in moved}) >= 5
    # When the server comes back, every key returns to where it was.
    assert {k: b.pick(pool, key=k).name for k in ks} == before


def test_hash_weights_shift_share() -> None:
    pool = [FakeServer("big", weight_now=3), FakeServer("x"), FakeServer("y")]
    b = Hash(pool)
    counts = Counter(b.pick(pool, key=k).name for k in keys(10_000))
    assert 0.5 <= counts["big"] / 10_000 <= 0.7


def test_hash_walks_past_many_missing_servers() -> None:
    pool = ten()
    b = Hash(pool)
    only = [pool[7]]
    assert all(b.pick(only, key=k) is pool[7] for k in keys(100))


def test_hash_without_key_falls_back_to_round_robin() -> None:
    pool = servers("a", "b", "c")
    b = Hash(pool)
    assert names([b.pick(pool) for _ in range(6)]) == "a b c a b c"


def test_hash_unknown_candidate_still_returns_a_candidate() -> None:
    b = Hash(servers("a", "b"))
    stranger = [FakeServer("z")]
    assert b.pick(stranger, key=b"k") is stranger[0]


# --- random_two ---------------------------------------------------------------------------


def test_random_two_picks_less_loaded_of_two() -> None:
    pool = [FakeServer("idle", load=0), FakeServer("busy", load=10)]
    b = RandomTwo(pool, rng=random.Random(0))
    # With two candidates both are always sampled, so the idle one always wins.
    assert all(b.pick(pool).name == "idle" for _ in range(100))


def test_random_two_is_weight_aware() -> None:
    # heavy: (5+1)/4 = 1.5 < light: (1+1)/1 = 2.
    pool = [FakeServer("heavy", weight_now=4, load=5), FakeServer("light", load=1)]
    b = RandomTwo(pool, rng=random.Random(0))
    assert all(b.pick(pool).name == "heavy" for _ in range(100))


def test_random_two_never_picks_the_most_loaded_of_many() -> None:
    pool = [FakeServer(f"s{i}", load=i) for i in range(6)]
    b = RandomTwo(pool, rng=random.Random(42))
    counts = Counter(b.pick(pool).name for _ in range(3000))
    # The most loaded server loses every comparison it is drawn into.
    assert "s5" not in counts
    # The least loaded wins whenever drawn: about 2/6 of picks.
    assert 0.25 <= counts["s0"] / 3000 <= 0.42
    # Less load, more picks.
    assert counts["s0"] > counts["s1"] > counts["s2"] > counts["s3"] > counts["s4"]


def test_random_two_never_returns_a_non_candidate() -> None:
    pool = [FakeServer(f"s{i}", load=i % 3) for i in range(8)]
    b = RandomTwo(pool, rng=random.Random(3))
    rng = random.Random(9)
    for _ in range(500):
        cands = rng.sample(pool, rng.randint(1, len(pool)))
        assert b.pick(cands) in cands


def test_random_two_deterministic_with_seeded_rng() -> None:
    pool = servers(*"abcdef")
    one = RandomTwo(pool, rng=random.Random(5))
    two = RandomTwo(pool, rng=random.Random(5))
    assert names([one.pick(pool) for _ in range(50)]) == names([two.pick(pool) for _ in range(50)])


# --- properties ---------------------------------------------------------------------------

POOL = [
    FakeServer(f"s{i}", weight_now=w, load=a)
    for i, (w, a) in enumerate([(1, 0), (2, 3), (0.5, 1), (5, 10), (1, 1), (3, 0), (0.1, 0)])
]


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(balance.NAMES),
    subsets=st.lists(
        st.lists(st.sampled_from(range(len(POOL))), unique=True, max_size=len(POOL)),
        min_size=1,
        max_size=20,
    ),
    key=st.none() | st.binary(max_size=16),
)
def test_pick_returns_a_candidate(name: str, subsets: list[list[int]], key: bytes | None) -> None:
    b = make(balance.get(name), POOL)
    for subset in subsets:
        cands = [POOL[i] for i in subset]
        chosen = b.pick(cands, key=key)
        if cands:
            assert chosen is not None
            assert any(chosen is c for c in cands)
        else:
            assert chosen is None
