"""What a QUIC endpoint needs from an `https` listener's config, built at each (re)load.

aioquic takes one certificate chain and key per `QuicConfiguration`, and its TLS layer has no
hook to choose one from the ClientHello's SNI (the ClientHello is inside the encrypted
Initial packets, and `aioquic.tls.Context` reads `configuration.certificate` as it is). So an
HTTP/3 endpoint serves the listener's first certificate (its default) to every client; the
limit is stated in docs/CONFIG.md. Routing by Host and
`:authority` is unaffected: it happens in the pipeline, after the handshake.
"""

from __future__ import annotations

from dataclasses import dataclass

from aioquic.h3.connection import H3_ALPN
from aioquic.quic.configuration import QuicConfiguration

from l4lb.config.schema import ListenerConfig
from l4lb.errors import L4lbError

__all__ = ["QuicSettings", "quic_settings"]


@dataclass(frozen=True, slots=True)
class QuicSettings:
    """The aioquic configuration and the endpoint's own policy (Retry, limits)."""

    configuration: QuicConfiguration
    retry: str  # "auto" | "always" | "off"
    retry_threshold: int  # handshakes in progress before "auto" sends Retry
    max_streams: int
    qpack_table_size: int
    qpack_blocked_streams: int
    max_connections: int


def quic_settings(config: ListenerConfig) -> QuicSettings:
    """Build the endpoint settings of an `https` listener with `http3 = true`. Reads the
    certificate files (blocking; they were just read for TCP too). Raises `L4lbError` when the
    key or chain cannot be loaded."""
    http = config.http
    cert = config.certs[0]
    configuration = QuicConfiguration(
        is_client=False,
        alpn_protocols=list(H3_ALPN),
        idle_timeout=http.quic_idle_timeout,
        max_data=http.quic_connection_window,
        max_stream_data=http.quic_stream_window,
        max_datagram_size=http.quic_max_datagram_size,
        congestion_control_algorithm=http.quic_congestion,
    )
    try:
        configuration.load_cert_chain(cert.cert, cert.key)
    except (OSError, ValueError, TypeError) as exc:
        raise L4lbError(
            f"listener {config.name}: HTTP/3 cannot load {cert.cert} / {cert.key}: {exc}"
        ) from None
    return QuicSettings(
        configuration=configuration,
        retry=http.quic_retry,
        retry_threshold=http.quic_retry_threshold,
        max_streams=http.quic_max_streams,
        qpack_table_size=http.qpack_table_size,
        qpack_blocked_streams=http.qpack_blocked_streams,
        max_connections=config.max_connections,
    )
