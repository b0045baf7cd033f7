"""The open-files warning: when the limit per process cannot cover the listeners'
`max_connections` (2 descriptors each), the message says how many fit and what to change."""

from __future__ import annotations

from l4lb.config import load_text
from l4lb.fdlimit import needed, nofile_warning

CONFIG = """
[listener.a]
bind = "127.0.0.1:8001"
pool = "p"
max_connections = 9000

[listener.b]
bind = "127.0.0.1:8002"
pool = "p"
max_connections = 1000

[pool.p]
[[pool.p.servers]]
address = "127.0.0.1:9000"
"""


def test_needed_counts_two_descriptors_per_connection_of_every_listener():
    config = load_text(CONFIG, "site.toml", resolve=False)
    assert needed(config) == 2 * 10_000 + 100


def test_warning_below_the_need_names_what_fits_and_what_to_change():
    config = load_text(CONFIG, "site.toml", resolve=False)
    msg = nofile_warning(config, 1024)
    assert msg is not None
    assert "limit is 1024" in msg and "about 462 connections" in msg
    assert "not the 10000" in msg and "LimitNOFILE" in msg and "add workers" in msg


def test_no_warning_when_the_limit_covers_the_listeners():
    config = load_text(CONFIG, "site.toml", resolve=False)
    assert nofile_warning(config, 20_100) is None
    assert nofile_warning(config, 18_100) is None  # 9,000 of 10,000 fit: close enough
    assert nofile_warning(config, 18_000) is not None
    assert nofile_warning(config, 1_048_576) is None
