"""The live view as plain text: what `l4lb top` prints when it has no terminal to draw on
(`ssh host l4lb top` without -t, a pipe, cron) or with `--once`.

Pure: a function of one `/status` snapshot. One line per listener, pool, server and recent
event, words and `key=value` pairs rather than columns, so the output reads in a mail and
greps well (`l4lb top --once | grep ' down '`), as HAProxy's `show stat` does for scripts.
Times are UTC with a Z, as in the logs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from l4lb.tui import _bytes_rate, _duration, _latency, _rate, cache_line, edge_lines

__all__ = ["plain_summary"]


def _stamp(wall: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


def plain_summary(snapshot: Mapping[str, Any], events: int = 5) -> str:
    """Several lines, no colours, no trailing newline; the last `events` events."""
    config = snapshot.get("config", {})
    reloads = config.get("reloads", 0)
    lines = [
        f"l4lb {snapshot.get('version', '')} pid {snapshot.get('pid', '')} "
        f"up {_duration(snapshot.get('uptime', 0))} config {config.get('file', '') or '-'} "
        f"reloads={reloads} at {_stamp(snapshot.get('time', 0))}"
    ]
    for lst in snapshot.get("listeners", ()):
        http = lst.get("protocol") in ("http", "https")
        lines.append(
            f"listener {lst['name']} {lst.get('protocol', '')} {','.join(lst.get('bind', ()))} "
            f"active={lst.get('active', 0)} conn/s={_rate(lst.get('conn_rate', 0.0))} "
            + (f"req/s={_rate(lst.get('req_rate', 0.0))} " if http else "")
            + f"in={_bytes_rate(lst.get('bytes_in_rate', 0.0))} "
            f"out={_bytes_rate(lst.get('bytes_out_rate', 0.0))}"
        )
    lines += [cache_line(cache) for cache in snapshot.get("caches", ())]
    lines += edge_lines(snapshot.get("listeners", ()))
    for pool in snapshot.get("pools", ()):
        servers = pool.get("servers", ())
        lines.append(
            f"pool {pool['name']} {pool.get('balance', '')} "
            f"{pool.get('servers_up', 0)}/{len(servers)} up"
        )
        for s in servers:
            check = f' check="{s["check"]}"' if s.get("check") else ""
            lines.append(
                f"  server {pool['name']}/{s['name']} {s.get('address', '')} {s['state']}"
                + (" backup" if s.get("backup") else "")
                + f" weight={s.get('weight', 1)} active={s.get('active', 0)}"
                f" conn/s={_rate(s.get('conn_rate', 0.0))}"
                f" p50={_latency(s.get('connect_p50'))} p99={_latency(s.get('connect_p99'))}"
                f"{check} changed={_duration(s.get('last_change_ago', 0))}"
            )
    for ev in list(snapshot.get("events", ()))[:events]:
        lines.append(f"event {_stamp(ev.get('time', 0))} {ev.get('kind', '')} {ev.get('text', '')}")
    return "\n".join(lines)
