"""`l4lb`: the command line. Prints `L4lbError`s as messages; anything else is a bug."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from functools import partial
from typing import TYPE_CHECKING

from l4lb import __version__
from l4lb.config import Config, load
from l4lb.errors import ConfigErrors, L4lbError

if TYPE_CHECKING:
    from l4lb.adminclient import AdminClient
    from l4lb.runtime import Runtime
    from l4lb.supervisor import Supervisor

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
        "SIGINT drains connections and exits; a second SIGTERM/SIGINT, or SIGQUIT, closes "
        "them at once. Under systemd ($NOTIFY_SOCKET) it reports READY, RELOADING and "
        "STOPPING.",
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
        "--log-file",
        metavar="PATH",
        help="write event and access logs to PATH (with the live view, logs go nowhere else)",
    )
    up.add_argument(
        "--log-target",
        metavar="TARGET",
        help='event log to "stderr", "syslog" (/dev/log), "syslog:/path" or '
        '"syslog:HOST:PORT" (UDP); default: the config\'s global.log, else stderr',
    )
    up.add_argument(
        "--pid-file",
        metavar="PATH",
        help="write the pid to PATH once the listeners are bound; removed at exit",
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

    def admin_args(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--admin",
            metavar="ADDR",
            help="the instance's admin API (default $L4LB_ADMIN or 127.0.0.1:9900)",
        )
        p.add_argument("--token", help="bearer token (default $L4LB_ADMIN_TOKEN)")

    top = sub.add_parser(
        "top",
        help="the live view of a running instance",
        description="Show the live view of a running instance, read from its "
        "admin API (works over SSH). Keys: arrows select, d drains, e enables, "
        "/ filters, q quits the view (not the proxy). Without a terminal (a pipe, "
        "ssh without -t), print a plain summary every --interval seconds instead.",
    )
    admin_args(top)
    top.add_argument("--once", action="store_true", help="print the plain summary once and exit")
    top.add_argument(
        "--interval",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="seconds between plain summaries (default 2)",
    )
    reload = sub.add_parser(
        "reload",
        help="reload a running instance's config",
        description="POST /reload to the admin API (or, with --pid-file, send SIGHUP to "
        "the pid in PATH) and wait for the outcome in the admin API's /status; exit 1 "
        "with the errors if the new config was refused (the old one keeps running).",
    )
    reload.add_argument(
        "--pid-file",
        metavar="PATH",
        help="signal the instance whose pid is in PATH (SIGHUP) instead of POST /reload",
    )
    reload.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for the outcome (30)",
    )
    admin_args(reload)
    for verb, what in (
        ("drain", "no new connections; established ones finish"),
        ("enable", "take new connections again"),
    ):
        cmd = sub.add_parser(
            verb,
            help=f"{verb} a server of a running instance",
            description=f"{verb.capitalize()} POOL SERVER: {what}. Kept across "
            "reloads until changed again.",
        )
        cmd.add_argument("pool")
        cmd.add_argument("server")
        admin_args(cmd)
    purge = sub.add_parser(
        "purge",
        help="remove stored responses from a running instance's HTTP cache",
        description="POST /cache/purge (or /cache/NAME/purge with --cache) to the admin API: "
        "remove the responses stored under each URL (written as the cache keys them, "
        "scheme://host/path?query; without a scheme both http and https), under --prefix, "
        "or tagged --tag in the cache's tag header (Surrogate-Key by default), from every "
        "worker. Prints how many were removed.",
    )
    purge.add_argument("urls", nargs="*", metavar="URL", help="an exact URL to purge")
    purge.add_argument("--prefix", action="append", default=[], help="purge URLs starting so")
    purge.add_argument("--tag", action="append", default=[], help="purge responses so tagged")
    purge.add_argument("--all", action="store_true", help="purge everything")
    purge.add_argument("--cache", metavar="NAME", help="only this [cache.NAME]")
    admin_args(purge)
    ready = sub.add_parser(
        "ready",
        help="exit 0 if a running instance is ready to take traffic, else 1",
        description="GET /ready from the admin API: exit 0 when the config is loaded, every "
        "listener accepts and every pool it uses has a server up; exit 1 with the reasons "
        "otherwise, or when the admin API does not answer within --timeout. Made for "
        "keepalived's vrrp_script (docs/HA.md).",
    )
    ready.add_argument(
        "--timeout",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how long to wait for the answer (2)",
    )
    ready.add_argument("--quiet", "-q", action="store_true", help="print nothing")
    admin_args(ready)
    plan_cmd = sub.add_parser(
        "plan",
        help="show what reloading with a config would change",
        description="Compare NEW with the config a running instance is "
        "using (from its admin API), or with --against FILE.",
    )
    plan_cmd.add_argument("config", help="the new config")
    plan_cmd.add_argument("--against", metavar="FILE", help="compare with this file instead")
    admin_args(plan_cmd)

    route = sub.add_parser(
        "route",
        help="show which HTTP route a request would take, and why",
        description="Explain how an http(s) listener of FILE routes METHOD URL, without "
        "starting anything: each route tried, why it did not match, and what the match does.",
    )
    route.add_argument("config", help="the config file")
    route.add_argument("method", help="e.g. GET")
    route.add_argument(
        "url",
        help="e.g. http://api.example.com/v1/users?page=2, or /v1/users with -H 'Host: NAME'",
    )
    route.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a request header (repeatable), as with curl",
    )
    route.add_argument("--listener", help="which http(s) listener (default: the only one)")
    route.add_argument(
        "--absolute-form",
        action="store_true",
        help="send URL as the request-target (GET http://host/path HTTP/1.1, as to a forward "
        "proxy): its authority wins over any Host, as l4lb routes it",
    )

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

    # Hidden (no help): one worker process, started by `l4lb up` when global.workers > 1.
    worker = sub.add_parser("worker", description="A worker process (started by l4lb up).")
    worker.add_argument("config", help="the config file (its text comes on stdin)")
    worker.add_argument("--index", type=int, default=0)
    worker.add_argument("--quic-socket", action="append", default=[])  # ADDRESS=FD (steering)
    worker.add_argument("--quic-channel", type=int, default=-1)  # more of them, on reload
    worker.add_argument("--control-fd", type=int, required=True)
    worker.add_argument("--shared-fd", type=int, default=-1)
    worker.add_argument("--log-format", choices=("text", "json"), default="text")
    worker.add_argument("--log-file", metavar="PATH")
    worker.add_argument("--log-target", metavar="TARGET")
    worker.add_argument("--no-access-log", action="store_true")
    return parser


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


def _cmd_route(args: argparse.Namespace) -> int:
    from l7.explain import explain, header_arg

    config = load(args.config)
    http = [lc for lc in config.listeners if lc.protocol in ("http", "https")]
    if args.listener:
        http = [lc for lc in http if lc.name == args.listener]
    if len(http) != 1:
        names = ", ".join(lc.name for lc in http) or "none"
        raise L4lbError(f"pick one http(s) listener with --listener (found: {names})")
    (listener,) = http
    headers = [header_arg(h) for h in args.header]
    scheme = "https" if listener.protocol == "https" else "http"
    text = explain(
        listener.routes, args.method.upper(), args.url, headers, scheme, args.absolute_form
    )
    if text.endswith("no route matched: 404") and listener.pool:
        text = text[: -len("404")] + f"forward to pool {listener.pool!r} (the listener's pool)"
    print(f"listener {listener.name}:\n{text}")
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


def _cmd_admin(args: argparse.Namespace) -> int:
    from l4lb.adminclient import AdminClient

    client = AdminClient(args.admin, args.token)
    if args.command == "reload":
        from l4lb.reloadcmd import reload_instance

        return reload_instance(client, args.pid_file, args.timeout)
    data = client.ok("POST", f"/servers/{args.pool}/{args.server}/{args.command}")
    print(f"{data['pool']}/{data['server']}: {data['state']} ({data['active']} active)")
    return 0


def _cmd_ready(args: argparse.Namespace) -> int:
    from l4lb.adminclient import AdminClient

    try:
        status, data = AdminClient(args.admin, args.token, args.timeout).call("GET", "/ready")
    except L4lbError as exc:
        if not args.quiet:
            print(f"l4lb: not ready: {exc}", file=sys.stderr)
        return 1
    reasons = data.get("reasons", []) if isinstance(data, dict) else [str(data).strip()]
    if status == 200:
        if not args.quiet:
            print("ready")
        return 0
    if not args.quiet:
        error = data.get("error") if isinstance(data, dict) else None
        for reason in reasons or [error or f"status {status}"]:
            print(f"not ready: {reason}", file=sys.stderr)
    return 1


def _cmd_plan(args: argparse.Namespace) -> int:
    from l4lb.admin import config_json
    from l4lb.plan import plan

    new = config_json(load(args.config))
    if args.against:
        old = config_json(load(args.against))
    else:
        from l4lb.adminclient import AdminClient

        old = AdminClient(args.admin, args.token).ok("GET", "/config")
    lines = plan(old, new)
    print("\n".join(lines) if lines else "no changes")
    return 0


def _cmd_top(args: argparse.Namespace) -> int:
    import anyio

    from l4lb.adminclient import AdminClient
    from l4lb.console import run_view

    client = AdminClient(args.admin, args.token)
    status = client.ok("GET", "/status")  # fail early, before taking over the terminal
    if args.once or not (sys.stdin.isatty() and sys.stdout.isatty()):
        return _top_plain(client, status, None if args.once else max(args.interval, 0.1))

    async def snapshot() -> dict:
        return await anyio.to_thread.run_sync(client.ok, "GET", "/status")

    async def act(action: str, pool: str, server: str) -> str:
        path = f"/servers/{pool}/{server}/{action}"
        await anyio.to_thread.run_sync(client.ok, "POST", path)
        return f"{action} {pool}/{server}"

    anyio.run(run_view, snapshot, act)
    return 0


def _top_plain(client: AdminClient, status: dict, interval: float | None) -> int:
    """`l4lb top` with no terminal to draw on: plain summaries, a blank line between them,
    every `interval` seconds (once if None) until interrupted or the reader goes away."""
    from l4lb.plainview import plain_summary

    try:
        while True:
            print(plain_summary(status), flush=True)
            if interval is None:
                return 0
            time.sleep(interval)
            status = client.ok("GET", "/status")
            print(flush=True)
    except BrokenPipeError:  # `l4lb top | head`: the reader has seen enough
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - nothing more to flush at exit
        return 0


def _cmd_up(args: argparse.Namespace) -> int:
    import anyio

    from l4lb.cluster import resolve_workers
    from l4lb.fdlimit import nofile_warning, raise_nofile
    from l4lb.logsetup import setup_logs
    from l4lb.pidfile import PidFile
    from l4lb.runtime import Runtime
    from l4lb.sdnotify import Notifier
    from l4lb.supervisor import Supervisor

    config = load(args.config)
    pid_file = PidFile(args.pid_file) if args.pid_file else None
    if pid_file is not None:
        pid_file.claim()  # before binding anything: "already running" beats "address in use"
    notifier = Notifier.from_environ()
    fmt = args.log_format or config.settings.log_format
    tui = not args.no_tui and sys.stdout.isatty() and sys.stdin.isatty()
    access_log = setup_logs(
        config.settings,
        fmt,
        log_file=args.log_file,
        log_target=args.log_target,
        quiet=tui,
        no_access_log=args.no_access_log,
    )
    log = logging.getLogger("l4lb")
    log.info("l4lb %s starting with %s (pid %d)", __version__, config.file, os.getpid())
    warning = nofile_warning(config, raise_nofile())  # workers inherit the raised limit
    if warning:
        log.warning("%s", warning)
    if os.geteuid() == 0 and not config.settings.user:
        log.warning("running as root: set [global] user to drop privileges once bound")
    count = resolve_workers(config.settings.workers)
    runtime: Runtime | Supervisor
    if count > 1:
        worker_args = ["--log-format", fmt]
        if args.log_target:
            worker_args += ["--log-target", args.log_target]
        if args.log_file:
            worker_args += ["--log-file", args.log_file]
        if args.no_access_log:
            worker_args.append("--no-access-log")
        quiet = tui and not args.log_file  # the live view owns the terminal
        runtime = Supervisor(
            config.file,
            count,
            worker_args=worker_args,
            quiet=quiet,
            notifier=notifier,
            pid_file=pid_file,
            reopen=access_log.reopen,
        )
    else:
        runtime = Runtime(config, access_log, notifier=notifier, pid_file=pid_file)
    main = partial(_up_with_view, runtime) if tui else runtime.run
    try:
        anyio.run(main, backend="asyncio", backend_options=_backend_options())
    finally:
        if pid_file is not None:
            pid_file.remove()
    log.info("stopped")
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    import anyio

    from l4lb.config import load_text
    from l4lb.fdlimit import raise_nofile
    from l4lb.logsetup import setup_logs
    from l4lb.workers import WorkerTag, serve_worker

    # The supervisor resolved the names already; a worker restarted during a DNS outage
    # still starts (a name that does not resolve then keeps its server out of rotation).
    config = load_text(sys.stdin.read(), args.config, resolve=False)
    raise_nofile()  # the supervisor did (and warned); a worker started by hand too
    access_log = setup_logs(
        config.settings,
        args.log_format,
        log_file=args.log_file,
        log_target=args.log_target,
        no_access_log=args.no_access_log,
    )
    for handler in logging.getLogger("l4lb").handlers:
        handler.addFilter(WorkerTag(args.index))
    quic = {addr: int(fd) for addr, _, fd in (s.rpartition("=") for s in args.quic_socket)}
    main = partial(
        serve_worker,
        config,
        access_log,
        args.index,
        args.control_fd,
        quic,
        args.shared_fd,
        args.quic_channel,
    )
    anyio.run(main, backend="asyncio", backend_options=_backend_options())
    return 0


async def _up_with_view(runtime: Runtime | Supervisor) -> None:
    """`l4lb up` on a terminal: the proxy and its live view; `q` stops both."""
    import anyio

    from l4lb.console import run_view

    async def snapshot() -> dict:
        while runtime.stats is None:
            await anyio.sleep(0.05)
        return runtime.stats.snapshot(runtime, anyio.current_time())

    async def act(action: str, pool: str, server: str) -> str:
        found = runtime.set_draining(pool, server, action == "drain")
        if found is not None and runtime.stats is not None:
            runtime.stats.operator(anyio.current_time(), pool, found, action, "the live view")
        return f"{action} {pool}/{server}"

    async with anyio.create_task_group() as tg:

        async def view() -> None:
            await run_view(snapshot, act)
            runtime.stop()

        tg.start_soon(view)
        await runtime.run()
        tg.cancel_scope.cancel()


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
        if args.command == "route":
            return _cmd_route(args)
        if args.command in ("reload", "drain", "enable"):
            return _cmd_admin(args)
        if args.command == "ready":
            return _cmd_ready(args)
        if args.command == "purge":
            from l4lb.purgecmd import purge

            return purge(args)
        if args.command == "plan":
            return _cmd_plan(args)
        if args.command == "top":
            return _cmd_top(args)
        if args.command == "worker":
            return _cmd_worker(args)
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
