"""Build the TLS contexts a config asks for: at start and at every reload (so certificates
reload on SIGHUP), never per connection.

A `tls` listener gets one server context (`context.server_context`) whose SNI callback also
records the name the client asked for on the connection's SSLObject (`l4lb_sni`), for routing
and logs. A pool with `[pool.NAME.tls]` gets client contexts, the SNI to send and the name
to check (`UpstreamTls`).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from l4lb.config.schema import ListenerConfig, PoolConfig
from l4lb.errors import L4lbError
from l4lb.tls.certs import generate_selfsigned, load_pair
from l4lb.tls.context import client_context, server_context
from l4lb.tls.native import NativeUnavailable

__all__ = ["UpstreamTls", "listener_context", "upstream_tls"]


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """How a pool speaks TLS to its servers: the client context, the SNI, the name checked.

    `connect_args` gives each connection its context and `server_hostname`. With
    `verify = true` the certificate must be valid for the server's `verify_name`, else the
    pool's, else `sni`, else the server's host; the SNI sent is `sni`, else that name. When
    the two are the same (the usual case) the standard library checks it on `context`; when
    they differ, a context in `by_name` checks the name whatever the SNI.
    """

    context: ssl.SSLContext
    sni: str | None = None
    verify: str = "name"  # "name" | "chain" | "none"
    verify_name: str | None = None
    server_names: Mapping[str, str] = field(default_factory=dict)  # server name -> verify_name
    by_name: Mapping[str, ssl.SSLContext] = field(default_factory=dict)

    def name_for(self, server: str, host: str) -> str:
        """The name the certificate of `server` (at `host`) is checked against (for "name")."""
        return self.server_names.get(server) or self.verify_name or self.sni or host

    def connect_args(self, server: str, host: str) -> tuple[ssl.SSLContext, str]:
        """(context, server_hostname) for a connection to `server` at `host`."""
        name = self.name_for(server, host)
        sni = self.sni or name
        if self.verify == "name" and name != sni:
            return self.by_name[name], sni
        return self.context, sni

    def failure(self, exc: BaseException, server: str, host: str) -> str:
        """Why a handshake with `server` failed, for the log. The standard library's message
        names `server_hostname`, which is the SNI, not always the name checked; an address
        mismatch says what to set."""
        if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_code in (62, 64):
            # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
            name = self.name_for(server, host)
            what = "address" if exc.verify_code == 64 else "name"
            hint = ' (set verify_name, or verify = "chain")' if exc.verify_code == 64 else ""
            return f"certificate verify failed: not valid for the {what} {name!r}{hint}"
        if isinstance(exc, ssl.SSLCertVerificationError):
            return f"certificate verify failed: {exc.verify_message}"
        return str(exc) or type(exc).__name__


def listener_context(config: ListenerConfig) -> ssl.SSLContext:
    """The server context for a `tls` listener. Raises CertError (an L4lbError)."""
    pairs = []
    for cert in config.certs:
        if cert.selfsigned and not Path(cert.cert).exists() and not Path(cert.key).exists():
            Path(cert.cert).parent.mkdir(parents=True, exist_ok=True)
            generate_selfsigned(cert.cert, cert.key, names=cert.names)
        pairs.append(load_pair(cert.cert, cert.key))
    ocsp = {pair.cert_path: c.ocsp for pair, c in zip(pairs, config.certs, strict=True) if c.ocsp}
    ctx = server_context(
        pairs,
        min_version=config.tls_min_version,
        alpn=config.alpn or (("h2", "http/1.1") if config.protocol == "https" else ()),
        client_ca=config.client_ca or None,
        client_cert_required=config.client_cert == "required",
        ocsp_response_files=ocsp,
    )
    if config.client_cert == "optional" and config.client_ca:
        ctx.verify_mode = ssl.CERT_OPTIONAL
    switch = ctx.sni_callback

    def record_sni(conn: ssl.SSLObject, name: str | None, current: ssl.SSLContext) -> None:
        conn.l4lb_sni = name  # type: ignore[attr-defined]
        if switch is not None:
            switch(conn, name, current)

    ctx.sni_callback = record_sni  # type: ignore[assignment]
    return ctx


def upstream_tls(config: PoolConfig) -> UpstreamTls | None:
    """The TLS a pool speaks to its servers, or None. Raises CertError, or L4lbError when a
    name differing from the SNI cannot be checked on this Python."""
    tls = config.tls
    if tls is None:
        return None

    def context(name: str | None = None) -> ssl.SSLContext:
        return client_context(
            ca_file=tls.ca_file or None,
            verify=tls.verify,
            name=name,
            cert=tls.cert or None,
            key=tls.key or None,
            alpn=tls.alpn,
        )

    up = UpstreamTls(
        context(),
        tls.sni or None,
        tls.verify,
        tls.verify_name or None,
        {s.name: s.verify_name for s in config.servers if s.verify_name},
    )
    by_name: dict[str, ssl.SSLContext] = {}
    if tls.verify == "name" and tls.sni:
        for server in config.servers:
            name = up.name_for(server.name, server.address.host)
            if name != tls.sni and name not in by_name:
                try:
                    by_name[name] = context(name)
                except NativeUnavailable as exc:
                    raise L4lbError(
                        f"pool {config.name}: cannot check the name {name!r} apart from the "
                        f"SNI {tls.sni!r} on this Python ({exc}); leave sni out to send "
                        "the verified name"
                    ) from None
    return replace(up, by_name=by_name) if by_name else up
