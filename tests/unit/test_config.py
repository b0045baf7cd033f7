"""Config validation: every kind of error names file, key path, line and what is allowed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from l4lb.config import load, load_text
from l4lb.errors import ConfigErrors

GOOD = """\
[global]
log_format = "json"
drain_timeout = "5s"

[listener.web]
bind = ["127.0.0.1:8080", "[::1]:8080"]
pool = "api"
idle_timeout = "90s"

[pool.api]
balance = "least_conn"
connect_timeout = "250ms"
slow_start = "30s"

[pool.api.health]
type = "http"
path = "/healthz"
expect_status = ["2xx", 301]

[[pool.api.servers]]
address = "127.0.0.1:9001"
weight = 3

[[pool.api.servers]]
address = "127.0.0.1:9002"
name = "b"
backup = true
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load_text(text, "site.toml")
    return [str(e) for e in info.value.errors]


def replace(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


def test_good_config_loads_into_typed_values():
    config = load_text(GOOD, "site.toml")
    (listener,) = config.listeners
    assert [str(a) for a in listener.bind] == ["127.0.0.1:8080", "[::1]:8080"]
    assert listener.idle_timeout == 90.0
    pool = config.pool("api")
    assert pool.balance == "least_conn" and pool.connect_timeout == 0.25
    assert pool.slow_start == 30.0
    assert pool.health is not None and pool.health.expect_status == ((200, 299), (301, 301))
    assert [s.name for s in pool.servers] == ["127.0.0.1:9001", "b"]
    assert pool.servers[0].weight == 3 and pool.servers[1].backup
    assert config.settings.log_format == "json" and config.settings.drain_timeout == 5.0


def test_server_out_of_range_names_path_line_and_allowed():
    text = replace('name = "b"', 'name = "b"\nweight = 0')
    assert errors_of(text) == [
        "site.toml:27: pool.api.servers[1].weight: 0 is out of range (allowed: 1 to 1000)"
    ]


def test_unknown_key_suggests_the_right_one():
    (err,) = errors_of(replace("slow_start", "slowstart"))
    assert err.startswith(
        "site.toml:13: pool.api.slowstart: unknown key 'slowstart'; did you mean 'slow_start'?"
    )
    assert "allowed: servers, balance, connect_timeout" in err


def test_unknown_top_level_table():
    (err,) = errors_of(GOOD + "\n[pools.x]\nservers = []\n")
    assert "pools: unknown key 'pools'; did you mean 'pool'?" in err
    assert err.startswith("site.toml:29:")


def test_bad_duration_and_type():
    errs = errors_of(replace('"250ms"', '"fast"').replace("weight = 3", 'weight = "3"'))
    assert errs == [
        "site.toml:12: pool.api.connect_timeout: 'fast' is not a duration (allowed: a duration "
        'such as "250ms", "5s", "2m", "1h", or a number of seconds)',
        "site.toml:22: pool.api.servers[0].weight: expected a whole number, got '3' "
        "(allowed: 1 to 1000)",
    ]


def test_missing_required_key():
    (err,) = errors_of(replace('pool = "api"\n', ""))
    assert err == "site.toml:5: listener.web.pool: missing required key 'pool'"


def test_listener_names_a_missing_pool():
    (err,) = errors_of(replace('pool = "api"', 'pool = "apj"'))
    assert err.startswith(
        "site.toml:7: listener.web.pool: no pool named 'apj'; did you mean 'api'?"
    )


def test_unknown_algorithm_lists_the_known_ones():
    (err,) = errors_of(replace('"least_conn"', '"fastest"'))
    assert err == (
        "site.toml:11: pool.api.balance: unknown algorithm 'fastest' (allowed: hash, "
        "least_conn, random_two, round_robin, weighted_round_robin)"
    )


def test_bad_addresses():
    errs = errors_of(
        replace('"[::1]:8080"', '"example.com:8080"').replace("127.0.0.1:9002", "127.0.0.1:99999")
    )
    assert errs[0].startswith("site.toml:6: listener.web.bind: 'example.com' is not an IP address")
    assert errs[1] == (
        "site.toml:25: pool.api.servers[1].address: '127.0.0.1:99999' has no "
        "valid port (allowed: a port from 1 to 65535)"
    )


def test_toml_syntax_error_has_a_line_and_column():
    (err,) = errors_of(replace("weight = 3", "weight = = 3"))
    assert err == "site.toml:22:10: not valid TOML: Invalid value"


def test_misspelled_algorithm_gets_a_did_you_mean():
    (err,) = errors_of(replace('"least_conn"', '"leastconn"'))
    assert err.startswith(
        "site.toml:11: pool.api.balance: unknown algorithm 'leastconn'; did you mean 'least_conn'?"
    )


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("127.0.0.300:8101", "'127.0.0.300:8101': '127.0.0.300' is not an IPv4 address"),
        ("no such host:80", "'no such host:80': 'no such host' is not a host name"),
        ("-db.lan:80", "'-db.lan:80': '-db.lan' is not a host name"),
        ("db.invalid:5432", "cannot resolve 'db.invalid': the .invalid domain never resolves"),
    ],
)
def test_server_addresses_that_cannot_be_used_are_located_errors(address, message):
    """As `haproxy -c` and `nginx -t`: a server that could never be reached fails the check,
    instead of loading and going down at run time. `.invalid` never reaches a resolver."""
    (err,) = errors_of(replace("127.0.0.1:9002", address))
    assert err.startswith(f"site.toml:25: pool.api.servers[1].address: {message}"), err


def test_server_names_are_resolved_at_load_unless_asked_not_to():
    text = replace("127.0.0.1:9002", "localhost:9002")  # /etc/hosts: no network
    assert str(load_text(text).pool("api").servers[1].address) == "localhost:9002"
    unresolvable = replace("127.0.0.1:9002", "db.invalid:9002")
    errors_of(unresolvable)
    config = load_text(unresolvable, resolve=False)  # a worker: its supervisor checked
    assert config.pool("api").servers[1].address.host == "db.invalid"


def test_all_errors_reported_at_once():
    text = (
        replace("weight = 3", "weight = -1")
        .replace('"http"', '"grpc"')
        .replace("drain_timeout", "drain_timout")
    )
    errs = errors_of(text)
    assert len(errs) == 3
    assert [e.split(":")[1] for e in errs] == ["3", "16", "22"]


def test_duplicate_binds_and_server_names():
    text = GOOD + '\n[listener.again]\nbind = "127.0.0.1:8080"\npool = "api"\n'
    text = text.replace('name = "b"', 'name = "127.0.0.1:9001"')
    errs = errors_of(text)
    assert any("pool.api.servers[1].name: duplicate server name" in e for e in errs)
    assert any(
        "listener.again.bind: 127.0.0.1:8080 is already bound by listener 'web'" in e for e in errs
    )


def test_health_timeout_longer_than_interval():
    (err,) = errors_of(
        replace('path = "/healthz"', 'path = "/healthz"\ninterval = "1s"\ntimeout = "2s"')
    )
    assert "pool.api.health.timeout: the check timeout is longer than the interval" in err


def test_servers_as_plain_strings():
    text = (
        '[listener.l]\nbind = ":9000"\npool = "p"\n[pool.p]\n'
        'servers = ["127.0.0.1:1", "localhost:2"]\n'
    )
    config = load_text(text)
    assert [s.name for s in config.pool("p").servers] == ["127.0.0.1:1", "localhost:2"]
    assert str(config.listeners[0].bind[0]) == "0.0.0.0:9000"


def test_inline_table_servers_have_lines():
    text = (
        '[listener.l]\nbind = ":9000"\npool = "p"\n[pool.p]\nservers = [\n'
        '  { address = "127.0.0.1:1" },\n  { address = "127.0.0.1:2", weight = "x" },\n]\n'
    )
    (err,) = errors_of(text)
    assert err.startswith("site.toml:7: pool.p.servers[1].weight:")


def test_demo_backends_must_be_loopback():
    text = GOOD + '\n[demo]\nbackends = ["127.0.0.1:9101", "10.0.0.1:80"]\n'
    (err,) = errors_of(text)
    assert "demo.backends[1]: '10.0.0.1:80' is not a loopback address" in err


def test_no_listeners():
    (err,) = errors_of('[pool.p]\nservers = ["127.0.0.1:1"]\n')
    assert "no listeners" in err


def test_missing_file(tmp_path):
    with pytest.raises(ConfigErrors) as info:
        load(tmp_path / "nope.toml")
    assert str(info.value).endswith("nope.toml: file not found")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "l4lb", *args], capture_output=True, text=True, timeout=30
    )


def test_cli_check_good_and_bad(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    result = run_cli("check", str(good))
    assert result.returncode == 0
    assert "OK (1 listener(s), 1 pool(s), 2 server(s))" in result.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text(replace("weight = 3", "wieght = 3"))
    result = run_cli("check", str(bad))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert (
        "bad.toml:22: pool.api.servers[0].wieght: unknown key 'wieght'; did you mean "
        "'weight'?" in result.stderr
    )
    assert result.stderr.strip().endswith("1 error in " + str(bad))


def test_cli_up_with_bad_config_exits_cleanly(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[listener.x]\n")
    result = run_cli("up", str(bad))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "listener.x.bind: missing required key 'bind'" in result.stderr


def test_cli_version_and_help():
    assert run_cli("--version").stdout.startswith("l4lb ")
    assert "check" in run_cli("--help").stdout
    assert "SIGHUP" in run_cli("up", "--help").stdout


def test_shipped_configs_validate():
    from pathlib import Path

    for path in sorted(Path(__file__).parents[2].joinpath("configs").glob("*.toml")):
        load(path)


PASSTHROUGH = """\
[listener.tls]
bind = ":8443"
protocol = "tls-passthrough"
accept_proxy = true

[[listener.tls.routes]]
sni = ["api.example.com", "*.api.example.com"]
pool = "api"

[[listener.tls.routes]]
sni = "Web.Example.com."
alpn = ["h2"]
pool = "api"

[pool.api]
servers = ["127.0.0.1:9443"]
proxy_protocol = "v2"
"""


def test_passthrough_routes_load():
    config = load_text(PASSTHROUGH)
    (listener,) = config.listeners
    assert listener.pool is None and listener.accept_proxy
    assert [r.sni for r in listener.routes] == [
        ("api.example.com", "*.api.example.com"),
        ("web.example.com",),
    ]
    assert listener.routes[1].alpn == ("h2",)
    assert config.pool("api").proxy_protocol == "v2"


def test_route_errors_are_located():
    text = PASSTHROUGH.replace('pool = "api"\n\n[[', 'pool = "apx"\n\n[[').replace(
        '"Web.Example.com."', '"web..example.com"'
    )
    errs = errors_of(text)
    assert errs == [
        "site.toml:11: listener.tls.routes[1].sni: 'web..example.com' is not a host name "
        '(allowed: host names such as "api.example.com" or "*.example.com")',
    ]
    errs = errors_of(PASSTHROUGH.replace('pool = "api"\n\n[[', 'pool = "apx"\n\n[['))
    assert errs == [
        "site.toml:8: listener.tls.routes[0].pool: no pool named 'apx'; did you "
        "mean 'api'? (allowed: api)"
    ]


def test_tcp_listener_rejects_routes_and_passthrough_needs_a_target():
    errs = errors_of(PASSTHROUGH.replace('"tls-passthrough"', '"tcp"'))
    assert errs[0].startswith("site.toml:6: listener.tls.routes: a tcp listener has no routes")
    text = (
        '[listener.t]\nbind = ":1"\nprotocol = "tls-passthrough"\n'
        '[pool.p]\nservers = ["127.0.0.1:1"]\n'
    )
    assert "listener.t.routes: no routes and no default pool" in errors_of(text)[0]


def test_admin_off_loopback_needs_a_token(monkeypatch):
    base = '[listener.l]\nbind = ":1"\npool = "p"\n[pool.p]\nservers = ["127.0.0.1:2"]\n'
    (err,) = errors_of('[admin]\nbind = "0.0.0.0:9900"\n' + base)
    assert err.startswith("site.toml:2: admin.bind: 0.0.0.0:9900 is reachable from other hosts")
    assert load_text('[admin]\nbind = "0.0.0.0:9900"\ntoken = "t"\n' + base).admin.token == "t"
    (err,) = errors_of('[admin]\nbind = "0.0.0.0:9900"\ntoken_env = "L4LB_TEST_TOKEN"\n' + base)
    assert "L4LB_TEST_TOKEN is not set" in err
    monkeypatch.setenv("L4LB_TEST_TOKEN", "x")
    config = load_text('[admin]\nbind = "0.0.0.0:9900"\ntoken_env = "L4LB_TEST_TOKEN"\n' + base)
    assert config.admin.token_env == "L4LB_TEST_TOKEN"


def test_cli_route_explains(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text(
        '[listener.web]\nbind = ":8081"\nprotocol = "http"\npool = "web"\n'
        '[[listener.web.routes]]\nname = "api"\nhost = "api.example.com"\npath_prefix = "/v1/"\n'
        'strip_prefix = "/v1"\npool = "api"\n'
        '[pool.api]\nservers = ["127.0.0.1:1"]\n[pool.web]\nservers = ["127.0.0.1:2"]\n'
    )
    hit = run_cli("route", str(path), "GET", "http://api.example.com/v1/users")
    assert hit.returncode == 0, hit.stderr
    assert (
        "route[0] 'api': matched\n  forward to pool 'api' with path rewritten to /users"
        in hit.stdout
    )
    path_only = run_cli("route", str(path), "GET", "/v1/users", "-H", "Host: api.example.com")
    assert path_only.returncode == 0, path_only.stderr
    assert "route[0] 'api': matched" in path_only.stdout
    no_host = run_cli("route", str(path), "GET", "/v1/users")
    assert no_host.returncode == 1 and "add -H 'Host: NAME'" in no_host.stderr
    miss = run_cli("route", str(path), "GET", "http://www.example.com/", "-H", "X-A: b")
    assert "host 'www.example.com' is not api.example.com" in miss.stdout
    assert miss.stdout.strip().endswith("forward to pool 'web' (the listener's pool)")


UPSTREAM_TLS = """\
[listener.l]
bind = "127.0.0.1:1"
pool = "p"

[pool.p]
servers = [{ address = "127.0.0.1:2", verify_name = "one.internal" }, "127.0.0.1:3"]

[pool.p.tls]
verify_name = "Backend.Internal."
"""


def test_upstream_tls_verify_modes_and_names_load():
    tls_of = lambda text: load_text(text, "site.toml").pool("p").tls  # noqa: E731
    tls = tls_of(UPSTREAM_TLS)
    assert tls.verify == "name" and tls.verify_name == "backend.internal" and tls.sni == ""
    servers = load_text(UPSTREAM_TLS, "site.toml").pool("p").servers
    assert [s.verify_name for s in servers] == ["one.internal", ""]
    bare = UPSTREAM_TLS.replace('verify_name = "one.internal"', "weight = 1")
    assert tls_of(bare.replace('verify_name = "Backend.Internal."', 'verify = "chain"')).verify == (
        "chain"
    )
    assert tls_of(bare.replace('verify_name = "Backend.Internal."', "verify = false")).verify == (
        "none"
    )
    assert tls_of(UPSTREAM_TLS.replace('"Backend.Internal."', '"[::1]"')).verify_name == "::1"


def test_upstream_tls_contradictions_are_located():
    pool_name = 'verify_name = "Backend'
    chain = UPSTREAM_TLS.replace(pool_name, 'verify = "chain"\n' + pool_name)
    assert errors_of(chain) == [
        "site.toml:6: pool.p.servers[0].verify_name: verify_name is set but the pool's tls has "
        'verify = "chain" (allowed: verify_name on servers of a pool whose tls has verify = true)',
        'site.toml:10: pool.p.tls.verify_name: verify_name is set but verify = "chain" checks no '
        "name (allowed: verify = true (the default) with verify_name, or no verify_name)",
    ]
    no_tls = UPSTREAM_TLS.split("[pool.p.tls]")[0]
    assert errors_of(no_tls) == [
        "site.toml:6: pool.p.servers[0].verify_name: verify_name is set but the pool has no "
        "[pool.p.tls] table (allowed: verify_name on servers of a pool whose tls has verify = "
        "true)"
    ]
    off = UPSTREAM_TLS.replace('verify_name = "Backend.Internal."', "verify = false")
    assert errors_of(off)[0].startswith(
        "site.toml:6: pool.p.servers[0].verify_name: verify_name is set but the pool's tls has "
        "verify = false"
    )
    for bad, why in [
        ('"yes"', "'yes' is not a verification mode"),
        ("1", "1 is not a verification mode"),
    ]:
        text = UPSTREAM_TLS.replace('verify_name = "Backend', f'verify = {bad}\nverify_name = "B')
        assert errors_of(text) == [
            f'site.toml:9: pool.p.tls.verify: {why} (allowed: true (chain and name), "chain" '
            "(chain only), false (nothing))"
        ]
    for bad in ('"*.internal"', '"two words"', '""', "7"):
        (err,) = errors_of(UPSTREAM_TLS.replace('"Backend.Internal."', bad))
        assert err.startswith("site.toml:9: pool.p.tls.verify_name: ") and "allowed" in err


HTTP = """\
[listener.web]
bind = "127.0.0.1:8080"
protocol = "http"
pool = "p"

[listener.web.http]
{options}

[[pool.p.servers]]
address = "127.0.0.1:9001"
"""


def test_upgrades_and_x_forwarded_for_defaults_and_values():
    (listener,) = load_text(HTTP.format(options=""), "site.toml").listeners
    assert listener.http.upgrades == ("websocket",)
    assert listener.http.x_forwarded_for == "append"
    text = HTTP.format(options='upgrades = ["WebSocket", "foo"]\nx_forwarded_for = "replace"')
    (listener,) = load_text(text, "site.toml").listeners
    assert listener.http.upgrades == ("websocket", "foo")
    assert listener.http.x_forwarded_for == "replace"
    (listener,) = load_text(HTTP.format(options="upgrades = []"), "site.toml").listeners
    assert listener.http.upgrades == ()


@pytest.mark.parametrize(
    "options, wanted",
    [
        ('upgrades = ["h2c"]', "never tunnelled"),
        ('upgrades = "websocket"', "list of protocol names"),
        ('upgrades = ["web socket"]', "not a protocol name"),
        ('x_forwarded_for = "prepend"', "append, replace"),
    ],
)
def test_upgrades_and_x_forwarded_for_errors(options, wanted):
    (error,) = errors_of(HTTP.format(options=options))
    assert "site.toml" in error and "listener.web.http." in error and wanted in error
    assert ":7" in error or "line 7" in error


STAGES = """
[listener.web]
bind = "127.0.0.1:8080"
protocol = "http"
pool = "p"
%s
[pool.p]
servers = [{address = "127.0.0.1:9001"}]
"""


def test_compress_shapes():
    from l7.compress import CompressConfig

    assert load_text(STAGES % "compress = true").listeners[0].compress == CompressConfig()
    lc = load_text(STAGES % 'compress = ["gzip"]').listeners[0]
    assert lc.compress.encodings == ("gzip",)
    lc = load_text(STAGES % '[listener.web.compress]\nlevels = {gzip = 2}\nmin_length = "1k"\n')
    assert lc.listeners[0].compress.levels["gzip"] == 2
    assert lc.listeners[0].compress.min_length == 1024


def test_compress_errors_are_located():
    assert errors_of(STAGES % 'compress = ["gzip", "lzma"]') == [
        "site.toml:6: listener.web.compress[1]: unknown encoding 'lzma'"
        ' (allowed: a list of "zstd", "br", "gzip" in preference order)'
    ]
    (err,) = errors_of(STAGES % "[listener.web.compress]\nlevels = {br = 12}\n")
    assert "listener.web.compress.levels.br: 12 is out of range" in err
    (err,) = errors_of(STAGES % '[listener.web.compress]\ntypes = ["html"]\n')
    assert "listener.web.compress.types: 'html' is not a media type" in err
    (err,) = errors_of(STAGES.replace('"http"', '"tcp"') % "compress = true")
    assert "only http(s) listeners compress" in err


CACHED = STAGES.replace(
    'pool = "p"\n%s', 'pool = "p"\n[[listener.web.routes]]\npool = "p"\ncache = "c"\n%s'
)


def test_cache_collapse_timeout():
    text = CACHED % '[cache.c]\nmax_bytes = "1m"\n'
    (c,) = load_text(text).listeners[0].caches
    assert c.collapse_timeout == 5.0
    text = CACHED % '[cache.c]\nmax_bytes = "1m"\ncollapse_timeout = 0\n'
    assert load_text(text).listeners[0].caches[0].collapse_timeout == 0.0
    (err,) = errors_of(CACHED % '[cache.c]\nmax_bytes = "1m"\ncollapse_timeout = "soon"\n')
    assert "site.toml:" in err and "cache.c.collapse_timeout" in err
