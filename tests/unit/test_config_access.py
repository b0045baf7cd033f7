"""`[listener.NAME.access]` and a route's `access`: ranges inline and from files, located errors."""

from __future__ import annotations

import pytest

from l4lb.config import load
from l4lb.errors import ConfigErrors

BASE = """\
[listener.web]
bind = "127.0.0.1:8080"
pool = "api"
{extra}
[pool.api]
[[pool.api.servers]]
address = "127.0.0.1:9001"
"""


def _load(tmp_path, extra: str):
    path = tmp_path / "site.toml"
    path.write_text(BASE.format(extra=extra))
    return load(path)


def _errors(tmp_path, extra: str) -> str:
    with pytest.raises(ConfigErrors) as info:
        _load(tmp_path, extra)
    return "\n".join(str(e) for e in info.value.errors)


def test_ranges_and_files_merge(tmp_path):
    (tmp_path / "deny.txt").write_text("# blocked\n192.0.2.7\n\n2001:db8::/32  # docs\n")
    config = _load(
        tmp_path,
        '[listener.web.access]\nallow = ["10.0.0.0/8"]\ndeny = ["10.6.0.0/16"]\n'
        'deny_file = "deny.txt"\nmax_per_client = 5\nrate_per_client = 10\n',
    )
    access = config.listeners[0].access
    assert access.allow == ("10.0.0.0/8",)
    assert access.deny == ("10.6.0.0/16", "192.0.2.7/32", "2001:db8::/32")
    assert access.max_per_client == 5 and access.rate_per_client == 10


def test_no_access_table_is_empty(tmp_path):
    assert not _load(tmp_path, "").listeners[0].access


def test_bad_range_is_located(tmp_path):
    text = _errors(tmp_path, '[listener.web.access]\ndeny = ["10.0.0.300"]\n')
    assert "listener.web.access.deny" in text and "'10.0.0.300' is not an address range" in text


def test_bad_line_in_a_file_names_the_file_and_its_line(tmp_path):
    (tmp_path / "allow.txt").write_text("10.0.0.0/8\nbogus\n")
    text = _errors(tmp_path, '[listener.web.access]\nallow_file = "allow.txt"\n')
    assert "listener.web.access.allow_file" in text and "allow.txt:2: 'bogus'" in text


def test_missing_file(tmp_path):
    text = _errors(tmp_path, '[listener.web.access]\ndeny_file = "nope.txt"\n')
    assert "cannot read 'nope.txt'" in text


def test_unknown_key(tmp_path):
    text = _errors(tmp_path, "[listener.web.access]\nmax_per_clients = 5\n")
    assert "did you mean 'max_per_client'" in text
