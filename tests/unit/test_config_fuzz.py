"""Whatever a config file holds, loading it ends in a Config or in ConfigErrors: never in
another exception (a traceback is a bug, DESIGN.md)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from l4lb.config.lines import LineMap
from l4lb.config.load import _Loader

KEYS = [
    "listener",
    "pool",
    "global",
    "admin",
    "demo",
    "web",
    "p",
    "bind",
    "pool",
    "protocol",
    "servers",
    "address",
    "weight",
    "health",
    "passive",
    "routes",
    "sni",
    "certs",
    "http",
    "tls",
    "balance",
    "path_prefix",
    "redirect",
    "respond",
    "headers",
    "query",
    "status",
    "to",
    "name",
    "host",
    "methods",
    "max_body",
    "retry_on",
    "workers",
    "token",
]
scalars = st.one_of(
    st.none().map(lambda _: ""),
    st.booleans(),
    st.integers(-5, 70000),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(
        [
            "127.0.0.1:80",
            ":8080",
            "[::1]:1",
            "tcp",
            "http",
            "tls",
            "5s",
            "x",
            "*.a.b",
            "round_robin",
            "/a",
            "GET",
            "2xx",
            "10m",
            "h11",
            "v2",
        ]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    ),
    max_leaves=25,
)
documents = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)


@settings(max_examples=300, deadline=None)
@given(documents)
def test_any_document_loads_or_explains(data):
    loader = _Loader("fuzz.toml", LineMap(""))
    loader.config(data)  # must not raise; problems go to loader.errors
    for error in loader.errors:
        assert str(error).startswith("fuzz.toml")


def table(keys: list[str]) -> st.SearchStrategy:
    return st.fixed_dictionaries({}, optional={k: st.one_of(scalars, values) for k in keys})


listener_tables = table(
    [
        "bind",
        "pool",
        "protocol",
        "routes",
        "http",
        "certs",
        "accept_proxy",
        "alpn",
        "client_ca",
        "client_cert",
        "max_connections",
    ]
)
route_tables = table(
    [
        "sni",
        "pool",
        "host",
        "path_prefix",
        "path",
        "path_regex",
        "redirect",
        "respond",
        "headers",
        "query",
        "methods",
        "strip_prefix",
        "request_headers",
        "response_headers",
    ]
)
pool_tables = table(
    [
        "servers",
        "balance",
        "health",
        "passive",
        "http",
        "tls",
        "retries",
        "proxy_protocol",
        "slow_start",
    ]
)
shaped = st.fixed_dictionaries(
    {
        "listener": st.dictionaries(
            st.sampled_from(["web", "a"]),
            st.one_of(
                listener_tables,
                listener_tables.map(
                    lambda t: (
                        {**t, "routes": [{"pool": "p"}, *t.get("routes", [])]}
                        if isinstance(t.get("routes", []), list)
                        else t
                    )
                ),
            ),
            max_size=2,
        ),
        "pool": st.dictionaries(
            st.sampled_from(["p", "q"]),
            st.one_of(
                pool_tables,
                st.builds(
                    lambda s, t: {**t, "servers": s},
                    st.lists(
                        st.one_of(
                            scalars,
                            table(
                                ["address", "name", "weight", "backup", "drain", "max_connections"]
                            ),
                        ),
                        max_size=3,
                    ),
                    pool_tables,
                ),
            ),
            max_size=2,
        ),
    },
    optional={
        "global": table(["workers", "log_format", "drain_timeout"]),
        "admin": table(["bind", "token", "token_env"]),
    },
)


@settings(max_examples=400, deadline=None)
@given(shaped, st.data())
def test_shaped_documents_load_or_explain(doc, data):
    for listener in doc["listener"].values():
        if isinstance(listener.get("routes"), list) and data.draw(st.booleans()):
            listener["routes"] = data.draw(st.lists(route_tables, max_size=3))
    loader = _Loader("fuzz.toml", LineMap(""))
    loader.config(doc)
