"""`l4lb reload`: ask a running instance to reload, wait for the outcome, print it.

Two ways in, one way to learn the outcome. `POST /reload` (the default) or, with
`--pid-file PATH`, SIGHUP to the pid in PATH (what an init script or systemd's `ExecReload`
has at hand). Either way the answer is read from the admin API's `/status`: `config.
reload_attempts` counts reloads whose outcome is known, `config.reloading` is true while a
supervisor waits for its workers, and `config.last_reload_error` is empty after a success.
So `l4lb reload` returns once every worker has applied (or refused) the new config, not when
the signal was sent, and exits 1 with the errors when it was refused: as `nginx -s reload`
cannot, and as `systemctl reload` needs to report a failure.

Without a reachable admin API a signal can still be sent, but nothing tells the outcome: that
case says so and exits 0 (the signal went out); the log has the result.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from l4lb.adminclient import AdminClient
from l4lb.errors import L4lbError
from l4lb.pidfile import is_l4lb, read_pid

__all__ = ["reload_instance"]

POLL_INTERVAL = 0.1


def _config(client: AdminClient) -> dict[str, Any]:
    status = client.ok("GET", "/status")
    return status if isinstance(status, dict) else {}


def _attempts(status: dict[str, Any]) -> int | None:
    value = status.get("config", {}).get("reload_attempts")
    return value if isinstance(value, int) else None


def _wait(client: AdminClient, before: int, timeout: float) -> dict[str, Any]:
    """The `/status` config once a reload after `before` has finished. Raises L4lbError on
    timeout."""
    deadline = time.monotonic() + timeout
    while True:
        config = _config(client).get("config", {})
        if config.get("reload_attempts", 0) > before and not config.get("reloading", False):
            return config
        if time.monotonic() > deadline:
            raise L4lbError(f"no reload outcome within {timeout:g}s; see l4lb's log")
        time.sleep(POLL_INTERVAL)


def _print_outcome(config: dict[str, Any]) -> int:
    error = config.get("last_reload_error", "")
    if error:
        print(f"reload refused; the previous config keeps running:\n{error}", file=sys.stderr)
        return 1
    print(f"reloaded (reload {config.get('reloads')})")
    return 0


def reload_instance(client: AdminClient, pid_path: str | None, timeout: float) -> int:
    """Reload the instance behind `client` (or the one `pid_path` names) and wait up to
    `timeout` seconds for the outcome. Returns the exit code; raises L4lbError when the
    instance cannot be reached or told."""
    if pid_path is None:
        before = _attempts(_config(client))
        code, data = client.call("POST", "/reload")
        if code != 200:
            error = data.get("error") if isinstance(data, dict) else data
            print(f"reload refused; the previous config keeps running:\n{error}", file=sys.stderr)
            return 1
        if before is None:  # an instance older than reload_attempts: the answer is all we have
            print(f"reloaded (reload {data.get('reloads')})")
            return 0
        return _print_outcome(_wait(client, before, timeout))
    pid = read_pid(pid_path)
    if pid is None:
        raise L4lbError(f"--pid-file {pid_path}: no pid in it (is l4lb running?)")
    if not is_l4lb(pid):
        raise L4lbError(f"--pid-file {pid_path}: pid {pid} is not a running l4lb")
    try:
        status: dict[str, Any] | None = _config(client)
    except L4lbError:
        status = None
    if status is not None and status.get("pid") not in (None, pid):
        raise L4lbError(
            f"the admin API at {client.address} belongs to pid {status.get('pid')}, not to "
            f"pid {pid} from {pid_path} (--admin ADDR picks another)"
        )
    before = _attempts(status) if status is not None else None
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise L4lbError(f"cannot signal pid {pid}: {exc.strerror or exc}") from None
    if before is None:
        print(
            f"SIGHUP sent to pid {pid}; no admin API at {client.address} to read the outcome "
            "from: see l4lb's log",
            file=sys.stderr,
        )
        return 0
    return _print_outcome(_wait(client, before, timeout))
