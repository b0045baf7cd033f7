"""A small client for a running instance's admin API, for `l4lb reload|drain|top|ready` etc."""

from __future__ import annotations

import http.client
import json
import os
from typing import Any

from l4lb.config.values import BadValue, parse_address
from l4lb.errors import L4lbError

__all__ = ["DEFAULT_ADMIN", "AdminClient"]

DEFAULT_ADMIN = "127.0.0.1:9900"


class AdminClient:
    def __init__(
        self, address: str | None = None, token: str | None = None, timeout: float = 10.0
    ) -> None:
        text = address or os.environ.get("L4LB_ADMIN") or DEFAULT_ADMIN
        try:
            self.address = parse_address(text, default_host="127.0.0.1")
        except BadValue as exc:
            raise L4lbError(f"--admin {text!r}: {exc.message}") from None
        self.token = token or os.environ.get("L4LB_ADMIN_TOKEN") or None
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One request (`body`, if given, sent as JSON); returns (status, decoded JSON or
        text). Raises L4lbError if the admin API cannot be reached."""
        conn = http.client.HTTPConnection(
            self.address.host, self.address.port, timeout=self.timeout
        )
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
        except OSError as exc:
            raise L4lbError(
                f"cannot reach the admin API at {self.address}: {exc.strerror or exc} "
                "(is l4lb running with [admin] bind set? --admin ADDR picks another)"
            ) from None
        finally:
            conn.close()
        if resp.getheader("content-type", "").startswith("application/json"):
            return resp.status, json.loads(body)
        return resp.status, body.decode(errors="replace")

    def ok(self, method: str, path: str) -> Any:
        status, data = self.call(method, path)
        if status >= 400:
            error = data.get("error") if isinstance(data, dict) else data
            raise L4lbError(f"{method} {path}: {status}: {error}")
        return data
