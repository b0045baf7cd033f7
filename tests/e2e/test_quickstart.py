"""The README's quick start, run for real: configs/site.toml (on free ports instead of its
fixed ones) answers the way the README shows."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from l4lb.cluster import resolve_workers
from l4lb.config import load
from tests.e2e.helpers import free_port

SITE = Path(__file__).parents[2] / "configs" / "site.toml"


def curl(url: str, *args: str) -> str:
    done = subprocess.run(
        ["curl", "-sS", "--max-time", "10", *args, url], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_demo_runs_one_process():
    """The README shows strict rotation; with one worker per CPU each worker rotates on its
    own and consecutive requests can repeat a backend."""
    assert resolve_workers(load(SITE).settings.workers, cpus=8) == 1


def test_quick_start_answers_as_the_readme_shows(proxy):
    text = SITE.read_text()
    ports = {old: str(free_port()) for old in ("8080", "8443", "9900", "9101", "9102", "9103")}
    text = re.sub(r"\b(8080|8443|9900|910[123])\b", lambda m: ports[m.group(1)], text)
    p = proxy(text)
    web = f"http://127.0.0.1:{ports['8080']}/"
    answers = [curl(web) for _ in range(3)]
    assert answers == [f"demo-{i} at 127.0.0.1:{ports[f'910{i}']}" for i in (1, 2, 3)]
    assert curl(web).startswith("demo-1 ")  # round again
    cert = p.path.parent / "var" / "demo.crt"
    tls = curl(f"https://localhost:{ports['8443']}/", "--cacert", str(cert))
    assert re.fullmatch(r"demo-[123] at 127\.0\.0\.1:\d+", tls)
