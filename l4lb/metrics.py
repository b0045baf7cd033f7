"""Prometheus text exposition (format 0.0.4) of a `Stats.snapshot`, for `GET /metrics`.

Written by hand rather than through `prometheus_client`'s registry: the numbers already live
in the snapshot, the format is a few lines of string building, and a registry would be a
second copy of every counter to keep in step. The format rules followed are those of
https://prometheus.io/docs/instrumenting/exposition_formats/ : one HELP and one TYPE line per
family, label values escaped (backslash, double quote, newline), HELP text escaped (backslash,
newline), histogram buckets cumulative with a final `le="+Inf"` equal to `_count`.

Every family is listed in `FAMILIES` and documented in docs/METRICS.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from l4lb.stats import LatencyHistogram, Stats

__all__ = ["CONTENT_TYPE", "FAMILIES", "escape_label", "exposition", "format_value"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: name -> (type, help). The order here is the order of the output.
FAMILIES: dict[str, tuple[str, str]] = {
    "l4lb_info": ("gauge", "Always 1; the version label says which l4lb is running."),
    "l4lb_uptime_seconds": ("gauge", "Seconds since this l4lb process started."),
    "l4lb_reloads_total": ("counter", "Config reloads applied since start."),
    "l4lb_listener_connections_total": ("counter", "Client connections accepted."),
    "l4lb_listener_active_connections": ("gauge", "Client connections open now."),
    "l4lb_listener_denied_total": ("counter", "Connections closed at accept by IP rules."),
    "l4lb_listener_limited_total": (
        "counter",
        "Connections closed at accept by a per-client limit (max_per_client, rate_per_client).",
    ),
    "l4lb_listener_requests_total": ("counter", "HTTP requests answered (http/https)."),
    "l4lb_listener_http2_connections_total": ("counter", "HTTP/2 client connections."),
    "l4lb_listener_http2_streams_total": ("counter", "HTTP/2 streams (requests) opened."),
    "l4lb_listener_http2_resets_total": ("counter", "HTTP/2 streams reset by the client."),
    "l4lb_listener_http2_goaways_total": ("counter", "HTTP/2 GOAWAY frames sent."),
    "l4lb_route_denied_total": ("counter", "HTTP requests refused (403) by a route's access."),
    "l4lb_route_ratelimit_requests_total": ("counter", "HTTP requests a rate limit counted."),
    "l4lb_route_ratelimit_rejected_total": ("counter", "HTTP requests refused (429)."),
    "l4lb_route_ratelimit_redis_errors_total": (
        "counter",
        "Global rate limit decisions Redis failed (refused, reset, error reply).",
    ),
    "l4lb_route_ratelimit_redis_timeouts_total": (
        "counter",
        "Global rate limit decisions Redis did not answer within [redis] timeout.",
    ),
    "l4lb_route_ratelimit_on_error_total": (
        "counter",
        "Requests a global rate limit let through or refused (503) by on_error, Redis failing.",
    ),
    "l4lb_route_ratelimit_redis_up": (
        "gauge",
        "1 while the Redis of a global rate limit answers; 0 from a failure to a good probe.",
    ),
    "l4lb_route_waf_inspected_total": ("counter", "HTTP requests the WAF inspected."),
    "l4lb_route_waf_detected_total": ("counter", "HTTP requests the WAF scored as attacks."),
    "l4lb_route_waf_blocked_total": ("counter", "HTTP requests the WAF refused (403)."),
    "l4lb_listener_http3_connections_total": ("counter", "QUIC (HTTP/3) connections accepted."),
    "l4lb_listener_http3_handshakes_total": ("counter", "QUIC handshakes completed."),
    "l4lb_listener_http3_streams_total": ("counter", "HTTP/3 request streams opened."),
    "l4lb_listener_http3_resets_total": ("counter", "HTTP/3 streams reset by the client."),
    "l4lb_listener_http3_goaways_total": ("counter", "HTTP/3 GOAWAY frames sent."),
    "l4lb_listener_http3_retries_total": ("counter", "QUIC Retry packets sent."),
    "l4lb_listener_http3_dropped_total": ("counter", "UDP datagrams dropped unanswered."),
    "l4lb_listener_http3_stateless_resets_total": ("counter", "QUIC stateless resets sent."),
    "l4lb_listener_http3_early_data_accepted_total": ("counter", "HTTP/3 requests in 0-RTT."),
    "l4lb_listener_http3_early_data_refused_total": ("counter", "0-RTT requests answered 425."),
    "l4lb_listener_http3_packets_lost_total": ("counter", "QUIC packets declared lost."),
    "l4lb_server_connections_total": ("counter", "Connections sent to the server."),
    "l4lb_server_active_connections": ("gauge", "Connections to the server open now."),
    "l4lb_server_up": ("gauge", "1 if the server passes health checks and is not ejected."),
    "l4lb_server_draining": ("gauge", "1 if the server is draining (no new connections)."),
    "l4lb_server_bytes_total": (
        "counter",
        "Bytes relayed through the server: in = client to server, out = server to client.",
    ),
    "l4lb_server_connect_failures_total": ("counter", "Failed connects to the server."),
    "l4lb_server_connect_seconds": ("histogram", "Time to connect to the server."),
    "l4lb_cache_requests_total": (
        "counter",
        "Cache lookups by route: result hit (fresh), stale (served stale), miss (to the server).",
    ),
    "l4lb_cache_stored_total": ("counter", "Responses stored in the cache, by route."),
    "l4lb_cache_evictions_total": ("counter", "Stored responses evicted to keep max_bytes."),
    "l4lb_cache_purged_total": ("counter", "Stored responses removed by a purge."),
    "l4lb_cache_objects": ("gauge", "Responses stored now."),
    "l4lb_cache_bytes": ("gauge", "Bytes stored now (heads, bodies, per-entry overhead)."),
    "l4lb_cache_max_bytes": ("gauge", "The bound on l4lb_cache_bytes (summed over workers)."),
}


def escape_label(value: str) -> str:
    """Escape a label value: backslash, double quote and newline."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float | int | bool) -> str:
    """A sample value as Prometheus writes it: integers plainly, `+Inf`, `-Inf`, `NaN`."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{escape_label(str(v))}"' for k, v in labels.items())
    return "{" + inner + "}"


Sample = tuple[str, Mapping[str, str], float | int | bool]


def exposition(snapshot: Mapping[str, Any], stats: Stats | None = None) -> str:
    """The whole `/metrics` page. Histograms come from `stats` (a snapshot carries only their
    quantiles); without it every server's histogram is exported empty."""
    samples: dict[str, list[Sample]] = {name: [] for name in FAMILIES}
    version = str(snapshot.get("version", ""))
    samples["l4lb_info"].append(("l4lb_info", {"version": version}, 1))
    samples["l4lb_uptime_seconds"].append(
        ("l4lb_uptime_seconds", {}, float(snapshot.get("uptime", 0.0)))
    )
    reloads = int(snapshot.get("config", {}).get("reloads", 0))
    samples["l4lb_reloads_total"].append(("l4lb_reloads_total", {}, reloads))
    for listener in snapshot.get("listeners", ()):
        labels = {"listener": listener["name"]}
        samples["l4lb_listener_connections_total"].append(
            ("l4lb_listener_connections_total", labels, int(listener["total"]))
        )
        samples["l4lb_listener_active_connections"].append(
            ("l4lb_listener_active_connections", labels, int(listener["active"]))
        )
        for key, name in (
            ("denied", "l4lb_listener_denied_total"),
            ("limited", "l4lb_listener_limited_total"),
        ):
            samples[name].append((name, labels, int(listener.get(key, 0))))
        if listener.get("protocol") in ("http", "https"):
            for key, name in (
                ("requests", "l4lb_listener_requests_total"),
                ("h2_connections", "l4lb_listener_http2_connections_total"),
                ("h2_streams", "l4lb_listener_http2_streams_total"),
                ("h2_resets", "l4lb_listener_http2_resets_total"),
                ("h2_goaways", "l4lb_listener_http2_goaways_total"),
                ("h3_connections", "l4lb_listener_http3_connections_total"),
                ("h3_handshakes", "l4lb_listener_http3_handshakes_total"),
                ("h3_streams", "l4lb_listener_http3_streams_total"),
                ("h3_resets", "l4lb_listener_http3_resets_total"),
                ("h3_goaways", "l4lb_listener_http3_goaways_total"),
                ("h3_retries", "l4lb_listener_http3_retries_total"),
                ("h3_dropped", "l4lb_listener_http3_dropped_total"),
                ("h3_stateless_resets", "l4lb_listener_http3_stateless_resets_total"),
                ("h3_early_accepted", "l4lb_listener_http3_early_data_accepted_total"),
                ("h3_early_refused", "l4lb_listener_http3_early_data_refused_total"),
                ("h3_packets_lost", "l4lb_listener_http3_packets_lost_total"),
            ):
                samples[name].append((name, labels, int(listener.get(key, 0))))
        for guard in listener.get("route_guards", ()):
            route = {"listener": listener["name"], "route": guard["route"]}
            samples["l4lb_route_denied_total"].append(
                ("l4lb_route_denied_total", route, int(guard["denied"]))
            )
            for limit in guard["limits"]:
                lab = {**route, "limit": limit["name"]}
                for key, name in (
                    ("requests", "l4lb_route_ratelimit_requests_total"),
                    ("rejected", "l4lb_route_ratelimit_rejected_total"),
                    ("redis_errors", "l4lb_route_ratelimit_redis_errors_total"),
                    ("redis_timeouts", "l4lb_route_ratelimit_redis_timeouts_total"),
                    ("on_error", "l4lb_route_ratelimit_on_error_total"),
                    ("redis_up", "l4lb_route_ratelimit_redis_up"),
                ):
                    if key in limit:  # the redis_* ones: scope = "global" only
                        samples[name].append((name, lab, int(limit[key])))
        for waf in listener.get("route_wafs", ()):
            route = {"listener": listener["name"], "route": waf["route"]}
            for key in ("inspected", "detected", "blocked"):
                name = f"l4lb_route_waf_{key}_total"
                samples[name].append((name, route, int(waf[key])))
    histograms = dict(stats.histograms()) if stats is not None else {}
    for pool in snapshot.get("pools", ()):
        for server in pool.get("servers", ()):
            labels = {"pool": pool["name"], "server": server["name"]}
            _server_samples(samples, labels, server)
            hist = histograms.get((pool["name"], server["name"])) or LatencyHistogram()
            samples["l4lb_server_connect_seconds"].extend(
                _histogram_samples("l4lb_server_connect_seconds", labels, hist)
            )
    _cache_samples(samples, snapshot.get("caches", ()))
    lines: list[str] = []
    for name, (kind, help_text) in FAMILIES.items():
        lines.append(f"# HELP {name} {_escape_help(help_text)}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(
            f"{sample}{_labels(labels)} {format_value(value)}"
            for sample, labels, value in samples[name]
        )
    return "\n".join(lines) + "\n"


def _server_samples(
    samples: dict[str, list[Sample]], labels: dict[str, str], server: Mapping[str, Any]
) -> None:
    def add(name: str, value: float | int | bool, **extra: str) -> None:
        samples[name].append((name, {**labels, **extra} if extra else labels, value))

    add("l4lb_server_connections_total", int(server["total"]))
    add("l4lb_server_active_connections", int(server["active"]))
    add("l4lb_server_up", bool(server.get("up", server["state"] != "down")))
    add("l4lb_server_draining", bool(server.get("draining", False)))
    add("l4lb_server_bytes_total", int(server["bytes_in"]), direction="in")
    add("l4lb_server_bytes_total", int(server["bytes_out"]), direction="out")
    add("l4lb_server_connect_failures_total", int(server.get("connect_failures", 0)))


def _cache_samples(samples: dict[str, list[Sample]], caches: Iterable[Mapping[str, Any]]) -> None:
    for cache in caches:
        labels = {"cache": cache["name"]}
        for r in cache.get("routes", ()):
            route = {**labels, "listener": r["listener"], "route": r["route"]}
            for key, result in (("hits", "hit"), ("stale", "stale"), ("misses", "miss")):
                name = "l4lb_cache_requests_total"
                samples[name].append((name, {**route, "result": result}, int(r.get(key, 0))))
            name = "l4lb_cache_stored_total"
            samples[name].append((name, route, int(r.get("stored", 0))))
        for key in ("evictions", "purged"):
            name = f"l4lb_cache_{key}_total"
            samples[name].append((name, labels, int(cache.get(key, 0))))
        tier = {**labels, "tier": "memory"}
        for key in ("objects", "bytes", "max_bytes"):
            name = f"l4lb_cache_{key}"
            samples[name].append((name, tier, int(cache.get(key, 0))))
        if "disk_bytes" in cache:
            tier = {**labels, "tier": "disk"}
            for key, field in (("objects", "disk_files"), ("bytes", "disk_bytes")):
                name = f"l4lb_cache_{key}"
                samples[name].append((name, tier, int(cache.get(field, 0))))
            name = "l4lb_cache_max_bytes"
            samples[name].append((name, tier, int(cache.get("disk_max_bytes", 0))))


def _histogram_samples(
    name: str, labels: Mapping[str, str], hist: LatencyHistogram
) -> Iterable[Sample]:
    for bound, cumulative in hist.buckets():
        yield (f"{name}_bucket", {**labels, "le": format_value(bound)}, cumulative)
    yield (f"{name}_sum", labels, float(hist.sum))
    yield (f"{name}_count", labels, hist.count)
