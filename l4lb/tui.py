"""The live terminal view, drawn with rich from a `Stats.snapshot`.

Pure: `render` is a function of the snapshot and the view's size, selection and filter, so
the look is tested by rendering to text (`render_to_text`) at fixed sizes, with no terminal.
The owner of the terminal (`l4lb top`, or `l4lb up` on a tty) reads keys, feeds them to a
`ViewState`, acts on what `handle_key` returns (drain, enable, quit) and redraws.

Layout, top to bottom: one header line (version, uptime, config file, when it was loaded),
the listeners table, the pools table (a line per pool, then its servers, state coloured, with
a sparkline of the last minute's connection rate), recent events, and a key help line. Every
row is one line (cells are cut with an ellipsis, never wrapped), and the tables are cut to the
height, so a frame never scrolls the terminal. Below `WIDE` columns, less important columns
(address, totals, byte rates, check detail, last change) are left out.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

__all__ = [
    "HUGE",
    "WIDE",
    "Action",
    "ViewState",
    "cache_line",
    "edge_lines",
    "render",
    "render_to_text",
    "sparkline",
    "visible_servers",
]

WIDE = 120  # columns from which the pools table shows address, check and last change
HUGE = 200  # ... and totals and byte rates
SPARKS = "▁▂▃▄▅▆▇█"
STATE_STYLES = {
    "up": "green",
    "down": "bold red",
    "draining": "yellow",
    "slow_start": "cyan",
    "circuit_open": "magenta",
}
EVENT_STYLES = {
    "server_up": "green",
    "server_down": "red",
    "server_draining": "yellow",
    "server_slow_start": "cyan",
    "server_circuit_open": "magenta",
    "drain": "yellow",
    "enable": "green",
    "reload": "cyan",
    "reload_failed": "bold red",
    "config_error": "bold red",
}

#: What `ViewState.handle_key` asks its owner to do.
Action = tuple[str, str, str] | str | None


# -- formatting ------------------------------------------------------------------------------


def sparkline(values: Sequence[float], width: int) -> str:
    """`values` (oldest first) as at most `width` bar characters scaled to their maximum.
    More values than `width` are averaged in groups so the line still spans all of them.
    Zero draws as the lowest bar and any positive value as at least the second, so a trickle
    is told apart from nothing."""
    if width <= 0 or not values:
        return ""
    if len(values) > width:
        step = len(values) / width
        values = [
            sum(chunk) / len(chunk)
            for i in range(width)
            if (chunk := values[round(i * step) : round((i + 1) * step)] or values[-1:])
        ]
    top = max(values)
    if top <= 0:
        return SPARKS[0] * len(values)
    last = len(SPARKS) - 1
    return "".join(
        SPARKS[0] if v <= 0 else SPARKS[min(last, max(1, round(v / top * last)))] for v in values
    )


def _duration(seconds: float) -> str:
    s = int(max(seconds, 0))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _rate(value: float) -> str:
    if value <= 0:
        return "0"
    if value < 10:
        return f"{value:.1f}"
    if value < 1000:
        return f"{value:.0f}"
    if value < 1_000_000:
        return f"{value / 1000:.1f}k"
    return f"{value / 1_000_000:.1f}M"


def _bytes_rate(value: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.0f}{unit}/s" if unit == "B" else f"{value:.1f}{unit}/s"
        value /= 1024
    return ""  # pragma: no cover


def _size(value: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return ""  # pragma: no cover


def _count(value: int) -> str:
    if value < 10_000:
        return str(value)
    if value < 1_000_000:
        return f"{value / 1000:.1f}k"
    return f"{value / 1_000_000:.1f}M"


def cache_line(cache: Mapping[str, Any]) -> str:
    """One cache in a line: the share of lookups answered from it (fresh or stale), the
    counts, what it holds against its bound, and evictions."""
    hits, stale, misses = cache.get("hits", 0), cache.get("stale", 0), cache.get("misses", 0)
    lookups = hits + stale + misses
    ratio = f"{100 * (hits + stale) / lookups:.0f}%" if lookups else "-"
    return (
        f"cache {cache['name']}: {ratio} hit  {_count(hits)} hit {_count(misses)} miss "
        f"{_count(stale)} stale  {_size(cache.get('bytes', 0))}/{_size(cache.get('max_bytes', 0))}"
        f" {_count(cache.get('objects', 0))} obj"
        + (
            f" disk {_size(cache['disk_bytes'])}/{_size(cache.get('disk_max_bytes', 0))}"
            if "disk_bytes" in cache
            else ""
        )
        + f"  {_count(cache.get('evictions', 0))} evicted"
    )


def edge_lines(listeners: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per HTTP listener with security stages: requests refused by route access
    rules (403), rate limits (429), the WAF (blocked, and detected in detect mode) and JWT
    validation, summed over its routes (the figures of `/status` route_guards, route_wafs,
    route_jwt)."""
    out = []
    for lst in listeners:
        guards, wafs, jwts = (lst.get(k, ()) for k in ("route_guards", "route_wafs", "route_jwt"))
        if not (guards or wafs or jwts):
            continue
        parts = []
        if guards:
            denied = sum(g.get("denied", 0) for g in guards)
            limits = [lim for g in guards for lim in g.get("limits", ())]
            limited = sum(lim.get("rejected", 0) for lim in limits)
            asked = sum(lim.get("requests", 0) for lim in limits)
            parts.append(f"{_count(denied)} denied  {_count(limited)}/{_count(asked)} limited")
        if wafs:
            blocked = sum(w.get("blocked", 0) for w in wafs)
            detected = sum(w.get("detected", 0) for w in wafs)
            parts.append(f"waf {_count(blocked)} blocked {_count(detected)} detected")
        if jwts:
            refused = sum(j.get("refused", 0) for j in jwts)
            accepted = sum(j.get("accepted", 0) for j in jwts)
            parts.append(f"jwt {_count(refused)} refused {_count(accepted)} ok")
        out.append(f"edge {lst.get('name', '?')}: " + "  ".join(parts))
    return out


def _latency(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f}µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f}ms"
    return f"{seconds:.2f}s"


def _clock(wall: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(wall))


# -- selection -------------------------------------------------------------------------------


def visible_servers(snapshot: Mapping[str, Any], filter: str = "") -> list[tuple[str, dict]]:
    """`(pool name, server)` pairs the pools table shows, in order: those whose
    `pool/server`, address or state contains `filter` (case-insensitive)."""
    needle = filter.strip().lower()
    out = []
    for pool in snapshot.get("pools", ()):
        for server in pool.get("servers", ()):
            hay = f"{pool['name']}/{server['name']} {server.get('address', '')} {server['state']}"
            if not needle or needle in hay.lower():
                out.append((pool["name"], server))
    return out


class ViewState:
    """The view's selection and filter, and what each key means.

    Keys are names, not escape sequences: "up", "down", "home", "end", "enter", "escape",
    "backspace", or a single character. `handle_key` returns ("drain", pool, server),
    ("enable", pool, server), "quit", or None when only the view changed.
    """

    def __init__(self) -> None:
        self.selected = 0
        self.filter = ""
        self.editing = False  # typing a filter after "/"
        self.rows: list[tuple[str, str]] = []
        self._snapshot: Mapping[str, Any] = {}

    def update(self, snapshot: Mapping[str, Any]) -> None:
        """Take a new snapshot (call before each draw); keeps the selection in range."""
        self._snapshot = snapshot
        self._refresh()

    def _refresh(self) -> None:
        self.rows = [(p, s["name"]) for p, s in visible_servers(self._snapshot, self.filter)]
        self.selected = max(0, min(self.selected, len(self.rows) - 1))

    def render(self, snapshot: Mapping[str, Any], width: int, height: int) -> RenderableType:
        self.update(snapshot)
        return render(snapshot, width, height, self.selected, self.filter, editing=self.editing)

    def handle_key(self, key: str) -> Action:
        if self.editing:
            if key in ("enter", "escape"):
                self.editing = False
                if key == "escape":
                    self.filter = ""
            elif key == "backspace":
                self.filter = self.filter[:-1]
            elif len(key) == 1 and key.isprintable():
                self.filter += key
            self.selected = 0
            self._refresh()
            return None
        if key in ("q", "Q"):
            return "quit"
        if key in ("up", "k"):
            self.selected = max(0, self.selected - 1)
        elif key in ("down", "j"):
            self.selected = min(max(len(self.rows) - 1, 0), self.selected + 1)
        elif key == "home":
            self.selected = 0
        elif key == "end":
            self.selected = max(len(self.rows) - 1, 0)
        elif key == "/":
            self.editing = True
        elif key == "escape":
            self.filter = ""
            self._refresh()
        elif key in ("d", "e") and self.rows:
            pool, server = self.rows[self.selected]
            return ("drain" if key == "d" else "enable", pool, server)
        return None


# -- rendering -------------------------------------------------------------------------------


def _table(columns: Iterable[tuple[str, str]]) -> Table:
    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold", expand=False)
    for name, justify in columns:
        table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis")  # type: ignore[arg-type]
    return table


def _header(snapshot: Mapping[str, Any]) -> Text:
    config = snapshot.get("config", {})
    reloads = config.get("reloads", 0)
    text = Text(no_wrap=True, overflow="ellipsis", style="reverse")
    text.append(f" l4lb {snapshot.get('version', '')} ", style="bold")
    text.append(f" up {_duration(snapshot.get('uptime', 0))} ")
    text.append(f" {config.get('file', '') or '-'} ", style="bold")
    loaded = f" loaded {_clock(config['loaded_at'])}" if "loaded_at" in config else ""
    text.append(loaded + (f" ({reloads} reload{'s' if reloads != 1 else ''})" if reloads else ""))
    text.append(f"  pid {snapshot.get('pid', '')} ")
    return text


_LISTENER_COLUMNS = (
    ("LISTENER", "left"),
    ("PROTO", "left"),
    ("ADDRESS", "left"),
    ("ACTIVE", "right"),
    ("CONN/S", "right"),
    ("REQ/S", "right"),
    ("IN/S", "right"),
    ("OUT/S", "right"),
)


def _binds(lst: Mapping[str, Any], wide: bool) -> str:
    binds = list(lst.get("bind", ()))
    if wide or len(binds) < 2:
        return ", ".join(binds)
    return f"{binds[0]} +{len(binds) - 1}"


def _proto(lst: Mapping[str, Any], wide: bool) -> str:
    """The listener's protocol; `+h2`/`+h3` once HTTP/2 or HTTP/3 clients came (wide: with
    the HTTP/2 resets)."""
    proto = lst.get("protocol", "")
    if lst.get("h2_connections"):
        if wide and lst.get("h2_resets"):
            proto = f"{proto}+h2 rst {lst['h2_resets']}"
        else:
            proto = f"{proto}+h2"
    if lst.get("h3_connections"):
        proto = f"{proto}+h3"
    return proto


def _listeners(listeners: Sequence[Mapping[str, Any]], rows: int, width: int) -> Table:
    """Numbers are never cut: the address (then the name) gives way when space is short."""
    wide = width >= WIDE
    shown = listeners if len(listeners) <= rows else listeners[: max(rows - 1, 0)]
    body = [
        [
            Text(lst["name"], style="bold" if lst.get("accepting", True) else "dim"),
            _proto(lst, wide),
            _binds(lst, wide),
            str(lst.get("active", 0)),
            _rate(lst.get("conn_rate", 0.0)),
            _rate(lst.get("req_rate", 0.0)) if lst.get("protocol") in ("http", "https") else "-",
            _bytes_rate(lst.get("bytes_in_rate", 0.0)),
            _bytes_rate(lst.get("bytes_out_rate", 0.0)),
        ]
        for lst in shown
    ]
    notes = [f"… {len(listeners) - len(shown)} more"] if len(shown) < len(listeners) else []
    notes += [] if listeners else ["no listeners"]
    widths = _measure([name for name, _ in _LISTENER_COLUMNS], body)
    widths[0] = min(max(widths[0], *map(cell_len, notes), 0), 16)
    others = sum(widths) - widths[2] + 2 * (len(widths) - 1)
    widths[2] = max(7, min(widths[2], width - others))
    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold", expand=False)
    for (name, justify), size in zip(_LISTENER_COLUMNS, widths, strict=True):
        table.add_column(
            name, justify=justify, no_wrap=True, overflow="ellipsis", min_width=size, max_width=size
        )  # type: ignore[arg-type]
    for cells in body:
        table.add_row(*cells)
    for note in notes:
        table.add_row(Text(note, style="dim"))
    return table


def _measure(headers: Sequence[str], body: Iterable[Sequence[Text | str]]) -> list[int]:
    widths = [cell_len(h) for h in headers]
    for cells in body:
        for i, cell in enumerate(cells):
            widths[i] = max(widths[i], cell_len(cell.plain if isinstance(cell, Text) else cell))
    return widths


def _weight(server: Mapping[str, Any]) -> str:
    weight, now = server.get("weight", ""), server.get("weight_now", server.get("weight"))
    return f"{now:.0f}/{weight}" if now != weight else str(weight)


def _server_name(server: Mapping[str, Any], wide: bool) -> str:
    backup = (" (backup)" if wide else " (b)") if server.get("backup") else ""
    return f"  {server['name']}{backup}"


Cell = Callable[[Mapping[str, Any], bool], "Text | str"]

#: The pools table: (header, justify, widest cell, from which width, server cell). Every
#: column has a widest size so the sparkline's width is known before rich lays out the table.
_SERVER_COLUMNS: tuple[tuple[str, str, int, int, Cell], ...] = (
    ("SERVER", "left", 20, 0, lambda s, wide: _server_name(s, wide)),
    ("ADDRESS", "left", 21, WIDE, lambda s, _: s.get("address", "")),
    ("STATE", "left", 10, 0, lambda s, _: Text(s["state"], STATE_STYLES.get(s["state"], ""))),
    ("WT", "right", 5, 0, lambda s, _: _weight(s)),
    ("ACT", "right", 5, 0, lambda s, _: str(s.get("active", 0))),
    ("TOTAL", "right", 8, HUGE, lambda s, _: str(s.get("total", 0))),
    ("CONN/S", "right", 6, 0, lambda s, _: _rate(s.get("conn_rate", 0.0))),
    ("IN/S", "right", 8, HUGE, lambda s, _: _bytes_rate(s.get("bytes_in_rate", 0.0))),
    ("OUT/S", "right", 8, HUGE, lambda s, _: _bytes_rate(s.get("bytes_out_rate", 0.0))),
    ("P50", "right", 7, 0, lambda s, _: _latency(s.get("connect_p50"))),
    ("P99", "right", 7, 0, lambda s, _: _latency(s.get("connect_p99"))),
    ("CHECK", "left", 16, 0, lambda s, wide: _check(s.get("check", ""), wide)),
    ("CHANGED", "right", 7, WIDE, lambda s, _: _duration(s.get("last_change_ago", 0))),
)


def _check(detail: str, wide: bool) -> str:
    """The last health check: `http: 503` when wide, `503` when narrow (the kind of check
    is the pool's, the same on every row)."""
    if not detail:
        return "-"
    kind, sep, rest = detail.partition(": ")
    return detail if wide or not sep or kind not in ("http", "tcp") else rest


def _pool_cell(header: str, pool: Mapping[str, Any]) -> Text | str:
    if header == "SERVER":
        return Text(pool["name"], style="bold underline")
    if header == "STATE":
        return Text(f"{pool.get('servers_up', 0)}/{len(pool.get('servers', ()))} up", "dim")
    if header == "ADDRESS":
        return Text(pool.get("balance", ""), "dim")
    return ""


def _pools(snapshot: Mapping[str, Any], width: int, rows: int, selected: int, filter: str) -> Table:
    wide = width >= WIDE
    columns = [c for c in _SERVER_COLUMNS if width >= c[3]]

    visible = visible_servers(snapshot, filter)
    by_pool: dict[str, list[tuple[int, dict]]] = {}
    for index, (pool_name, server) in enumerate(visible):
        by_pool.setdefault(pool_name, []).append((index, server))
    lines: list[tuple[str, Any]] = []  # ("pool", pool) or ("server", (index, server))
    for pool in snapshot.get("pools", ()):
        if pool["name"] in by_pool:
            lines.append(("pool", pool))
            lines.extend(("server", item) for item in by_pool[pool["name"]])

    body: list[tuple[list[Text | str], str, Sequence[float] | None]] = []
    for kind, item in _window(lines, rows, selected):
        if kind == "more":
            body.append(([Text(item, style="dim")], "", None))
        elif kind == "pool":
            body.append(([_pool_cell(c[0], item) for c in columns], "", None))
        else:
            index, server = item
            cells = [cell(server, wide) for *_, cell in columns]
            body.append((cells, _row_style(server, index, selected), server.get("history", ())))
    if not visible and rows > 0:
        body.append(
            ([Text("no servers" + (f" match {filter!r}" if filter else ""), "dim")], "", None)
        )

    # The sparkline takes what the other columns leave, measured on the cells to be shown.
    widths = _measure([c[0] for c in columns], [cells for cells, _, _ in body])
    used = sum(min(w, c[2]) for w, c in zip(widths, columns, strict=True)) + 2 * len(columns)
    spark = max(3, min(60, width - used))

    table = Table(box=None, padding=(0, 1), pad_edge=False, header_style="bold", expand=False)
    for header, justify, widest, _, _ in columns:
        table.add_column(
            header, justify=justify, no_wrap=True, overflow="ellipsis", max_width=widest
        )  # type: ignore[arg-type]
    table.add_column(
        "LAST 60s" if spark >= 8 else "60s",
        no_wrap=True,
        overflow="crop",
        min_width=spark,
        max_width=spark,
    )
    for cells, style, history in body:
        if history is not None:
            cells = [*cells, Text(sparkline(history, spark), style="blue")]
        table.add_row(*cells, style=style)
    return table


def _window(lines: list[tuple[str, Any]], rows: int, selected: int) -> list[tuple[str, Any]]:
    """At most `rows` lines, scrolled so the selected server shows; cut ends say so."""
    if len(lines) <= rows:
        return lines
    if rows <= 0:
        return []
    at = next(
        (i for i, (kind, item) in enumerate(lines) if kind == "server" and item[0] == selected), 0
    )
    start = max(0, min(at - rows // 2, len(lines) - rows))
    out = lines[start : start + rows]
    if start > 0 and rows > 2:
        out = [("more", f"… {start + 1} above"), *out[1:]]
    hidden = len(lines) - (start + rows)
    if hidden > 0 and rows > 2:
        out = [*out[:-1], ("more", f"… {hidden + 1} below")]
    return out


def _row_style(server: Mapping[str, Any], index: int, selected: int) -> str:
    style = "dim" if server.get("backup") else ""
    return f"{style} reverse".strip() if index == selected else style


def _events(events: Sequence[Mapping[str, Any]], rows: int) -> list[Text]:
    out = [Text("EVENTS", style="bold", no_wrap=True)]
    for ev in events[: max(rows - 1, 0)]:
        line = Text(no_wrap=True, overflow="ellipsis")
        line.append(_clock(ev.get("time", 0)) + " ", style="dim")
        line.append(ev.get("kind", ""), style=EVENT_STYLES.get(ev.get("kind", ""), ""))
        line.append(" " + ev.get("text", ""))
        out.append(line)
    return out


def _footer(filter: str, editing: bool) -> Text:
    text = Text(no_wrap=True, overflow="ellipsis", style="dim")
    if editing:
        text.append(f" filter: {filter}▌", style="bold")
        text.append("  enter done  esc clear")
        return text
    text.append(" q quit  ↑↓ select  d drain  e enable  / filter")
    if filter:
        text.append(f"  [filter: {filter}]", style="bold")
    return text


def render(
    snapshot: Mapping[str, Any],
    width: int,
    height: int,
    selected: int = 0,
    filter: str = "",
    *,
    editing: bool = False,
) -> RenderableType:
    """One frame: at most `height` lines, none wider than `width` columns. `selected` is an
    index into `visible_servers(snapshot, filter)`."""
    listeners = list(snapshot.get("listeners", ()))
    events = list(snapshot.get("events", ()))
    visible = visible_servers(snapshot, filter)
    pools_shown = len({p for p, _ in visible})
    server_lines = len(visible) + pools_shown or 1

    avail = height - 2  # header and footer
    listener_rows = min(max(len(listeners), 1), max(1, avail // 4))
    avail -= 1 + listener_rows + 1  # table header, rows, gap
    room = max(0, min(3, (avail - 4) // 2))  # cache and edge lines share a few lines
    lines = [*map(cache_line, snapshot.get("caches", ())), *edge_lines(listeners)][:room]
    avail -= len(lines)
    events_min = 1 + min(len(events), 3) if events and avail > 8 else 0
    pool_rows = max(0, min(server_lines, avail - 1 - events_min - (1 if events_min else 0)))
    avail -= 1 + pool_rows
    parts: list[RenderableType] = [
        _header(snapshot),
        _listeners(listeners, listener_rows, width),
        *(Text(line, no_wrap=True, overflow="ellipsis", style="dim") for line in lines),
        Text(""),
        _pools(snapshot, width, pool_rows, selected, filter),
    ]
    if events and avail >= 3:
        parts.append(Text(""))
        shown = _events(events, avail - 1)
        parts.extend(shown)
        avail -= 1 + len(shown)
    parts.extend([Text("")] * max(avail, 0))  # the footer stays on the last line
    parts.append(_footer(filter, editing))
    return Group(*parts)


def render_to_text(snapshot: Mapping[str, Any], width: int, height: int, **view: Any) -> str:
    """The frame as plain text (styles dropped), for tests and for `l4lb status --text`."""
    console = Console(
        file=io.StringIO(),
        record=True,
        width=width,
        height=height,
        force_terminal=True,
        color_system="truecolor",
    )
    console.print(render(snapshot, width, height, **view))
    return console.export_text()
