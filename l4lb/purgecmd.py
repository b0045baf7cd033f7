"""`l4lb purge`: remove stored responses from a running instance's cache, through the admin
API (`POST /cache/purge`, l4lb/cachepurge.py), and say how many went."""

from __future__ import annotations

import argparse
import sys
from urllib.parse import quote

from l4lb.adminclient import AdminClient
from l4lb.errors import L4lbError

__all__ = ["purge"]


def purge(args: argparse.Namespace) -> int:
    """0 when every worker purged; 1 (with the reason on stderr) otherwise."""
    if not (args.urls or args.prefix or args.tag or args.all):
        raise L4lbError("purge what? give URLs, --prefix, --tag or --all")
    body = {"urls": args.urls, "prefixes": args.prefix, "tags": args.tag}
    body = {k: v for k, v in body.items() if v}
    if args.all:
        body["all"] = True
    path = f"/cache/{quote(args.cache, safe='')}/purge" if args.cache else "/cache/purge"
    status, data = AdminClient(args.admin, args.token).call("POST", path, body)
    if not isinstance(data, dict) or (status >= 400 and "purged" not in data):
        error = data.get("error") if isinstance(data, dict) else str(data).strip()
        raise L4lbError(f"POST {path}: {status}: {error}")
    caches = ", ".join(f"{name} {n}" for name, n in data.get("caches", {}).items())
    workers = f" on {data['workers']} workers" if "workers" in data else ""
    print(f"purged {data['purged']} ({caches or 'no cache'}){workers}")
    if data.get("unanswered"):
        missing = ", ".join(str(i) for i in data["unanswered"])
        print(f"l4lb: worker(s) {missing} did not answer; purge again", file=sys.stderr)
        return 1
    return 0
