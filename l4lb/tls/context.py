"""`ssl.SSLContext` factories: one for a terminating listener, one for TLS to a pool's servers.

The standard library's `ssl` is used, not pyOpenSSL, because it is what asyncio's and uvloop's
transports take (`loop.create_server(..., ssl=ctx)`, `start_tls`), and anyio's TLS streams too.

Server side, `server_context(pairs, ...)` returns the context to hand to the listener:

- One `SSLContext` per certificate pair, all built by the same function with the same settings.
  The returned one belongs to the default pair; its `sni_callback` asks a `CertSelector` which
  pair answers the client's SNI and switches the connection to that pair's context
  (`ssl_object.context = ...`, OpenSSL's `SSL_set_SSL_CTX`). The settings must be identical on
  every context: OpenSSL copies some of them into the connection when it starts (protocol
  versions, options, verify mode) and keeps them after the switch, and takes others from the
  new context (certificate, ALPN choice).
- TLS 1.2 and 1.3 (`min_version="1.3"` drops 1.2). For TLS 1.2 the cipher list is Mozilla's
  "intermediate" one without the DHE suites: ECDHE key exchange with AES-GCM or
  ChaCha20-Poly1305 only; no CBC (Lucky13, padding oracles), no static RSA key exchange (no
  forward secrecy, ROBOT). TLS 1.3 suites are OpenSSL's defaults, the same three Mozilla lists.
  OpenSSL security level 2 is pinned so that weak keys are refused the same way everywhere.
- The server's cipher order wins (as asked for l4lb; Mozilla's intermediate profile leaves the
  choice to clients since every suite on the list is strong), with OpenSSL's
  `PRIORITIZE_CHACHA`: a client that lists ChaCha20 first, typically one without AES hardware,
  gets ChaCha20.
- Renegotiation is off (client-initiated renegotiation is a cheap CPU DoS and HTTP/2 forbids it).
- Resumption works: TLS 1.3 sends `num_tickets` (2) tickets after each full handshake and TLS 1.2
  session tickets (RFC 5077) are on. Ticket keys live in the default context, whatever context
  SNI switched to, so a ticket issued for one name resumes on that name. Limits of the standard
  library: it cannot set ticket keys, so each process (each worker, each reload) makes its own
  random ones; a ticket only resumes on the worker that issued it and until the next reload.
- ALPN (RFC 7301) picks from `alpn` in server preference order. A client with no protocol in
  common gets no ALPN and the listener's default protocol: RFC 7301 §3.2 asks for a fatal
  `no_application_protocol` alert (nginx sends it since 1.21.4), but the standard library's ALPN
  callback always carries on without.
- mTLS: with `client_ca`, the server asks for a client certificate and verifies it against that
  CA file; `client_cert_required=True` refuses clients without one. `peer_subject()` then names
  the verified client.

OCSP stapling (RFC 6066 §8): a configured DER response is validated with `load_ocsp_response`
(readable, successful, unexpired, for that certificate) and stapled by `l4lb.tls.ocsp`, which
installs OpenSSL's status callback under the standard library context (the `ssl` module has no
OCSP API; python/cpython#88946). Where that cannot be done safely on this Python, the response
is only validated and a warning says it is not stapled. Responses are read at start and at
each reload: refresh the file and reload before it expires.

Client side, `client_context(...)` is for a pool that speaks TLS to its servers: verification
(chain and name, chain only, or none) against `ca_file` or the system store, optional client
certificate, ALPN. The standard library takes one name per connection, `server_hostname`, as
both the SNI sent and the name the certificate must carry (`loop.create_connection(...,
ssl=ctx, server_hostname=name)`). A context made with `name=` checks that name instead, so
the SNI can differ (`l4lb.tls.build.UpstreamTls.connect_args` picks the context and SNI).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence

from cryptography import x509
from cryptography.x509 import ocsp

from l4lb.tls.certs import CertError, CertPair, CertSelector, StrPath, load_pair, read_file

__all__ = [
    "TLS12_CIPHERS",
    "TLS_VERSIONS",
    "VERIFY_MODES",
    "client_context",
    "load_ocsp_response",
    "peer_subject",
    "server_context",
]

log = logging.getLogger(__name__)

# Config value -> lowest protocol version accepted.
TLS_VERSIONS: Mapping[str, ssl.TLSVersion] = {
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}

# Mozilla Server Side TLS "intermediate" TLS 1.2 suites, minus DHE: forward-secret ECDHE with an
# AEAD cipher. ECDSA before RSA so that a pair with an EC key is not offered RSA suites first.
TLS12_CIPHERS = ":".join(
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ]
)
# 112-bit security: RSA/DH >= 2048 bits, ECC >= 224 bits, no SHA-1 signatures.
_SECLEVEL = "@SECLEVEL=2"
# SSL_OP_PRIORITIZE_CHACHA (OpenSSL >= 1.1.1): with server preference, still honour a client
# that puts ChaCha20 first. The ssl module does not name this option.
_OP_PRIORITIZE_CHACHA = 1 << 21

SniCallback = Callable[[ssl.SSLObject, str | None, ssl.SSLContext], int | None]


# -- server --------------------------------------------------------------------------------------


def server_context(
    pairs: Iterable[CertPair],
    *,
    default: CertPair | None = None,
    min_version: str = "1.2",
    alpn: Sequence[str] = ("http/1.1",),
    client_ca: StrPath | None = None,
    client_cert_required: bool = False,
    ocsp_response_files: Mapping[str, StrPath] | None = None,
) -> ssl.SSLContext:
    """The `SSLContext` a terminating listener serves `pairs` with (see the module docstring).

    `pairs` come from `load_pair`; `default` answers clients without SNI or with a name no pair
    covers (first pair if None). `min_version` is a key of `TLS_VERSIONS`. `alpn` lists protocol
    names in server preference order (`("h2", "http/1.1")`); empty disables ALPN. `client_ca`
    turns on mTLS. `ocsp_response_files` maps a pair's `cert_path` to a DER OCSP response file;
    the responses are validated but not stapled.

    Raises `CertError` when a file is unusable (client CA, OCSP response, or a pair OpenSSL
    refuses), ValueError for arguments no config should produce (no pairs, unknown version,
    `client_cert_required` without `client_ca`). Blocks on file reads: build contexts at startup
    or reload, not per connection.
    """
    pairs = tuple(pairs)
    if min_version not in TLS_VERSIONS:
        raise ValueError(f"min_version {min_version!r}: allowed {', '.join(TLS_VERSIONS)}")
    if client_cert_required and client_ca is None:
        raise ValueError("client_cert_required needs client_ca to verify client certificates")
    selector = CertSelector(pairs, default)
    staples = _check_ocsp(pairs, ocsp_response_files or {})
    contexts: dict[CertPair, ssl.SSLContext] = {}
    for pair in (selector.default, *pairs):
        if pair not in contexts:
            contexts[pair] = _pair_context(
                pair, TLS_VERSIONS[min_version], alpn, client_ca, client_cert_required
            )
    for pair, response in staples.items():
        _staple(contexts[pair], pair, response)
    main = contexts[selector.default]
    if len(contexts) > 1:
        main.sni_callback = _sni_switch(selector, contexts)
    return main


def _pair_context(
    pair: CertPair,
    min_version: ssl.TLSVersion,
    alpn: Sequence[str],
    client_ca: StrPath | None,
    client_cert_required: bool,
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = min_version
    ctx.set_ciphers(f"{TLS12_CIPHERS}:{_SECLEVEL}")
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | _OP_PRIORITIZE_CHACHA
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    ctx.options &= ~ssl.OP_NO_TICKET
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    try:
        ctx.load_cert_chain(pair.cert_path, pair.key_path)
    except ssl.SSLError as e:
        raise CertError(pair.cert_path, f"OpenSSL refused it: {e.reason or e}") from None
    except OSError as e:
        raise CertError(pair.cert_path, f"cannot read: {e.strerror or e}") from None
    if client_ca is not None:
        _load_ca(ctx, client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED if client_cert_required else ssl.CERT_OPTIONAL
    return ctx


def _sni_switch(selector: CertSelector, contexts: Mapping[CertPair, ssl.SSLContext]) -> SniCallback:
    """The `sni_callback`: runs inside OpenSSL's handshake, so it must not raise or block."""

    def switch(conn: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        target = contexts[selector.select(server_name)]
        if conn.context is not target:
            conn.context = target
        return None

    return switch


def _load_ca(ctx: ssl.SSLContext, ca_file: StrPath) -> None:
    try:
        ctx.load_verify_locations(cafile=os.fspath(ca_file))
    except ssl.SSLError as e:
        raise CertError(ca_file, f"not a PEM CA certificate file: {e.reason or e}") from None
    except OSError as e:
        raise CertError(ca_file, f"cannot read: {e.strerror or e}") from None


def peer_subject(conn: ssl.SSLObject | ssl.SSLSocket) -> str | None:
    """The verified client certificate's subject as RFC 4514 text (`"CN=client,O=Example"`).

    None when the client sent no certificate or the context does not verify one (the standard
    library reports unverified certificates as empty). Call it after the handshake.
    """
    if not conn.getpeercert():
        return None
    der = conn.getpeercert(binary_form=True)
    if der is None:
        return None
    return x509.load_der_x509_certificate(der).subject.rfc4514_string()


# -- OCSP ----------------------------------------------------------------------------------------


def load_ocsp_response(
    path: StrPath, *, cert_path: StrPath | None = None, now: dt.datetime | None = None
) -> bytes:
    """Read a DER OCSP response (RFC 6960) meant for stapling, check it and return its bytes.

    Checks: the file reads and parses as DER, the responder answered `successful`, the
    certificate is not reported revoked, `nextUpdate` (if any) is after `now`, and, when
    `cert_path` is given, the response is about that chain's leaf (same serial number).
    Raises `CertError` naming `path`. `server_context` staples it (see the module docstring).
    """
    data = read_file(path)
    try:
        response = ocsp.load_der_ocsp_response(data)
    except ValueError:
        hint = " (this is PEM; OCSP responses are DER)" if data.lstrip().startswith(b"---") else ""
        raise CertError(path, f"not a DER OCSP response{hint}") from None
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        status = response.response_status.name.lower()
        raise CertError(path, f"OCSP responder answered {status}; only a successful one staples")
    _check_ocsp_status(path, response, now or dt.datetime.now(dt.UTC))
    if cert_path is not None:
        leaf = _leaf(cert_path)
        if response.serial_number != leaf.serial_number:
            raise CertError(path, f"OCSP response is not about the certificate in {cert_path}")
    return data


def _check_ocsp_status(path: StrPath, response: ocsp.OCSPResponse, now: dt.datetime) -> None:
    try:
        status = response.certificate_status
    except ValueError:  # several SINGLERESPs: not something a server staples for one certificate
        raise CertError(path, "OCSP response covers several certificates; need one") from None
    if status == ocsp.OCSPCertStatus.REVOKED:
        raise CertError(path, "OCSP response says the certificate is revoked")
    next_update = _ocsp_next_update(response)
    if next_update is not None and next_update < now:
        raise CertError(path, f"OCSP response expired on {next_update:%Y-%m-%d %H:%M:%S} UTC")


def _ocsp_next_update(response: ocsp.OCSPResponse) -> dt.datetime | None:
    if hasattr(response, "next_update_utc"):  # cryptography >= 43
        return response.next_update_utc
    naive = response.next_update
    return None if naive is None else naive.replace(tzinfo=dt.UTC)


def _leaf(cert_path: StrPath) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificates(read_file(cert_path))[0]
    except ValueError:
        raise CertError(cert_path, "not a PEM certificate") from None


def _check_ocsp(pairs: Sequence[CertPair], files: Mapping[str, StrPath]) -> dict[CertPair, bytes]:
    by_path = {pair.cert_path: pair for pair in pairs}
    out = {}
    for cert_path, response_path in files.items():
        pair = by_path.get(os.fspath(cert_path))
        if pair is None:
            raise CertError(response_path, f"no certificate {cert_path} on this listener")
        out[pair] = load_ocsp_response(response_path, cert_path=cert_path)
    return out


def _staple(ctx: ssl.SSLContext, pair: CertPair, response: bytes) -> None:
    from l4lb.tls.ocsp import StaplingUnavailable, staple

    try:
        staple(ctx, response)
    except StaplingUnavailable as exc:
        log.warning("%s: OCSP response is valid but not stapled: %s", pair.cert_path, exc)


# -- client (upstream) ---------------------------------------------------------------------------


VERIFY_MODES = ("name", "chain", "none")


def client_context(
    *,
    ca_file: StrPath | None = None,
    verify: bool | str = True,
    name: str | None = None,
    cert: StrPath | None = None,
    key: StrPath | None = None,
    alpn: Sequence[str] = (),
) -> ssl.SSLContext:
    """An `SSLContext` for TLS from a pool to its servers.

    `verify` is one of `VERIFY_MODES` (True means "name", False "none"):
    - "name" (the default): the server's chain is checked against `ca_file`, or the system
      store when None, and its name against the `server_hostname` the caller connects with
      (which is also the SNI sent), or against `name` when given, whatever the SNI
      (`l4lb.tls.native.set_verify_name`; raises NativeUnavailable where that cannot be done).
    - "chain": the chain only, as HAProxy's `verify required` without `verifyhost`: any
      certificate the CA signed is accepted, whatever name it carries.
    - "none": nothing (and `ca_file` is ignored): only for servers on a trusted network.
    `cert`/`key` present a client certificate (checked with `load_pair`; `key` defaults to
    `cert` for a combined PEM). `alpn` offers protocols, e.g. `("h2", "http/1.1")`.
    TLS 1.2 is the minimum; ciphers are the standard library's defaults (forward-secret suites
    only, security level 2), a little wider than the listener's so that older servers connect.

    Raises `CertError` for an unusable CA, certificate or key file, ValueError for arguments
    no config should produce. Blocks on file reads.
    """
    mode = {True: "name", False: "none"}.get(verify, verify)  # type: ignore[call-overload]
    if mode not in VERIFY_MODES:
        raise ValueError(f"verify {verify!r}: allowed {', '.join(VERIFY_MODES)}")
    if name is not None and mode != "name":
        raise ValueError(f"a name to verify needs verify='name', not {mode!r}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if mode == "none":
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        if mode == "chain" or name is not None:
            ctx.check_hostname = False  # verify_mode stays CERT_REQUIRED
        if ca_file is not None:
            _load_ca(ctx, ca_file)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if cert is not None:
        pair = load_pair(cert, key if key is not None else cert)
        try:
            ctx.load_cert_chain(pair.cert_path, pair.key_path)
        except ssl.SSLError as e:
            raise CertError(pair.cert_path, f"OpenSSL refused it: {e.reason or e}") from None
    elif key is not None:
        raise ValueError("client_context: key given without cert")
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    if name is not None:
        from l4lb.tls.native import set_verify_name

        set_verify_name(ctx, name)
    return ctx
