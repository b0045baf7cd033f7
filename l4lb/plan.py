"""`l4lb plan`: what a reload would change, before it is applied.

Pure: it compares two configs in the JSON form the admin API's `GET /config` returns (the
running one) and `admin.config_json` makes of a freshly loaded file. Listeners, pools and
servers are matched by name, as a reload matches them; each change is one line, prefixed
`+` (added), `-` (removed) or `~` (changed), so the output reads like a diff.
"""

from __future__ import annotations

from typing import Any

__all__ = ["plan", "summary"]

_SUBTABLES = ("servers", "routes", "certs")


def _by_name(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in items}


def _fmt(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_fmt(v)}" for k, v in value.items()) + "}"
    return repr(value) if isinstance(value, str) else str(value)


def _field_changes(where: str, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        if key in _SUBTABLES or key == "name":
            continue
        if old.get(key) != new.get(key):
            out.append(f"~ {where}: {key} {_fmt(old.get(key))} -> {_fmt(new.get(key))}")
    return out


def _certs(where: str, old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[str]:
    before = {c["cert"] for c in old}
    after = {c["cert"] for c in new}
    out = [f"+ {where}: certificate {c}" for c in sorted(after - before)]
    out += [f"- {where}: certificate {c}" for c in sorted(before - after)]
    kept = sorted(before & after)
    if kept:
        out.append(f"~ {where}: certificate files re-read: {', '.join(kept)}")
    return out


def plan(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The changes from `old` to `new`, one line each; empty when nothing changes."""
    lines: list[str] = []
    for section in ("settings", "admin"):
        lines += _field_changes(section, old.get(section) or {}, new.get(section) or {})
    old_l, new_l = _by_name(old.get("listeners", [])), _by_name(new.get("listeners", []))
    for name in sorted(set(new_l) - set(old_l)):
        lc = new_l[name]
        lines.append(f"+ listener {name}: {lc['protocol']} on {', '.join(lc['bind'])}")
    for name in sorted(set(old_l) - set(new_l)):
        lines.append(f"- listener {name}: stops accepting; its connections finish")
    for name in sorted(set(old_l) & set(new_l)):
        o, n = old_l[name], new_l[name]
        lines += _field_changes(f"listener {name}", o, n)
        if o.get("routes") != n.get("routes"):
            lines.append(
                f"~ listener {name}: routes {_fmt(o.get('routes'))} -> {_fmt(n.get('routes'))}"
            )
        if n.get("certs") or o.get("certs"):
            lines += _certs(f"listener {name}", o.get("certs", []), n.get("certs", []))
    old_p, new_p = _by_name(old.get("pools", [])), _by_name(new.get("pools", []))
    for name in sorted(set(new_p) - set(old_p)):
        servers = ", ".join(s["name"] for s in new_p[name]["servers"])
        lines.append(f"+ pool {name}: {new_p[name]['balance']} over {servers}")
    for name in sorted(set(old_p) - set(new_p)):
        lines.append(f"- pool {name}: its servers drain")
    for name in sorted(set(old_p) & set(new_p)):
        o, n = old_p[name], new_p[name]
        lines += _field_changes(f"pool {name}", o, n)
        os_, ns = _by_name(o["servers"]), _by_name(n["servers"])
        for s in sorted(set(ns) - set(os_)):
            lines.append(f"+ server {name}/{s}: {ns[s]['address']}")
        for s in sorted(set(os_) - set(ns)):
            lines.append(f"- server {name}/{s}: drains, then leaves")
        for s in sorted(set(os_) & set(ns)):
            lines += _field_changes(f"server {name}/{s}", os_[s], ns[s])
    old_d = [d["address"] for d in old.get("demo", [])]
    new_d = [d["address"] for d in new.get("demo", [])]
    if old_d != new_d:
        lines.append(f"~ demo backends: {_fmt(old_d)} -> {_fmt(new_d)} (take effect on restart)")
    return lines


def summary(lines: list[str], limit: int = 8) -> str:
    """`plan`'s lines on one log line: `"2 changes: ~ pool p: ...; - server p/b: ..."`, the
    first `limit` of them and a count of the rest; `"no changes"` when empty."""
    if not lines:
        return "no changes"
    shown = "; ".join(lines[:limit])
    more = f"; and {len(lines) - limit} more" if len(lines) > limit else ""
    return f"{len(lines)} change{'s' if len(lines) != 1 else ''}: {shown}{more}"
