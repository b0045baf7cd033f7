"""contrib/l4lb.service passes `systemd-analyze verify` (skipped where systemd is absent)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).parents[2] / "contrib" / "l4lb.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_unit_verifies_without_a_warning(tmp_path):
    # verify checks that the ExecStart binaries exist: point them at this checkout's l4lb.
    l4lb = Path(sys.executable).with_name("l4lb")
    unit = tmp_path / "l4lb.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/l4lb", str(l4lb)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_unit_has_what_operators_look_for():
    keys = dict(line.split("=", 1) for line in UNIT.read_text().splitlines() if "=" in line[:40])
    assert keys["Type"] == "notify" and "l4lb reload --pid-file" in keys["ExecReload"]
    assert keys["CapabilityBoundingSet"] == keys["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert keys["LimitNOFILE"] == "1048576" and keys["Restart"] == "on-failure"
    assert keys["ProtectSystem"] == "strict" and keys["NoNewPrivileges"] == "yes"
