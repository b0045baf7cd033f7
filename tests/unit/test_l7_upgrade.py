"""Which upgrades l4lb lets through (l7.upgrade): only allowed protocols, never h2c."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from l7.upgrade import DEFAULT_UPGRADES, accepted_upgrade, allowed_upgrade

WS = frozenset(DEFAULT_UPGRADES)


def head(upgrade: bytes | None, connection: bytes | None = b"Upgrade") -> list:
    out = [(b"host", b"a")]
    if connection is not None:
        out.append((b"connection", connection))
    if upgrade is not None:
        out.append((b"upgrade", upgrade))
    return out


@pytest.mark.parametrize(
    "upgrade, connection, version, allowed",
    [
        (b"websocket", b"Upgrade", "1.1", True),
        (b"WebSocket", b"keep-alive, upgrade", "1.1", True),
        (b"websocket/13", b"upgrade", "1.1", True),
        (b"h2c", b"Upgrade, HTTP2-Settings", "1.1", False),
        (b"websocket, h2c", b"upgrade", "1.1", False),  # the server could pick h2c
        (b"h2c, websocket", b"upgrade", "1.1", False),
        (b"websocket", b"keep-alive", "1.1", False),  # Upgrade without Connection: upgrade
        (b"websocket", None, "1.1", False),
        (None, b"upgrade", "1.1", False),
        (b"websocket", b"upgrade", "1.0", False),  # RFC 9110 §7.8: ignored in HTTP/1.0
        (b"", b"upgrade", "1.1", False),
        (b"websocket,", b"upgrade", "1.1", False),
    ],
)
def test_allowed_upgrade(upgrade, connection, version, allowed) -> None:
    assert allowed_upgrade(head(upgrade, connection), version, WS) is allowed


def test_no_upgrade_when_none_is_allowed() -> None:
    assert not allowed_upgrade(head(b"websocket"), "1.1", frozenset())


def test_other_allowed_protocols() -> None:
    assert allowed_upgrade(head(b"foo/2"), "1.1", frozenset({"foo"}))
    assert not allowed_upgrade(head(b"foo, websocket"), "1.1", frozenset({"foo"}))


@pytest.mark.parametrize(
    "response, accepted",
    [
        (b"websocket", True),
        (b"WebSocket", True),
        (b"h2c", False),  # not what was offered or allowed
        (b"websocket, h2c", False),  # a switch is to one protocol
        (None, False),  # a 101 must say what it switches to
    ],
)
def test_accepted_upgrade(response, accepted) -> None:
    hop = [(b"connection", b"upgrade")] + ([(b"upgrade", response)] if response else [])
    assert accepted_upgrade(head(b"websocket"), hop, WS) is accepted


def test_accepted_upgrade_must_be_what_the_client_offered() -> None:
    both = frozenset({"websocket", "foo"})
    assert not accepted_upgrade(head(b"foo"), [(b"upgrade", b"websocket")], both)


@given(st.lists(st.sampled_from([b"websocket", b"h2c", b"foo", b"", b" h2c "]), min_size=1))
def test_h2c_anywhere_is_never_allowed(protocols: list[bytes]) -> None:
    offer = b", ".join(protocols)
    result = allowed_upgrade(head(offer), "1.1", WS | {"foo"})
    if any(p.strip() in (b"h2c", b"") for p in protocols):
        assert not result
