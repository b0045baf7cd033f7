from __future__ import annotations

from l4lb.admin import config_json
from l4lb.config import load, load_text
from l4lb.plan import plan, summary

OLD = """\
[listener.web]
bind = "127.0.0.1:8080"
pool = "app"
[listener.gone]
bind = "127.0.0.1:8081"
pool = "app"
[pool.app]
servers = ["127.0.0.1:9001", "127.0.0.1:9002"]
"""

NEW = """\
[listener.web]
bind = ["127.0.0.1:8080", "[::1]:8080"]
pool = "app"
idle_timeout = "1m"
[listener.extra]
bind = "127.0.0.1:8082"
pool = "other"
[pool.app]
balance = "least_conn"
[[pool.app.servers]]
address = "127.0.0.1:9001"
weight = 5
[[pool.app.servers]]
address = "127.0.0.1:9003"
[pool.other]
servers = ["127.0.0.1:9100"]
"""


def test_plan_lists_every_change():
    lines = plan(config_json(load_text(OLD)), config_json(load_text(NEW)))
    assert lines == [
        "+ listener extra: tcp on 127.0.0.1:8082",
        "- listener gone: stops accepting; its connections finish",
        "~ listener web: bind ['127.0.0.1:8080'] -> ['127.0.0.1:8080', '[::1]:8080']",
        "~ listener web: idle_timeout 300.0 -> 60.0",
        "+ pool other: round_robin over 127.0.0.1:9100",
        "~ pool app: balance 'round_robin' -> 'least_conn'",
        "+ server app/127.0.0.1:9003: 127.0.0.1:9003",
        "- server app/127.0.0.1:9002: drains, then leaves",
        "~ server app/127.0.0.1:9001: weight 1 -> 5",
    ]


def test_no_changes():
    same = config_json(load_text(OLD))
    assert plan(same, same) == []


def test_keys_decode():
    from l4lb.console import decode_keys

    assert decode_keys("\x1b[A\x1b[Bjd/ab\x7f\r\x1bq") == [
        "up",
        "down",
        "j",
        "d",
        "/",
        "a",
        "b",
        "backspace",
        "enter",
        "escape",
        "q",
    ]


def test_unchanged_certificate_is_not_removed_and_added(tmp_path, monkeypatch):
    """The running instance was started as `l4lb up site.toml`, the plan asked with an
    absolute path (or the other way round): the same certificate file, written two ways."""
    (tmp_path / "site.toml").write_text(
        '[listener.s]\nbind = "127.0.0.1:8443"\nprotocol = "tls"\npool = "p"\n'
        '[[listener.s.certs]]\ncert = "var/../var/s.crt"\nkey = "var/s.key"\nselfsigned = true\n'
        '[pool.p]\nservers = ["127.0.0.1:9001"]\n'
    )
    monkeypatch.chdir(tmp_path)
    running = config_json(load("site.toml"))
    lines = plan(running, config_json(load(tmp_path / "site.toml")))
    assert lines == [f"~ listener s: certificate files re-read: {tmp_path / 'var' / 's.crt'}"]


def test_summary_is_one_line():
    lines = plan(config_json(load_text(OLD)), config_json(load_text(NEW)))
    text = summary(lines, limit=2)
    assert "\n" not in text
    assert text == f"{len(lines)} changes: {lines[0]}; {lines[1]}; and {len(lines) - 2} more"
    assert summary(lines[:1]) == f"1 change: {lines[0]}"
    assert summary([]) == "no changes"
