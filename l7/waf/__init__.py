"""The WAF stage of the HTTP pipeline (docs/CONFIG.md, "WAF").

- `rules`: the rule file format (TOML) and its loading, with located errors;
- `decode`: URL (repeated), HTML-entity and unicode decoding of what is inspected;
- `extract`: a request (and its bounded body) as the values each target names;
- `matcher`: the rule set compiled into Hyperscan databases, one per target;
- `config`: the `waf` key of routes and listeners;
- `stage`: the per-route live object the Exchange calls: scoring, detect/block, the log.
"""
