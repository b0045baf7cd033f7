"""The admin API's routing and redaction, without sockets (tests/e2e/test_admin.py covers the
HTTP side with a real client)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from l4lb.admin import AdminApp, Request, redact
from l4lb.config import Address, load_text
from l4lb.stats import Stats
from tests.unit.snapshots import CONFIG, make_runtime


@dataclass(frozen=True)
class TlsConfig:
    cert_file: str
    key: str
    key_password: str
    session_ticket_keys: tuple[str, ...]


@dataclass(frozen=True)
class Upstream:
    address: Address
    tls: TlsConfig | None
    api_token: str = ""
    keepalive: int = 30


def app(token: str | None = None, config=None) -> AdminApp:
    rt = make_runtime()
    if config is not None:
        rt.config = config
    rt.reload = lambda: False
    return AdminApp(rt, Stats(0.0, 0.0), token, clock=lambda: 5.0)


def body(response) -> dict:
    return json.loads(response.body)


def test_config_json_redacts_secrets_and_keeps_the_rest():
    config = Upstream(
        Address("::1", 443),
        TlsConfig("/etc/cert.pem", "-----BEGIN KEY", "hunter2", ("k1", "k2")),
        api_token="abc",
    )
    got = body(app(config=config).handle(Request("GET", "/config")))
    assert got == {
        "address": "[::1]:443",
        "tls": {
            "cert_file": "/etc/cert.pem",
            "key": "<redacted>",
            "key_password": "<redacted>",
            "session_ticket_keys": "<redacted>",
        },
        "api_token": "<redacted>",
        "keepalive": 30,  # "keep" is not "key"
    }


def test_real_config_as_json():
    got = body(app(config=load_text(CONFIG, "x.toml")).handle(Request("GET", "/config")))
    assert got["listeners"][0]["bind"] == ["127.0.0.1:8080", "[::1]:8080"]
    assert got["pools"][0]["servers"][1] == {
        "name": "b",
        "address": "127.0.0.1:9002",
        "weight": 1,
        "backup": True,
        "max_connections": 0,
        "drain": False,
        "verify_name": "",
    }


def test_redact_leaves_empty_secrets_visible():
    assert redact({"password": "", "secret": None, "list": [{"token": "t"}]}) == {
        "password": "",
        "secret": None,
        "list": [{"token": "<redacted>"}],
    }


def test_routes_statuses():
    a = app()
    assert a.handle(Request("GET", "/status")).status == 200
    assert a.handle(Request("GET", "/metrics")).content_type.startswith("text/plain; version=0.0.4")
    assert a.handle(Request("GET", "/nope")).status == 404
    r = a.handle(Request("DELETE", "/status"))
    assert r.status == 405 and ("Allow", "GET, HEAD") in r.headers
    r = a.handle(Request("POST", "/servers/api/zz/drain"))
    assert r.status == 404 and "zz" in body(r)["error"]
    r = a.handle(Request("POST", "/servers/api/a/drain"))
    assert r.status == 200 and body(r)["state"] == "draining"
    assert a.runtime.pools["api"].servers[0].draining
    r = a.handle(Request("POST", "/reload"))
    assert r.status == 409 and body(r)["reloaded"] is False


def test_bearer_token():
    a = app(token="t0k")
    r = a.handle(Request("GET", "/status"))
    assert r.status == 401 and ("WWW-Authenticate", 'Bearer realm="l4lb"') in r.headers
    assert a.handle(Request("GET", "/status", {"authorization": "Basic t0k"})).status == 401
    assert a.handle(Request("GET", "/status", {"authorization": "Bearer t0kk"})).status == 401
    assert a.handle(Request("GET", "/status", {"authorization": "bearer t0k"})).status == 200
