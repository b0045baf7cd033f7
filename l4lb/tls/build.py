"""Build the TLS contexts a config asks for: at start and at every reload (so certificates
reload on SIGHUP), never per connection.

A `tls` listener gets one server context (`context.server_context`) whose SNI callback also
records the name the client asked for on the connection's SSLObject (`l4lb_sni`), for routing
and logs. A pool with `[pool.NAME.tls]` gets a client context and the SNI to send.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from l4lb.config.schema import ListenerConfig, PoolConfig
from l4lb.tls.certs import generate_selfsigned, load_pair
from l4lb.tls.context import client_context, server_context

__all__ = ["UpstreamTls", "listener_context", "upstream_tls"]


@dataclass(frozen=True, slots=True)
class UpstreamTls:
    """How a pool speaks TLS to its servers: the client context and the SNI to send (None:
    the server's host)."""

    context: ssl.SSLContext
    sni: str | None = None


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
    """The TLS a pool speaks to its servers, or None. Raises CertError."""
    tls = config.tls
    if tls is None:
        return None
    ctx = client_context(
        ca_file=tls.ca_file or None,
        verify=tls.verify,
        cert=tls.cert or None,
        key=tls.key or None,
        alpn=tls.alpn,
    )
    return UpstreamTls(ctx, tls.sni or None)
