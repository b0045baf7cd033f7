"""`l4lb`: the command line. Prints `L4lbError`s as messages; anything else is a bug."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

from l4lb import __version__
from l4lb.config import Config, load
from l4lb.errors import ConfigErrors, L4lbError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="l4lb",
        description="A reverse proxy and load balancer: TCP, TLS, HTTP and HTTP/3.",
    )
    parser.add_argument("--version", action="version", version=f"l4lb {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    up = sub.add_parser(
        "up",
        help="run the proxy with a config file",
        description="Run the proxy. SIGHUP reloads the config, SIGTERM or "
        "SIGINT drains connections and exits.",
    )
    up.add_argument("config", help="path to the TOML config, e.g. configs/site.toml")
    up.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="log format (default: the config's global.log_format, else text)",
    )
    up.add_argument(
        "--no-access-log", action="store_true", help="do not write one line per closed connection"
    )
    up.add_argument(
        "--no-tui",
        action="store_true",
        help="plain logs instead of the live view (the default when stdout is not a terminal)",
    )

    check = sub.add_parser(
        "check",
        help="validate a config file without starting",
        description="Validate a config; exit 1 with one line per error.",
    )
    check.add_argument("config", help="path to the TOML config")

    cert = sub.add_parser(
        "cert", help="certificate tools", description="Certificate tools for tls listeners."
    )
    cert_sub = cert.add_subparsers(dest="cert_command", metavar="TOOL", required=True)
    selfsigned = cert_sub.add_parser(
        "selfsigned",
        help="write a self-signed certificate and key",
        description="Write an EC P-256 key (mode 0600) and a self-signed certificate for the "
        "given names and 127.0.0.1/::1. Clients trust it with e.g. curl --cacert CERT.",
    )
    selfsigned.add_argument("--cert", default="l4lb.crt", help="certificate file (l4lb.crt)")
    selfsigned.add_argument("--key", default="l4lb.key", help="key file (l4lb.key)")
    selfsigned.add_argument(
        "--name",
        action="append",
        dest="names",
        metavar="NAME",
        help="a DNS name to cover (repeatable; default localhost)",
    )
    selfsigned.add_argument("--days", type=int, default=365, help="validity in days (365)")
    return parser


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created))
        return json.dumps(
            {
                "time": stamp,
                "type": "event",
                "level": record.levelname.lower(),
                "message": record.getMessage(),
            }
        )


def _setup_logging(fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S")
        )
    root = logging.getLogger("l4lb")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def _summary(config: Config) -> str:
    servers = sum(len(p.servers) for p in config.pools)
    return (
        f"{config.file}: OK ({len(config.listeners)} listener(s), {len(config.pools)} "
        f"pool(s), {servers} server(s))"
    )


def _cmd_check(args: argparse.Namespace) -> int:
    config = load(args.config)
    print(_summary(config))
    return 0


def _cmd_cert(args: argparse.Namespace) -> int:
    from l4lb.tls.certs import generate_selfsigned

    pair = generate_selfsigned(
        args.cert, args.key, names=args.names or ["localhost"], days=args.days
    )
    print(
        f"wrote {pair.cert_path} and {pair.key_path} for {', '.join(pair.names)}, valid "
        f"until {pair.not_after:%Y-%m-%d}"
    )
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    import anyio

    from l4lb.accesslog import AccessLog
    from l4lb.runtime import Runtime

    config = load(args.config)
    fmt = args.log_format or config.settings.log_format
    _setup_logging(fmt)
    access_log = AccessLog(fmt, sys.stdout)
    access_log.enabled = config.settings.access_log and not args.no_access_log
    runtime = Runtime(config, access_log)
    logging.getLogger("l4lb").info(
        "l4lb %s starting with %s (pid %d)", __version__, config.file, os.getpid()
    )
    anyio.run(runtime.run, backend="asyncio", backend_options=_backend_options())
    logging.getLogger("l4lb").info("stopped")
    return 0


def _backend_options() -> dict[str, bool]:
    """uvloop when installed, unless L4LB_LOOP=asyncio asks for the standard loop."""
    if os.environ.get("L4LB_LOOP", "") == "asyncio":
        return {}
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return {}
    return {"use_uvloop": True}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "check":
            return _cmd_check(args)
        if args.command == "cert":
            return _cmd_cert(args)
        return _cmd_up(args)
    except ConfigErrors as exc:
        count = len(exc.errors)
        print(str(exc), file=sys.stderr)
        print(
            f"{count} error{'s' if count != 1 else ''} in {exc.errors[0].file}"
            if count
            else "config error",
            file=sys.stderr,
        )
        return 1
    except L4lbError as exc:
        print(f"l4lb: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
