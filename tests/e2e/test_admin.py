"""The admin API end to end: the real Runtime and serve_admin in this process, real backends,
and the standard library's HTTP client over 127.0.0.1."""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from l4lb import __version__, admin
from l4lb.accesslog import AccessLog
from l4lb.admin import serve_admin
from l4lb.config import LISTENER_PROTOCOLS, load
from l4lb.runtime import Runtime
from l4lb.stats import Stats
from tests.e2e.helpers import Backend, free_port, name_of, pool_toml

TOKEN = "s3cret-admin-token"


@pytest.fixture
def anyio_backend():
    return "asyncio"


@dataclass
class Running:
    runtime: Runtime
    stats: Stats
    admin_port: int
    port: int  # the listener's
    path: Path
    backends: list[Backend]
    token: str | None = None

    def request(
        self,
        method: str,
        path: str,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a new connection (blocking: run it in a thread)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        try:
            sent = dict(headers or {})
            if token is not None:
                sent["Authorization"] = f"Bearer {token}"
            conn.request(method, path, headers=sent)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    async def call(self, method: str, path: str, **kw) -> tuple[int, dict[str, str], bytes]:
        return await anyio.to_thread.run_sync(partial(self.request, method, path, **kw))

    async def json(self, method: str, path: str, status: int = 200, **kw) -> dict:
        got, headers, body = await self.call(method, path, **kw)
        assert got == status, body
        assert headers["content-type"] == "application/json"
        return json.loads(body)

    async def server(self, pool: str, name: str) -> dict:
        snap = await self.json("GET", "/status", token=self.token)
        (found,) = [
            s for p in snap["pools"] if p["name"] == pool for s in p["servers"] if s["name"] == name
        ]
        return found


def config_text(port: int, backends: list[Backend], health: bool = True) -> str:
    options: dict[str, object] = {"connect_timeout": '"1s"'}
    if health:
        # Quick enough for the down test; two misses in a row, so load does not flap it.
        options["health"] = {"type": '"tcp"', "interval": '"300ms"', "timeout": '"300ms"'}
        options["health"].update({"rise": 1, "fall": 2})
    return (
        '[global]\ndrain_timeout = "1s"\n\n'
        f'[listener.front]\nbind = "127.0.0.1:{port}"\npool = "p"\n\n'
        + pool_toml("p", backends, **options)
    )


async def _ticker(runtime: Runtime, stats: Stats) -> None:
    """What the runtime's housekeeping will do: sample the stats (faster here, for tests)."""
    while True:
        stats.tick(runtime, anyio.current_time())
        await anyio.sleep(0.2)


@asynccontextmanager
async def running(
    tmp_path: Path, token: str | None = None, extra: str = ""
) -> AsyncIterator[Running]:
    backends = [Backend("b1"), Backend("b2")]
    port = free_port()
    path = tmp_path / "l4lb.toml"
    path.write_text(config_text(port, backends) + extra)
    access_log = AccessLog("text", io.StringIO())
    access_log.enabled = False
    runtime = Runtime(load(path), access_log)
    stats = Stats(anyio.current_time(), time.time())
    done = anyio.Event()

    async def run() -> None:
        try:
            await runtime.run()
        finally:
            done.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            with anyio.fail_after(5):
                while not runtime.listeners:
                    await anyio.sleep(0.01)
            tg.start_soon(_ticker, runtime, stats)
            admin_port = await tg.start(serve_admin, runtime, stats, "127.0.0.1", 0, token)
            r = Running(runtime, stats, admin_port, port, path, backends, token)
            try:
                yield r
            finally:
                runtime.stop()
                with anyio.fail_after(10):
                    await done.wait()
                tg.cancel_scope.cancel()
    finally:
        for b in backends:
            b.stop()


async def through_proxy(r: Running) -> str:
    return await anyio.to_thread.run_sync(name_of, r.port)


# -- tests -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_status_reports_the_running_proxy(tmp_path):
    async with running(tmp_path) as r:
        assert await through_proxy(r) in ("b1", "b2")
        await anyio.sleep(0.3)  # a tick after the connection
        snap = await r.json("GET", "/status")
        assert snap["version"] == __version__ and snap["pid"] == os.getpid()
        assert snap["config"]["file"] == str(r.path) and snap["config"]["reloads"] == 0
        assert snap["uptime"] > 0
        (front,) = snap["listeners"]
        assert front["name"] == "front" and front["protocol"] == "tcp"
        assert front["bind"] == [f"127.0.0.1:{r.port}"] and front["total"] == 1
        (pool,) = snap["pools"]
        assert [s["name"] for s in pool["servers"]] == ["b1", "b2"]
        b1 = pool["servers"][0]
        assert b1["address"] == r.backends[0].address
        assert b1["state"] == "up" and b1["weight"] == 1 and b1["draining"] is False
        assert sum(s["total"] for s in pool["servers"]) == 1
        assert isinstance(b1["history"], list) and "connect_p50" in b1


@pytest.mark.anyio
async def test_metrics_parse(tmp_path):
    async with running(tmp_path) as r:
        await through_proxy(r)
        status, headers, body = await r.call("GET", "/metrics")
        assert status == 200
        assert headers["content-type"].startswith("text/plain; version=0.0.4")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        }
        assert samples[("l4lb_listener_connections_total", (("listener", "front"),))] == 1
        assert samples[("l4lb_info", (("version", __version__),))] == 1
        ups = [samples[("l4lb_server_up", (("pool", "p"), ("server", b)))] for b in ("b1", "b2")]
        assert ups == [1, 1]
        totals = [
            samples[("l4lb_server_connections_total", (("pool", "p"), ("server", b)))]
            for b in ("b1", "b2")
        ]
        assert sum(totals) == 1


@pytest.mark.anyio
async def test_drain_then_enable(tmp_path):
    async with running(tmp_path) as r:
        got = await r.json("POST", "/servers/p/b1/drain")
        assert got == {
            "pool": "p",
            "server": "b1",
            "draining": True,
            "state": "draining",
            "active": 0,
        }
        assert r.runtime.pools["p"].servers[0].draining is True
        assert (await r.server("p", "b1"))["state"] == "draining"
        assert {await through_proxy(r) for _ in range(4)} == {"b2"}
        got = await r.json("POST", "/servers/p/b1/enable")
        assert got["draining"] is False and got["state"] == "up"
        assert r.runtime.pools["p"].servers[0].draining is False
        assert (await r.server("p", "b1"))["state"] == "up"
        assert {await through_proxy(r) for _ in range(4)} == {"b1", "b2"}


@pytest.mark.anyio
async def test_unknown_names_paths_and_methods(tmp_path):
    async with running(tmp_path) as r:
        err = await r.json("POST", "/servers/p/nope/drain", status=404)
        assert "nope" in err["error"]
        err = await r.json("POST", "/servers/nope/b1/enable", status=404)
        assert "nope" in err["error"]
        await r.json("GET", "/nothing-here", status=404)
        status, headers, _ = await r.call("GET", "/servers/p/b1/drain")
        assert status == 405 and headers["allow"] == "POST"
        status, headers, _ = await r.call("POST", "/status")
        assert status == 405 and headers["allow"] == "GET, HEAD"
        status, headers, body = await r.call("HEAD", "/status")
        assert status == 200 and body == b"" and int(headers["content-length"]) > 0


@pytest.mark.anyio
async def test_token_is_required_when_set(tmp_path):
    async with running(tmp_path, token=TOKEN) as r:
        status, headers, body = await r.call("GET", "/status")
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")
        assert "token" in json.loads(body)["error"]
        status, _, _ = await r.call("GET", "/status", token="wrong")
        assert status == 401
        status, _, _ = await r.call("GET", "/nothing-here")
        assert status == 401  # paths are not revealed without the token
        status, _, _ = await r.call("POST", "/servers/p/b1/drain")
        assert status == 401 and r.runtime.pools["p"].servers[0].draining is False
        status, _, body = await r.call("GET", "/status", token=TOKEN)
        assert status == 200 and json.loads(body)["listeners"]


@pytest.mark.anyio
async def test_reload_applies_and_reports_errors(tmp_path):
    async with running(tmp_path) as r:
        assert await r.json("POST", "/reload") == {"reloaded": True, "reloads": 1}
        assert r.runtime.reloads == 1
        await anyio.sleep(0.3)
        snap = await r.json("GET", "/status")
        assert snap["config"]["reloads"] == 1
        assert any(e["kind"] == "reload" for e in snap["events"])
        good = r.path.read_text()
        r.path.write_text(good.replace('pool = "p"', 'pool = "missing"'))
        err = await r.json("POST", "/reload", status=409)
        assert err["reloaded"] is False and "missing" in err["error"]
        assert r.runtime.reloads == 1
        assert await through_proxy(r) in ("b1", "b2")  # still serving the old config
        status, headers, _ = await r.call("GET", "/reload")
        assert status == 405 and headers["allow"] == "POST"


@pytest.mark.anyio
async def test_config_is_the_running_config(tmp_path):
    async with running(tmp_path, token=TOKEN) as r:
        conf = await r.json("GET", "/config", token=TOKEN)
        assert conf["file"] == str(r.path)
        (front,) = conf["listeners"]
        assert front["bind"] == [f"127.0.0.1:{r.port}"] and front["pool"] == "p"
        (pool,) = conf["pools"]
        assert [s["address"] for s in pool["servers"]] == [b.address for b in r.backends]
        assert pool["health"]["interval"] == 0.3 and pool["health"]["fall"] == 2
        assert TOKEN not in json.dumps(conf)


@pytest.mark.skipif("tls" not in LISTENER_PROTOCOLS, reason="no TLS listeners in this build")
@pytest.mark.anyio
async def test_config_redacts_key_material(tmp_path):
    secure = (
        f'[listener.secure]\nbind = "127.0.0.1:{free_port()}"\nprotocol = "tls"\npool = "p"\n'
        f'[[listener.secure.certs]]\ncert = "{tmp_path}/site.crt"\nkey = "{tmp_path}/site.key"\n'
        'selfsigned = true\nnames = ["localhost"]\n'
    )
    async with running(tmp_path, extra=secure) as r:
        conf = await r.json("GET", "/config")
        (secure_conf,) = [lc for lc in conf["listeners"] if lc["name"] == "secure"]
        (cert,) = secure_conf["certs"]
        assert cert["cert"].endswith("site.crt")
        assert cert["key"] == "<redacted>"
        assert "site.key" not in json.dumps(conf)


@pytest.mark.anyio
async def test_server_going_down_is_an_event(tmp_path):
    async with running(tmp_path) as r:
        r.backends[1].stop()
        with anyio.fail_after(10):
            while (await r.server("p", "b2"))["state"] != "down":
                await anyio.sleep(0.1)
        snap = await r.json("GET", "/status")
        (b2,) = [s for s in snap["pools"][0]["servers"] if s["name"] == "b2"]
        assert b2["up"] is False and b2["check"].startswith("tcp:")
        assert any(e["kind"] == "server_down" and "p/b2" in e["text"] for e in snap["events"])


def _raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send `data` as is and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except OSError:
            pass
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
        return out


@pytest.mark.anyio
async def test_bad_input_is_answered_not_fatal(tmp_path, monkeypatch):
    monkeypatch.setattr(admin, "READ_TIMEOUT", 0.3)
    async with running(tmp_path) as r:
        raw = partial(_raw, r.admin_port)
        got = await anyio.to_thread.run_sync(raw, b"\x00\x01garbage\r\n\r\n")
        assert got.startswith(b"HTTP/1.1 400 ")
        huge = b"GET /status HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
        got = await anyio.to_thread.run_sync(raw, huge)
        assert got.startswith(b"HTTP/1.1 431 ")
        body = b"POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
        got = await anyio.to_thread.run_sync(raw, body)
        assert got.startswith(b"HTTP/1.1 413 ") and r.runtime.reloads == 0
        # A client that sends half a request is cut off after the read timeout.
        started = time.monotonic()
        got = await anyio.to_thread.run_sync(raw, b"GET /status HTTP/1.1\r\nHo")
        assert got == b"" and time.monotonic() - started < 3
        # Two requests on one keep-alive connection, then the server still answers.
        two = b"GET /status HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        got = await anyio.to_thread.run_sync(raw, two)
        assert got.count(b"HTTP/1.1 200 ") == 2 and b"l4lb_info" in got
        assert (await r.json("GET", "/status"))["pid"] == os.getpid()
