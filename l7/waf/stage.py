"""The WAF stage: inspect a request, score the rules it matches, log, and block or pass.

DESIGN.md's order is limits and IP rules, rate limit, WAF, auth, route: the Exchange calls
`waf_start` right after a route's access rules and rate limits (`l7.guard`), or for a
request no route matched, with the listener's `waf`. Every HTTP version comes here with
the same `Request` and answers through `Exchange.simple`, so HTTP/1.1, HTTP/2 and HTTP/3
clients are treated alike.

Anomaly scoring as the OWASP Core Rule Set does it: each matching rule adds its severity's
score (critical 5, error 4, warning 3, notice 2) once; at `threshold` or above the request
is an attack. In `block` mode it gets a 403 whose body carries the request ID (the ID is in
the log line too, so a user's report finds the rule); in `detect` mode it goes on. Either
way the matched rule ids go to the access log (`waf=942100,941100`) and one log line says
what matched.

Bodies: a request whose body is of an inspected type (`l7.waf.extract.body_kind`) is held
before it goes to a server, until it ends or `body_limit` bytes came: those bytes are
inspected (a longer body's rest passes uninspected, ModSecurity's `ProcessPartial`), then
the held bytes go on as they would have. `body_limit = 0` inspects heads only.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from l7.errors_page import error_response
from l7.waf.extract import body_kind, request_values

if TYPE_CHECKING:
    from l7.exchange import Exchange
    from l7.model import Request
    from l7.waf.config import WafConfig
    from l7.waf.matcher import CompiledRules

__all__ = ["RouteWaf", "Verdict", "WafState", "waf_start"]

log: Final = logging.getLogger("l4lb")


class Verdict:
    """What inspecting one request found: the rules, their total `score`, and whether that
    reaches the threshold (`attack`). `ids` is the access log's text."""

    __slots__ = ("attack", "ids", "rules", "score")

    def __init__(self, rules: list[Any], threshold: int) -> None:
        self.rules = rules
        self.score = sum(rule.score for rule in rules)
        self.attack = self.score >= threshold
        self.ids = ",".join(str(rule.id) for rule in rules)


class RouteWaf:
    """The live side of one route's (or the listener's) `WafConfig`: the compiled rules
    and counters. `inspect` is sans-IO and is what the corpora tests call."""

    __slots__ = (
        "block",
        "blocked",
        "body_limit",
        "clean",
        "config",
        "detected",
        "inspected",
        "matcher",
        "route",
        "threshold",
    )

    def __init__(self, route: str, config: WafConfig) -> None:
        from l7.waf.matcher import compile_rules  # (Hyperscan only for listeners with a WAF)

        self.route = route
        self.config = config
        self.matcher: CompiledRules = compile_rules(config.active)
        self.block = config.mode == "block"
        self.threshold = config.threshold
        self.body_limit = config.body_limit
        self.inspected = 0
        self.detected = 0  # requests at or over the threshold
        self.blocked = 0
        self.clean = Verdict([], self.threshold)  # what almost every request gets: shared

    def inspect(self, request: Request, body: bytes | None = None, kind: str = "") -> Verdict:
        """Score `request` (and `body`, of `body_kind` `kind`)."""
        self.inspected += 1
        matcher = self.matcher
        wanted = matcher.targets
        if not matcher.screen_request(request, body, kind):
            return self.clean  # no rule can match (l7.waf.matcher: the screen)
        verdict = Verdict(matcher.scan(request_values(request, body, kind, wanted)), self.threshold)
        if verdict.attack:
            self.detected += 1
        return verdict

    def start(self, exchange: Exchange) -> bool:
        """The head is here: False if the request was answered (blocked); True to go on.
        With a body to inspect, `exchange.waf` holds it (`WafState.holding`)."""
        request = exchange.request
        if self.body_limit and exchange.body_kind != "none":
            kind = body_kind(request.header(b"content-type"))
            if kind:
                exchange.waf = WafState(self, kind, True)
                return True
        verdict = self.inspect(request)
        return True if verdict is self.clean else self.decide(exchange, verdict)

    def decide(self, exchange: Exchange, verdict: Verdict) -> bool:
        """Log what matched; answer 403 (False) for an attack in block mode."""
        if verdict.rules:
            state = exchange.waf
            if state is None:
                state = exchange.waf = WafState(self, "", False)
            state.ids = verdict.ids
            request = exchange.request
            action = (
                "blocked"
                if verdict.attack and self.block
                else ("detected" if verdict.attack else "below threshold")
            )
            log.log(
                logging.WARNING if verdict.attack else logging.INFO,
                "waf route %s: %s %s %s score=%d rules=%s (%s) id=%s",
                self.route,
                request.client[0],
                request.method,
                request.target[:200],
                verdict.score,
                verdict.ids,
                action,
                exchange.request_id,
            )
            if verdict.attack and self.block:
                self.blocked += 1
                response, body = error_response(
                    403, exchange.request_id, "forbidden by the web application firewall"
                )
                headers = response.fields()
                headers.extend(exchange.engine.extra_response_headers)
                exchange.simple(403, headers, body)
                return False
        return True

    def report(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "mode": self.config.mode,
            "inspected": self.inspected,
            "detected": self.detected,
            "blocked": self.blocked,
        }


class WafState:
    """One request's WAF state on its Exchange: the body being held (`holding`) until it
    is inspected, then the matched ids for the access log."""

    __slots__ = ("holding", "ids", "kind", "waf")

    def __init__(self, waf: RouteWaf, kind: str, holding: bool) -> None:
        self.waf = waf
        self.kind = kind
        self.holding = holding
        self.ids = ""

    def chunk(self, exchange: Exchange) -> None:
        """Body bytes were added to `exchange.pending`: inspect once the limit is reached."""
        if exchange.pending_size >= self.waf.body_limit:
            self.release(exchange)

    def release(self, exchange: Exchange) -> None:
        """The body ended or reached the limit: inspect head and body, then block or send
        the held bytes on (the Exchange's `forward`, which writes `pending`)."""
        self.holding = False
        if exchange.finished:
            return  # answered meanwhile (from the cache, or the client went away)
        body = b"".join(exchange.pending)[: self.waf.body_limit]
        if self.waf.decide(exchange, self.waf.inspect(exchange.request, body, self.kind)):
            exchange.forward()


def waf_start(exchange: Exchange, route: str) -> bool:
    """The stage's entry from `Exchange.start`: False if the request was answered."""
    waf = exchange.engine.wafs.get(route)
    return True if waf is None else waf.start(exchange)
