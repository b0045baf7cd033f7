"""access_log_format, log targets, reopenable log files and [global] ops settings."""

from __future__ import annotations

import io
import os
import pwd

import pytest

from l4lb.accesslog import AccessLog, compile_format
from l4lb.config import load_text
from l4lb.errors import ConfigErrors
from l4lb.logfiles import LogFile
from l4lb.logtarget import parse_target

BASE = '[listener.l]\nbind = "127.0.0.1:8080"\npool = "p"\n[pool.p]\nservers = ["127.0.0.1:1"]\n'


def request(log: AccessLog, **kw) -> str:
    args = dict(
        client=("192.0.2.7", 5555),
        listener="web",
        method="GET",
        host="example.com",
        path="/a?b=1",
        status=200,
        bytes_out=12,
        route="r",
        server="p/s1",
        connect=0.001,
        response=0.0125,
        total=0.02,
        request_id="abc",
        retries=0,
        version="1.1",
    )
    args.update(kw)
    log.write_http(**args)
    return log.stream.getvalue()  # type: ignore[attr-defined]


def test_access_log_format_writes_nginx_variables():
    fmt = (
        '$remote_addr:$remote_port "$request" $status $bytes_sent $upstream_addr '
        "$request_time $upstream_response_time $request_id $http_version {x} $$"
    )
    log = AccessLog("text", io.StringIO(), template=fmt)
    assert request(log) == (
        '192.0.2.7:5555 "GET /a?b=1 HTTP/1.1" 200 12 p/s1 0.020 0.013 abc 1.1 {x} $\n'
    )
    log = AccessLog("text", io.StringIO(), template="$upstream_connect_time $server_protocol")
    assert request(log, connect=-1.0, version="2") == "- HTTP/2\n"


def test_json_ignores_the_template():
    log = AccessLog("json", io.StringIO(), template="$status")
    assert '"type": "request"' in request(log)


@pytest.mark.parametrize("bad", ["$nope", "cost $", "$ 5"])
def test_bad_formats_are_refused(bad):
    with pytest.raises(ValueError):
        compile_format(bad)


def test_bad_format_is_a_located_config_error():
    with pytest.raises(ConfigErrors) as info:
        load_text('[global]\naccess_log_format = "$remote_addr $stauts"\n' + BASE, "s.toml")
    (error,) = info.value.errors
    assert str(error).startswith(
        "s.toml:2: global.access_log_format: unknown variable $stauts (allowed: $remote_addr"
    )


def test_parse_target():
    assert parse_target("stderr") == ("stderr", "")
    assert parse_target("syslog") == ("syslog", "/dev/log")
    assert parse_target("syslog:/run/log") == ("syslog", "/run/log")
    assert parse_target("syslog:127.0.0.1:514") == ("syslog", ("127.0.0.1", 514))
    assert parse_target("syslog:[::1]:1514") == ("syslog", ("::1", 1514))
    for bad in ("file", "syslog:", "syslog:host", "syslog:h:99999"):
        with pytest.raises(ValueError):
            parse_target(bad)


def test_global_settings_validate():
    root = pwd.getpwuid(0).pw_name
    text = (
        f'[global]\naccess_log = "logs/access.log"\nlog = "syslog:127.0.0.1:514"\n'
        f'log_facility = "local0"\nuser = "{root}"\ngroup = "0"\n' + BASE
    )
    settings = load_text(text, "/etc/l4lb/site.toml").settings
    assert settings.access_log == "/etc/l4lb/logs/access.log"
    assert (settings.log, settings.log_facility) == ("syslog:127.0.0.1:514", "local0")
    bad = '[global]\nuser = "no-such-user-x"\ngroup = "no-such-group-x"\nlog = "kafka"\n'
    with pytest.raises(ConfigErrors) as info:
        load_text(bad + BASE, "s.toml")
    assert [str(e).split(" (")[0] for e in info.value.errors] == [
        "s.toml:2: global.user: no user 'no-such-user-x' on this host",
        "s.toml:3: global.group: no group 'no-such-group-x' on this host",
        "s.toml:4: global.log: 'kafka' is not a log target",
    ]


def test_log_file_reopen_follows_the_path(tmp_path):
    path = tmp_path / "access.log"
    file = LogFile(str(path))
    file.write("one\n")
    os.rename(path, tmp_path / "access.log.1")
    file.write("two\n")  # still the old (renamed) file, as logrotate expects until signalled
    assert file.reopen()
    file.write("three\n")
    file.flush()
    assert (tmp_path / "access.log.1").read_text() == "one\ntwo\n"
    assert path.read_text() == "three\n"
    (tmp_path / "access.log").unlink()
    tmp_path.joinpath("access.log").mkdir()  # cannot be opened: keep the old file
    assert not file.reopen()
    file.write("four\n")
    file.close()
