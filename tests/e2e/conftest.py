from __future__ import annotations

import pytest

from tests.e2e.helpers import Backend, Proxy
from tests.e2e.httpbackend import HttpBackend


@pytest.fixture
def backends():
    made: list[Backend] = []

    def make(*names: str, mode: str = "echo") -> list[Backend]:
        new = [Backend(n, mode) for n in names]
        made.extend(new)
        return new

    yield make
    for b in made:
        b.stop()


@pytest.fixture
def proxy(tmp_path):
    started: list[Proxy] = []

    def start(config: str, **kw) -> Proxy:
        p = Proxy(tmp_path, config, **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait()


@pytest.fixture
def http_backends():
    made: list[HttpBackend] = []

    def make(*names: str) -> list[HttpBackend]:
        new = [HttpBackend(n) for n in names]
        made.extend(new)
        return new

    make.add = made.append  # type: ignore[attr-defined]  # one made by the test, closed here
    yield make
    for b in made:
        b.close()
