"""What a QUIC endpoint needs from an `https` listener's config, built at each (re)load.

aioquic takes one certificate chain and key per `QuicConfiguration`, and its TLS layer has no
hook to choose one from the ClientHello's SNI. So there is one configuration per certificate
of the listener, and the endpoint reads the name from the client's Initial (quic/hello.py)
and picks the configuration with the same `CertSelector` the TCP listener uses
(l4lb/tls/certs.py): exact name, then wildcard, then the first certificate.

The stateless reset key (RFC 9000 §10.3.2: tokens must be stable for a connection ID and
unguessable without the key) is derived from the first certificate's private key, so every
worker of an instance, and every instance sharing that certificate, answers the same
connection ID with the same token without any key to distribute (HAProxy asks for a
`cluster-secret`, nginx for a `quic_host_key` file; the private key is already the secret
the instances share).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration

from l4lb.config.schema import ListenerConfig
from l4lb.errors import L4lbError
from l4lb.tls.certs import CertSelector, load_pair

__all__ = ["CID_LENGTH", "QuicSettings", "quic_settings", "reset_token"]

CID_LENGTH = 8  # bytes of l4lb's connection IDs (aioquic's default); byte 0 names the worker


@dataclass(frozen=True, slots=True)
class QuicSettings:
    """The aioquic configurations (one per certificate) and the endpoint's own policy."""

    configuration: QuicConfiguration  # the default certificate's
    by_cert: dict[str, QuicConfiguration]  # certificate path -> its configuration
    selector: CertSelector | None  # None: one certificate, no need to read the SNI
    retry: str  # "auto" | "always" | "off"
    retry_threshold: int  # handshakes in progress before "auto" sends Retry
    max_streams: int
    qpack_table_size: int
    qpack_blocked_streams: int
    max_connections: int
    early_data: bool  # 0-RTT: session tickets issued, early requests for safe methods
    stateless_reset: bool
    reset_key: bytes

    def configuration_for(self, sni: str | None) -> QuicConfiguration:
        """The configuration whose certificate answers `sni` (as the TCP listener's)."""
        if self.selector is None:
            return self.configuration
        return self.by_cert[self.selector.select(sni).cert_path]


def reset_token(key: bytes, cid: bytes) -> bytes:
    """The stateless reset token of connection ID `cid` (RFC 9000 §10.3.2): 16 bytes."""
    return hmac.new(key, cid, hashlib.sha256).digest()[:16]


def quic_settings(config: ListenerConfig) -> QuicSettings:
    """Build the endpoint settings of an `https` listener with `http3 = true`. Reads the
    certificate files (blocking; they were just read for TCP too). Raises `L4lbError` when a
    key or chain cannot be loaded."""
    http = config.http
    by_cert: dict[str, QuicConfiguration] = {}
    pairs = []
    for cert in config.certs:
        configuration = QuicConfiguration(
            is_client=False,
            alpn_protocols=list(H3_ALPN),
            connection_id_length=CID_LENGTH,
            idle_timeout=http.quic_idle_timeout,
            max_data=http.quic_connection_window,
            max_stream_data=http.quic_stream_window,
            max_datagram_size=http.quic_max_datagram_size,
            congestion_control_algorithm=http.quic_congestion,
        )
        try:
            configuration.load_cert_chain(cert.cert, cert.key)
            pairs.append(load_pair(cert.cert, cert.key))
            with open(cert.key, "rb") as f:
                key_bytes = f.read()
        except (OSError, ValueError, TypeError, L4lbError) as exc:
            raise L4lbError(
                f"listener {config.name}: HTTP/3 cannot load {cert.cert} / {cert.key}: {exc}"
            ) from None
        by_cert.setdefault(pairs[-1].cert_path, configuration)
        if len(pairs) == 1:
            reset_key = hashlib.sha256(b"l4lb quic stateless reset\0" + key_bytes).digest()
    return QuicSettings(
        configuration=by_cert[pairs[0].cert_path],
        by_cert=by_cert,
        selector=CertSelector(pairs) if len(by_cert) > 1 else None,
        retry=http.quic_retry,
        retry_threshold=http.quic_retry_threshold,
        max_streams=http.quic_max_streams,
        qpack_table_size=http.qpack_table_size,
        qpack_blocked_streams=http.qpack_blocked_streams,
        max_connections=config.max_connections,
        early_data=http.quic_early_data,
        stateless_reset=http.quic_stateless_reset,
        reset_key=reset_key,
    )
