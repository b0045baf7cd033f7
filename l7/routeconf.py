"""Reading `[[listener.NAME.routes]]` from TOML into `l7.routes` values, with located errors.

Kept apart from the route values themselves (l7/routes.py, which documents the matching
semantics) because it changes for other reasons: a new key, a new check, a better message.
Every problem is reported through the loader (`l4lb.config.tables.TableLoader.error`) with
its key path, line and what is allowed; the value converters (l7/routefields.py) raise
`BadValue`, which the loader reports at the key.
"""

from __future__ import annotations

from typing import Any

from l4lb.config.lines import format_path
from l4lb.config.tables import Fields
from l4lb.config.tables import TableLoader as _Loader
from l4lb.config.values import BadValue
from l7.guard import parse_security
from l7.jwtconf import check_route, parse_route_jwt
from l7.routefields import (
    _HEADER_MATCH,
    _HEADER_OPS,
    _QUERY_MATCH,
    _REDIRECT,
    _RESPOND,
    _ROUTE,
    _UNTOUCHABLE,
    _field_name,
    _field_value,
)
from l7.routes import (
    ACTIONS,
    PATH_KINDS,
    Action,
    Forward,
    HeaderOps,
    HttpRoute,
    Redirect,
    Respond,
    ValueMatch,
)

__all__ = ["parse_routes"]

Path_ = list[str | int]


# --- parsing ---


def parse_routes(loader: _Loader, value: Any, parts: Path_) -> tuple[HttpRoute, ...] | None:
    """Validate the `[[listener.NAME.routes]]` list at key path `parts` (the listener's path
    plus "routes"). Every problem is reported through `loader.error`; None if there was any.
    Pool names are not checked against the declared pools: `referenced_pools` lists them."""
    if not isinstance(value, list | tuple):
        loader.error(parts, "expected a list of routes", "[[" + format_path(parts) + "]] tables")
        return None
    before = len(loader.errors)
    routes = [_route(loader, item, [*parts, i], i) for i, item in enumerate(value)]
    good = [r for r in routes if r is not None]
    if len(good) == len(routes):
        _check_order(loader, good, parts)
    return tuple(good) if len(loader.errors) == before else None


def _route(loader: _Loader, item: Any, here: Path_, index: int) -> HttpRoute | None:
    raw = loader.table(item, here, _ROUTE)
    if not isinstance(item, dict):
        return None
    before = len(loader.errors)  # the nested tables report even when a sibling key was wrong
    headers = _matches(loader, item.get("headers", []), [*here, "headers"], _HEADER_MATCH)
    query = _matches(loader, item.get("query", []), [*here, "query"], _QUERY_MATCH)
    action = _action(loader, item, here)
    request_ops = _header_ops(loader, item.get("request_headers"), [*here, "request_headers"])
    response_ops = _header_ops(loader, item.get("response_headers"), [*here, "response_headers"])
    security = parse_security(loader, item, here)
    jwt = parse_route_jwt(loader, item, here, index)  # the JWT stage (l7/jwtconf.py)
    check_route(loader, security, item, here)
    compress = None
    if item.get("compress") is not None:
        from l7.stageconf import parse_compress

        compress = parse_compress(loader, item["compress"], [*here, "compress"])
    waf = None
    if item.get("waf") is not None:  # the WAF stage (l7/waf/)
        from l7.waf.config import parse_waf

        waf = parse_waf(loader, item["waf"], [*here, "waf"])
    if raw is None or action is None or len(loader.errors) != before:
        return None
    if (compress is not None or raw["cache"]) and not isinstance(action, Forward):
        key = "cache" if raw["cache"] else "compress"
        loader.error([*here, key], f"{key} needs pool: only forwarded responses", 'pool = "NAME"')
        return None
    _exclusive(loader, raw, here, PATH_KINDS, "path")
    _exclusive(loader, raw, here, ("strip_prefix", "replace_prefix"), "rewrite")
    if len(loader.errors) == before:
        _check_rewrites(loader, raw, here, action)
    if len(loader.errors) != before:
        return None
    return HttpRoute(
        name=raw["name"] or f"route[{index}]",
        action=action,
        hosts=raw["host"],
        path_prefix=raw["path_prefix"],
        path=raw["path"],
        path_regex=raw["path_regex"],
        methods=raw["methods"],
        headers=headers or (),
        query=query or (),
        strip_prefix=raw["strip_prefix"],
        replace_prefix=raw["replace_prefix"],
        request_headers=request_ops or HeaderOps(),
        response_headers=response_ops or HeaderOps(),
        security=security,
        compress=compress,
        cache=raw["cache"],
        jwt=jwt,
        waf=waf,
    )


def _exclusive(
    loader: _Loader, raw: dict[str, Any], here: Path_, keys: tuple[str, ...], what: str
) -> None:
    given = [k for k in keys if raw[k] is not None]
    if len(given) > 1:
        loader.error(
            [*here, given[1]],
            f"{given[0]} and {given[1]} cannot be used together: a route has one {what}",
            "one of " + ", ".join(keys),
        )


def _action(loader: _Loader, item: dict[str, Any], here: Path_) -> Action | None:
    given = [k for k in ACTIONS if k in item]
    if not given:
        loader.error(
            here,
            "a route needs an action",
            'pool = "NAME", redirect = {status, to} or respond = {status, body}',
        )
        return None
    if len(given) > 1:
        loader.error(
            [*here, given[1]],
            f"a route has one action, this one has {given[0]} and {given[1]}",
            "one of " + ", ".join(ACTIONS),
        )
        return None
    kind = given[0]
    if kind == "pool":
        return Forward(item["pool"]) if isinstance(item["pool"], str) else None
    if kind == "redirect":
        raw = loader.table(item[kind], [*here, kind], _REDIRECT)
        return Redirect(raw["status"], item[kind]["to"], raw["to"]) if raw else None
    raw = loader.table(item[kind], [*here, kind], _RESPOND)
    if raw is None:
        return None
    body = raw["body"].encode()
    if body and (raw["status"] in (204, 304)):
        loader.error(
            [*here, kind, "body"],
            f"a {raw['status']} response has no body (RFC 9110 §15.3.5, §15.4.5)",
            'body = ""',
        )
        return None
    return Respond(raw["status"], body, raw["content_type"])


def _check_rewrites(loader: _Loader, raw: dict[str, Any], here: Path_, action: Action) -> None:
    """Rewrites and request header operations change what is forwarded: only `pool` routes
    forward. `replace_prefix` replaces the matched `path_prefix` (Envoy's `prefix_rewrite`
    has the same rule), and a `strip_prefix` that the matched path cannot start with would
    silently never apply."""
    if not isinstance(action, Forward):
        kind = "redirect" if isinstance(action, Redirect) else "respond"
        for key in ("strip_prefix", "replace_prefix", "request_headers"):
            if raw[key] is not None:
                loader.error(
                    [*here, key],
                    f"{key} needs pool: a {kind} route does not forward the request",
                    'pool = "NAME"',
                )
        return
    if raw["replace_prefix"] is not None and raw["path_prefix"] is None:
        loader.error(
            [*here, "replace_prefix"],
            "replace_prefix replaces the matched path_prefix, and this route has none",
            "path_prefix beside it, or strip_prefix",
        )
    strip = raw["strip_prefix"]
    for key in ("path_prefix", "path"):
        if strip is not None and raw[key] is not None and not raw[key].startswith(strip):
            loader.error(
                [*here, "strip_prefix"],
                f"strip_prefix {strip!r} is not a prefix of {key} {raw[key]!r}: "
                "it would never apply",
                f"a prefix of {raw[key]!r}",
            )


def _matches(
    loader: _Loader, value: Any, parts: Path_, fields: Fields
) -> tuple[ValueMatch, ...] | None:
    example = '{name = "x-env", equals = "canary"}'
    if not isinstance(value, list | tuple):
        loader.error(parts, f"expected a list of conditions, got {value!r}", f"[{example}, ...]")
        return None
    out = []
    for i, item in enumerate(value):
        raw = loader.table(item, [*parts, i], fields)
        if raw is None:
            continue
        given = [k for k in ("equals", "present", "regex") if raw[k] is not None]
        if len(given) != 1:
            loader.error(
                [*parts, i],
                f"{raw['name']!r}: give one of equals, present, regex"
                + (f", not {' and '.join(given)}" if given else ""),
                example,
            )
            continue
        out.append(ValueMatch(raw["name"], raw["equals"], raw["present"], raw["regex"]))
    return tuple(out) if len(out) == len(value) else None


def _header_ops(loader: _Loader, value: Any, parts: Path_) -> HeaderOps | None:
    """`{add = {"x-a" = "1"}, set = {...}, remove = ["x-b"]}`; add and set values may be
    lists (several field lines). A name may appear in one operation only: remove-then-add of
    one name is `set` said twice, and the intent is then unclear."""
    if value is None:
        return HeaderOps()
    raw = loader.table(value, parts, _HEADER_OPS)
    if raw is None:
        return None
    before = len(loader.errors)
    request_side = parts[-1] == "request_headers"
    seen: dict[str, str] = {}
    remove: list[bytes] = []
    if raw["remove"] is not None:
        here = [*parts, "remove"]
        if not isinstance(raw["remove"], list):
            loader.error(here, f"expected a list of names, got {raw['remove']!r}", '["x-name"]')
        else:
            for i, item in enumerate(raw["remove"]):
                name = _op_name(loader, [*here, i], item, "remove", request_side, seen)
                if name is not None:
                    remove.append(name.encode())
    pairs: dict[str, list[tuple[bytes, bytes]]] = {"set": [], "add": []}
    for op, out in pairs.items():
        if raw[op] is None:
            continue
        here = [*parts, op]
        if not isinstance(raw[op], dict):
            loader.error(here, f"expected a table, got {raw[op]!r}", '{"x-name" = "value"}')
            continue
        for key, given in raw[op].items():
            name = _op_name(loader, [*here, key], key, op, request_side, seen)
            try:
                values = [_field_value(v) for v in (given if isinstance(given, list) else [given])]
            except BadValue as exc:
                loader.error([*here, key], exc.message, exc.allowed)
                continue
            if name is not None:
                out.extend((name.encode(), v.encode()) for v in values)
    if len(loader.errors) != before:
        return None
    return HeaderOps(tuple(remove), tuple(pairs["set"]), tuple(pairs["add"]))


_DONE = {"remove": "removed", "set": "set", "add": "added"}


def _op_name(
    loader: _Loader, where: Path_, value: Any, op: str, request_side: bool, seen: dict[str, str]
) -> str | None:
    try:
        name = _field_name(value)
    except BadValue as exc:
        loader.error(where, exc.message, exc.allowed)
        return None
    if name in _UNTOUCHABLE:
        loader.error(
            where,
            f"{name!r} cannot be {_DONE[op]} by a route: it frames the message or belongs to "
            "one connection",
            "end-to-end header names",
        )
        return None
    if request_side and name == "host" and op != "set":
        loader.error(where, f"'host' cannot be {_DONE[op]}: a request has exactly one", "set")
        return None
    if name in seen:
        loader.error(
            where, f"{name!r} is already in {seen[name]}", "each name in one of remove, set, add"
        )
        return None
    seen[name] = op
    return name


def _check_order(loader: _Loader, routes: list[HttpRoute], parts: Path_) -> None:
    """A route after a default (no conditions) can never match: say so rather than let an
    operator wonder why it is never used. Names label logs and stats, so they are unique."""
    names: dict[str, int] = {}
    default: int | None = None
    for i, route in enumerate(routes):
        if route.name in names:
            loader.error(
                [*parts, i, "name"],
                f"route name {route.name!r} is already used by routes[{names[route.name]}]",
                "a name unique within the listener",
            )
        names.setdefault(route.name, i)
        if default is not None:
            loader.error(
                [*parts, i],
                f"route {route.name!r} can never match: routes[{default}] before it has no "
                "conditions and takes every request",
                "the default route last",
            )
            return
        if route.is_default:
            default = i
