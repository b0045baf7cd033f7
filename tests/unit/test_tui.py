"""The live view, rendered to text at fixed sizes: what an operator sees, with no terminal."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.cells import cell_len
from rich.console import Console

from l4lb.tui import SPARKS, ViewState, render, render_to_text, sparkline, visible_servers
from tests.unit.snapshots import busy_snapshot

SNAPSHOT = busy_snapshot()


def lines_of(text: str) -> list[str]:
    return text.rstrip("\n").split("\n")


def row(text: str, name: str) -> str:
    (line,) = [x for x in lines_of(text) if x.startswith(f"  {name} ")]
    return line


@pytest.mark.parametrize(("width", "height"), [(80, 24), (160, 48)])
def test_frame_fits_and_shows_the_essentials(width, height):
    text = render_to_text(SNAPSHOT, width, height)
    lines = lines_of(text)
    assert len(lines) <= height
    assert all(cell_len(line) <= width for line in lines), max(lines, key=cell_len)
    head = lines[0]
    assert "l4lb 0.1.0" in head and "up 17m41s" in head and "site.toml" in head
    assert "loaded " in head
    # listeners: protocol, address, active, conn/s, bytes/s in and out
    (web,) = [x for x in lines if x.startswith("web ") and "tcp" in x]
    assert "0.0.0.0:80" in web and "70" in web and "351.6K/s" in web and "14.6M/s" in web
    # servers: every state, weights, connect latency, sparkline
    assert "up" in row(text, "web-1") and "750µs" in row(text, "web-1")
    assert "39.3ms" in row(text, "web-1")
    assert "down" in row(text, "web-2")
    assert "draining" in row(text, "web-3")
    assert "slow_start" in row(text, "web-4")
    assert "(b" in row(text, "web-spare")
    assert " 5 " in row(text, "api-1")
    assert any(c in row(text, "web-1") for c in SPARKS[1:])
    assert SPARKS[0] * 3 in row(text, "web-4")  # no traffic: the flat line
    # pool lines and events
    assert any(x.startswith("web ") and "3/5 up" in x for x in lines)
    assert any("server_down" in x and "web/web-2 up -> down (http: 503)" in x for x in lines)
    assert any("reload_failed" in x for x in lines)
    assert "q quit" in lines[-1]


def test_wide_frame_has_the_detail_columns():
    text = render_to_text(SNAPSHOT, 160, 48)
    assert "10.0.0.12:8080" in row(text, "web-2")
    assert "http: 503" in row(text, "web-2") and "31s" in row(text, "web-2")
    assert "least_conn" in text
    narrow = render_to_text(SNAPSHOT, 80, 24)
    assert "10.0.0.12:8080" not in narrow and "CHANGED" not in narrow


def test_changed_counts_a_drain():
    # web-3 was drained 21s before the snapshot; its health never changed.
    assert row(render_to_text(SNAPSHOT, 160, 48), "web-3").split()[-2] == "21s"


def demo_like_snapshot(events: bool) -> dict:
    """The quick start's listeners: two addresses each, the widest case at 80 columns."""
    snap = dict(SNAPSHOT, events=SNAPSHOT["events"] if events else [])
    snap["listeners"] = [
        dict(lst, bind=["127.0.0.1:40933", "[::1]:40933"], protocol="https", req_rate=1234.0)
        for lst in SNAPSHOT["listeners"]
    ]
    return snap


@pytest.mark.parametrize("events", [True, False])
@pytest.mark.parametrize(("width", "height"), [(80, 24), (120, 32)])
def test_at_common_sizes_nothing_is_cut_and_the_footer_is_last(width, height, events):
    text = render_to_text(demo_like_snapshot(events), width, height)
    lines = lines_of(text)
    assert len(lines) == height and "q quit" in lines[-1]
    head = next(x for x in lines if x.startswith("LISTENER"))
    assert head.split() == [
        "LISTENER", "PROTO", "ADDRESS", "ACTIVE", "CONN/S", "REQ/S", "IN/S", "OUT/S"
    ]  # fmt: skip
    (web,) = [x for x in lines if x.startswith("web ") and "https" in x]
    assert web.split()[-3:] == ["1.2k", "351.6K/s", "14.6M/s"]
    assert "127.0.0.1:40933" in web
    # The health check column the README promises, at every size.
    assert "CHECK" in next(x for x in lines if x.startswith("SERVER"))
    assert "503" in row(text, "web-2") and "200" in row(text, "web-4")


def test_sparkline_spans_the_last_minute_at_every_width():
    wide = row(render_to_text(SNAPSHOT, 160, 48), "web-1")
    narrow = row(render_to_text(SNAPSHOT, 80, 24), "web-1")
    count = lambda s: sum(s.count(c) for c in SPARKS)  # noqa: E731
    assert count(wide) > count(narrow) >= 8


def test_state_colours():
    console = Console(width=160, height=48, color_system="truecolor")
    colours: dict[str, set[str]] = {}
    for segment in console.render(render(SNAPSHOT, 160, 48)):
        if segment.style is not None and segment.style.color is not None:
            colours.setdefault(segment.text.strip(), set()).add(segment.style.color.name)
    assert "green" in colours["up"]
    assert colours["down"] == {"red"}
    assert colours["draining"] == {"yellow"}
    assert colours["slow_start"] == {"cyan"}


def test_backup_rows_are_dim_and_selection_is_reverse():
    console = Console(width=80, height=24, color_system="truecolor")
    styles: dict[str, list] = {}
    for segment in console.render(render(SNAPSHOT, 80, 24, selected=1)):
        if segment.style is not None:
            styles.setdefault(segment.text.strip(), []).append(segment.style)
    assert any(style.dim for style in styles["web-spare (b)"])
    assert any(style.reverse for style in styles["web-2"])
    assert not any(style.reverse for style in styles.get("web-1", []))


def test_many_servers_scroll_to_the_selection():
    snap = dict(SNAPSHOT)
    pool = dict(snap["pools"][0])
    pool["servers"] = [dict(pool["servers"][0], name=f"s{i:02d}") for i in range(40)]
    snap["pools"] = [pool]
    text = render_to_text(snap, 80, 24, selected=30)
    lines = lines_of(text)
    assert len(lines) <= 24
    assert any(x.startswith("  s30 ") for x in lines)
    assert not any(x.startswith("  s00 ") for x in lines)
    assert any("above" in x for x in lines) and any("below" in x for x in lines)


def test_filter_shows_only_matching_servers():
    text = render_to_text(SNAPSHOT, 80, 24, filter="down")
    assert "web-2" in text and "web-1" not in text and "api-1" not in text
    assert "[filter: down]" in text
    assert "no servers match" in render_to_text(SNAPSHOT, 80, 24, filter="nothing-like-this")


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=40, max_value=240), st.integers(min_value=12, max_value=80))
def test_any_size_fits(width, height):
    lines = lines_of(render_to_text(SNAPSHOT, width, height))
    assert len(lines) <= height
    assert all(cell_len(line) <= width for line in lines)


def test_empty_snapshot_renders():
    text = render_to_text({}, 80, 24)
    assert "no listeners" in text and "no servers" in text


# -- sparkline -------------------------------------------------------------------------------


def test_sparkline_scales_to_the_maximum():
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7], 8) == "▁▂▃▄▅▆▇█"
    assert sparkline([0, 0, 0], 10) == "▁▁▁"
    assert sparkline([0, 0.001, 100], 3) == "▁▂█"  # a trickle is not nothing
    assert sparkline([], 10) == ""
    assert sparkline([1.0] * 60, 12) == "█" * 12  # averaged in groups of five
    assert len(sparkline(list(range(60)), 7)) == 7


# -- ViewState -------------------------------------------------------------------------------


def test_keys_move_select_and_act():
    view = ViewState()
    view.update(SNAPSHOT)
    assert [r[1] for r in view.rows][:2] == ["web-1", "web-2"]
    assert view.handle_key("d") == ("drain", "web", "web-1")
    assert view.handle_key("down") is None
    assert view.handle_key("e") == ("enable", "web", "web-2")
    view.handle_key("end")
    assert view.handle_key("d") == ("drain", "api", "api-1")
    view.handle_key("down")  # stays on the last row
    assert view.selected == len(view.rows) - 1
    view.handle_key("home")
    view.handle_key("up")
    assert view.selected == 0
    assert view.handle_key("q") == "quit"


def test_filter_editing():
    view = ViewState()
    view.update(SNAPSHOT)
    view.handle_key("/")
    for key in "api-q":  # "q" types into the filter instead of quitting
        assert view.handle_key(key) is None
    view.handle_key("backspace")
    view.handle_key("backspace")
    assert view.filter == "api"
    text = render_to_text(SNAPSHOT, 80, 24, selected=view.selected, filter=view.filter)
    assert "api-1" in text and "web-1" not in text
    view.handle_key("enter")
    assert view.handle_key("d") == ("drain", "api", "api-1")
    view.handle_key("escape")
    assert view.filter == "" and len(view.rows) == 6


def test_visible_servers_matches_address_and_state():
    assert [s["name"] for _, s in visible_servers(SNAPSHOT, "10.0.1.")] == ["api-1"]
    assert [s["name"] for _, s in visible_servers(SNAPSHOT, "DRAIN")] == ["web-3"]


def test_plain_summary_for_top_without_a_terminal():
    from l4lb.plainview import plain_summary

    lines = plain_summary(SNAPSHOT).splitlines()
    assert lines[0].startswith("l4lb 0.1.0 pid 4242 up 17m41s config site.toml reloads=0 at ")
    assert lines[0].endswith("Z")
    assert "listener web tcp 0.0.0.0:80,[::]:80 active=0 conn/s=70" in lines[1]
    assert "pool web round_robin 3/5 up" in lines
    down = [x for x in lines if x.startswith("  server ") and " down " in x]
    assert down == [
        "  server web/web-2 10.0.0.12:8080 down weight=1 active=0 conn/s=8.0 p50=- p99=- "
        'check="http: 503" changed=31s'
    ]
    assert any(x.startswith("event ") and "reload_failed" in x for x in lines)
    assert "\x1b" not in "\n".join(lines)


def test_listener_protocol_shows_http2_in_use():
    from l4lb.tui import _proto

    assert _proto({"protocol": "https"}, wide=True) == "https"
    assert _proto({"protocol": "https", "h2_connections": 3}, wide=False) == "https+h2"
    seen = {"protocol": "https", "h2_connections": 3, "h2_resets": 7}
    assert _proto(seen, wide=True) == "https+h2 rst 7"
