"""The `SSL_CTX` under a standard library `ssl.SSLContext`, for the few OpenSSL calls the `ssl`
module does not wrap (OCSP stapling in `l4lb.tls.ocsp`, a verified name apart from the SNI in
`l4lb.tls.context`).

The `SSL_CTX *` is the first field after the object header of CPython's `PySSLContext`
(Modules/_ssl.c), true from 3.7 through 3.13. `ssl_ctx` checks that reading before anything
relies on it (it flips the verify mode through Python and reads it back through OpenSSL) and
raises `NativeUnavailable` otherwise. The functions are looked up in `_ssl`'s own shared
object, whose symbol lookup includes the libssl and libcrypto it links: the same OpenSSL.
"""

from __future__ import annotations

import ctypes
import ipaddress
import ssl
from typing import Any

__all__ = ["NativeUnavailable", "libssl", "set_verify_name", "ssl_ctx"]

_lib: Any = None


class NativeUnavailable(RuntimeError):
    """This Python's `ssl` cannot be reached safely through OpenSSL's own API."""


def libssl() -> Any:
    """The OpenSSL functions `_ssl` links, with their argument types declared."""
    global _lib
    if _lib is None:
        import _ssl

        lib = ctypes.CDLL(_ssl.__file__)
        lib.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_get_verify_mode.restype = ctypes.c_int
        _lib = lib
    return _lib


def ssl_ctx(ctx: ssl.SSLContext) -> int:
    """The `SSL_CTX *` of `ctx`, checked against OpenSSL's view of the same context."""
    try:
        lib = libssl()
    except (OSError, AttributeError) as exc:
        raise NativeUnavailable(f"OpenSSL functions not found: {exc}") from None
    pointer = ctypes.c_void_p.from_address(id(ctx) + 2 * ctypes.sizeof(ctypes.c_ssize_t)).value
    if not pointer:
        raise NativeUnavailable("no SSL_CTX where CPython keeps it")
    saved = ctx.verify_mode
    try:
        if lib.SSL_CTX_get_verify_mode(pointer) != _verify_bits(saved):
            raise NativeUnavailable("the SSL_CTX found does not belong to this context")
        flipped = ssl.CERT_NONE if saved != ssl.CERT_NONE else ssl.CERT_OPTIONAL
        ctx.verify_mode = flipped
        if lib.SSL_CTX_get_verify_mode(pointer) != _verify_bits(flipped):
            raise NativeUnavailable("the SSL_CTX found does not follow this context")
    finally:
        ctx.verify_mode = saved
    return pointer


def _verify_bits(mode: ssl.VerifyMode) -> int:
    return {ssl.CERT_NONE: 0, ssl.CERT_OPTIONAL: 1, ssl.CERT_REQUIRED: 3}[mode]


def set_verify_name(ctx: ssl.SSLContext, name: str) -> None:
    """Make OpenSSL check, in every handshake made with `ctx`, that the server's certificate is
    valid for `name` (a DNS name, or an IP address literal), whatever `server_hostname` (the
    SNI) the connection is made with.

    The standard library sets one name for both, per connection, when `check_hostname` is on;
    here `check_hostname` must be off and the name goes on the context's `X509_VERIFY_PARAM`
    (`X509_VERIFY_PARAM_set1_host`, or `_set1_ip_asc`), which OpenSSL copies into each
    connection (`SSL_new`). The check is OpenSSL's own (X509_check_host, the one nginx and
    HAProxy use), with the context's host flags (no partial wildcards). Raises
    NativeUnavailable when the context cannot be reached, or ValueError for a name OpenSSL
    refuses.
    """
    if ctx.check_hostname or ctx.verify_mode != ssl.CERT_REQUIRED:
        raise ValueError("set_verify_name needs check_hostname off and CERT_REQUIRED")
    pointer = ssl_ctx(ctx)
    lib = libssl()
    try:
        lib.SSL_CTX_get0_param.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_get0_param.restype = ctypes.c_void_p
        lib.X509_VERIFY_PARAM_set1_host.argtypes = [
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_size_t,
        ]
        lib.X509_VERIFY_PARAM_set1_host.restype = ctypes.c_int
        lib.X509_VERIFY_PARAM_set1_ip_asc.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.X509_VERIFY_PARAM_set1_ip_asc.restype = ctypes.c_int
    except AttributeError as exc:
        raise NativeUnavailable(f"OpenSSL functions not found: {exc}") from None
    param = lib.SSL_CTX_get0_param(pointer)
    if not param:
        raise NativeUnavailable("the context has no verify parameters")
    raw = name.encode("ascii")
    try:
        ipaddress.ip_address(name)
        ok = lib.X509_VERIFY_PARAM_set1_ip_asc(param, raw)
    except ValueError:
        ok = lib.X509_VERIFY_PARAM_set1_host(param, raw, len(raw))
    if ok != 1:
        raise ValueError(f"OpenSSL refused {name!r} as a name to verify")
