"""`${VAR}` expansion and `include`: what the merged config holds, and located errors."""

from __future__ import annotations

import pytest

from l4lb.config import load, load_text
from l4lb.config.envvars import expand_env
from l4lb.errors import ConfigErrors

BASE = """\
[listener.web]
bind = "127.0.0.1:${L4LB_T_PORT:-8080}"
pool = "api"

[pool.api]
servers = ["127.0.0.1:9001"]
"""


def errors_of(path) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load(path)
    return [str(e) for e in info.value.errors]


def test_expand_env_replaces_refs_in_values_only():
    env = {"A": "x", "EMPTY": ""}
    data = {"k": "${A}-${A}", "l": ["${B:-d}", "${EMPTY:-e}"], "${A}": "$${A}", "n": 3}
    out, problems = expand_env(data, env)
    assert out == {"k": "x-x", "l": ["d", "e"], "${A}": "${A}", "n": 3}
    assert problems == []


def test_expand_env_reports_unset_bad_and_unclosed():
    out, problems = expand_env({"a": "${NOPE}", "b": ["${1x}"], "c": "${OPEN"}, {})
    assert out == {"a": "${NOPE}", "b": ["${1x}"], "c": "${OPEN"}
    assert [p for p, _ in problems] == [["a"], ["b", 0], ["c"]]
    assert "NOPE is not set" in problems[0][1]


def test_env_values_reach_the_config(monkeypatch):
    monkeypatch.setenv("L4LB_T_PORT", "8181")
    monkeypatch.setenv("L4LB_T_TOKEN", "s3cret")
    text = '[admin]\nbind = "127.0.0.1:9900"\ntoken = "${L4LB_T_TOKEN}"\n' + BASE
    config = load_text(text, "site.toml")
    assert str(config.listeners[0].bind[0]) == "127.0.0.1:8181"
    assert config.admin.token == "s3cret"
    monkeypatch.delenv("L4LB_T_PORT")
    assert str(load_text(BASE).listeners[0].bind[0]) == "127.0.0.1:8080"


def test_unset_variable_is_a_located_error(monkeypatch):
    monkeypatch.delenv("L4LB_T_TOKEN", raising=False)
    text = BASE + '\n[admin]\nbind = "127.0.0.1:9900"\ntoken = "${L4LB_T_TOKEN}"\n'
    with pytest.raises(ConfigErrors) as info:
        load_text(text, "site.toml")
    (error,) = info.value.errors
    assert str(error).startswith(
        "site.toml:10: admin.token: the environment variable L4LB_T_TOKEN is not set"
    )


def test_include_glob_and_directory_merge_tables(tmp_path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "pools").mkdir()
    (tmp_path / "site.toml").write_text(
        'include = ["conf.d/*.toml", "pools"]\n[listener.web]\nbind = "127.0.0.1:8080"\n'
        'pool = "api"\n'
    )
    (tmp_path / "conf.d" / "20-b.toml").write_text(
        '[listener.b]\nbind = "127.0.0.1:8082"\npool = "web"\n'
    )
    (tmp_path / "conf.d" / "10-a.toml").write_text('[global]\nlog_format = "json"\n')
    (tmp_path / "pools" / "api.toml").write_text('[pool.api]\nservers = ["127.0.0.1:9001"]\n')
    (tmp_path / "pools" / "web.toml").write_text('[pool.web]\nservers = ["127.0.0.1:9002"]\n')
    (tmp_path / "pools" / "notes.txt").write_text("not toml")
    config = load(tmp_path / "site.toml")
    assert [lc.name for lc in config.listeners] == ["web", "b"]
    assert [p.name for p in config.pools] == ["api", "web"]
    assert config.settings.log_format == "json"


def test_a_table_defined_twice_names_both_files_and_lines(tmp_path):
    (tmp_path / "site.toml").write_text('include = "more.toml"\n\n' + BASE)
    (tmp_path / "more.toml").write_text('# again\n[pool.api]\nservers = ["127.0.0.1:9003"]\n')
    (error,) = errors_of(tmp_path / "site.toml")
    assert error.startswith(
        f"{tmp_path}/more.toml:2: pool.api: [pool.api] is already defined in "
        f"{tmp_path / 'site.toml'}:7"
    )


def test_errors_in_an_included_file_point_into_it(tmp_path):
    (tmp_path / "site.toml").write_text('include = ["d/*.toml"]\n' + BASE)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.toml").write_text('[pool.x]\n\nservers = ["127.0.0.1:9"]\nwieght = 3\n')
    (tmp_path / "d" / "y.toml").write_text("[pool.y\n")
    errors = errors_of(tmp_path / "site.toml")
    assert errors == [
        f"{tmp_path}/d/y.toml:1:8: not valid TOML: Expected ']' at the end of a table declaration"
    ]
    (tmp_path / "d" / "y.toml").unlink()
    (error,) = errors_of(tmp_path / "site.toml")
    assert error.startswith(f"{tmp_path}/d/x.toml:4: pool.x.wieght: unknown key 'wieght'")


def test_missing_include_and_cycles_are_errors(tmp_path):
    (tmp_path / "site.toml").write_text('include = ["nope.toml", "b.toml"]\n' + BASE)
    (tmp_path / "b.toml").write_text('include = "site.toml"\n')
    errors = errors_of(tmp_path / "site.toml")
    assert errors[0].startswith(f"{tmp_path / 'site.toml'}:1: include: 'nope.toml' does not exist")
    assert "site.toml is included twice" in errors[1]
    assert errors[1].startswith(f"{tmp_path}/b.toml:1: include:")
