"""The pid file: atomic write, stale files overwritten, a live l4lb's file refused."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from l4lb.errors import L4lbError
from l4lb.pidfile import PidFile, is_l4lb, read_pid


def started(proc: subprocess.Popen) -> int:
    """The pid of `proc` once its command line is visible (it is empty for a moment after
    the fork, and l4lb treats a process it cannot identify as a running l4lb)."""
    deadline = time.monotonic() + 5
    while not Path(f"/proc/{proc.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc.pid


def test_write_then_remove(tmp_path):
    path = tmp_path / "l4lb.pid"
    pid_file = PidFile(str(path))
    pid_file.claim()
    assert not path.exists()  # claimed, not written: nothing is serving yet
    pid_file.write()
    assert path.read_text() == f"{os.getpid()}\n"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    pid_file.remove()
    assert not path.exists()


def test_remove_leaves_a_file_another_process_took_over(tmp_path):
    path = tmp_path / "l4lb.pid"
    pid_file = PidFile(str(path))
    pid_file.write()
    path.write_text("1\n")
    pid_file.remove()
    assert path.read_text() == "1\n"


def test_stale_and_garbage_files_are_overwritten(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = tmp_path / "l4lb.pid"
    for text in (f"{dead.pid}\n", "not a pid\n", ""):
        path.write_text(text)
        pid_file = PidFile(str(path))
        pid_file.claim()
        pid_file.write()
        assert read_pid(path) == os.getpid()


def test_a_live_process_that_is_not_l4lb_is_stale(tmp_path):
    with subprocess.Popen(["sleep", "30"]) as other:
        try:
            path = tmp_path / "l4lb.pid"
            path.write_text(f"{started(other)}\n")
            assert not is_l4lb(other.pid)
            PidFile(str(path)).claim()
        finally:
            other.kill()


def test_a_running_l4lb_is_refused(tmp_path):
    code = "import sys, time; time.sleep(30)"
    with subprocess.Popen([sys.executable, "-c", code, "l4lb", "up"]) as running:
        try:
            path = tmp_path / "l4lb.pid"
            path.write_text(f"{started(running)}\n")
            with pytest.raises(L4lbError, match=f"already running as pid {running.pid}"):
                PidFile(str(path)).claim()
        finally:
            running.kill()


def test_unwritable_folder_is_refused_at_claim(tmp_path):
    with pytest.raises(L4lbError, match="--pid-file"):
        PidFile(str(tmp_path / "missing" / "l4lb.pid")).claim()
