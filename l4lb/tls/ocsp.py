"""OCSP stapling for the standard library's `ssl` contexts, through OpenSSL's own API.

The `ssl` module wraps nothing of OpenSSL's OCSP support (python/cpython#88946), and the
loop's TLS transports (asyncio's and uvloop's) only drive `ssl.SSLContext`. So this module
reaches the `SSL_CTX` under an `SSLContext` and installs the status callback OpenSSL calls
when a client sends `status_request` (RFC 6066 §8): `SSL_CTX_set_tlsext_status_cb` (a macro
over `SSL_CTX_callback_ctrl`) and, in the callback, `SSL_set_tlsext_status_ocsp_resp` (over
`SSL_ctrl`), with the response copied into memory from `CRYPTO_malloc` because OpenSSL frees it.

The `SSL_CTX *` is the first field after the object header of CPython's `PySSLContext`
(Modules/_ssl.c), true from 3.7 through 3.13. `staple` checks that reading before relying on
it (it flips the verify mode through OpenSSL and reads it back through Python) and raises
`StaplingUnavailable` otherwise, so a different CPython degrades to "not stapled", logged.
The callback runs inside the handshake with the GIL taken by ctypes; it only copies bytes.
"""

from __future__ import annotations

import ctypes
import ssl
from typing import Any

__all__ = ["StaplingUnavailable", "staple"]

_SSL_CTRL_SET_TLSEXT_STATUS_REQ_CB = 63
_SSL_CTRL_SET_TLSEXT_STATUS_REQ_OCSP_RESP = 71
_SSL_TLSEXT_ERR_OK = 0
_SSL_TLSEXT_ERR_NOACK = 3
_STATUS_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
_lib: Any = None


class StaplingUnavailable(RuntimeError):
    """This Python's `ssl` cannot be reached safely: responses are not stapled."""


def _libssl() -> Any:
    global _lib
    if _lib is None:
        import _ssl

        lib = ctypes.CDLL(_ssl.__file__)  # its symbol lookup includes the libssl it links
        lib.SSL_CTX_callback_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, _STATUS_CB]
        lib.SSL_CTX_callback_ctrl.restype = ctypes.c_long
        lib.SSL_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        lib.SSL_ctrl.restype = ctypes.c_long
        lib.CRYPTO_malloc.argtypes = [ctypes.c_size_t, ctypes.c_char_p, ctypes.c_int]
        lib.CRYPTO_malloc.restype = ctypes.c_void_p
        lib.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
        lib.SSL_CTX_get_verify_mode.restype = ctypes.c_int
        _lib = lib
    return _lib


def _ssl_ctx(ctx: ssl.SSLContext) -> int:
    """The `SSL_CTX *` of `ctx`, checked against OpenSSL's view of the same context."""
    try:
        lib = _libssl()
    except (OSError, AttributeError) as exc:
        raise StaplingUnavailable(f"OpenSSL functions not found: {exc}") from None
    pointer = ctypes.c_void_p.from_address(id(ctx) + 2 * ctypes.sizeof(ctypes.c_ssize_t)).value
    if not pointer:
        raise StaplingUnavailable("no SSL_CTX where CPython keeps it")
    saved = ctx.verify_mode
    try:
        if lib.SSL_CTX_get_verify_mode(pointer) != _verify_bits(saved):
            raise StaplingUnavailable("the SSL_CTX found does not belong to this context")
        flipped = ssl.CERT_NONE if saved != ssl.CERT_NONE else ssl.CERT_OPTIONAL
        ctx.verify_mode = flipped
        if lib.SSL_CTX_get_verify_mode(pointer) != _verify_bits(flipped):
            raise StaplingUnavailable("the SSL_CTX found does not follow this context")
    finally:
        ctx.verify_mode = saved
    return pointer


def _verify_bits(mode: ssl.VerifyMode) -> int:
    return {ssl.CERT_NONE: 0, ssl.CERT_OPTIONAL: 1, ssl.CERT_REQUIRED: 3}[mode]


def staple(ctx: ssl.SSLContext, response: bytes) -> None:
    """Send `response` (DER) to every client of `ctx` that asks for certificate status.
    Raises StaplingUnavailable when this Python's `ssl` cannot be reached safely."""
    lib = _libssl() if _lib is None else _lib
    pointer = _ssl_ctx(ctx)
    data = bytes(response)

    def status_cb(ssl_ptr: int, _arg: int) -> int:
        buf = lib.CRYPTO_malloc(len(data), b"l4lb", 0)
        if not buf:
            return _SSL_TLSEXT_ERR_NOACK
        ctypes.memmove(buf, data, len(data))
        lib.SSL_ctrl(ssl_ptr, _SSL_CTRL_SET_TLSEXT_STATUS_REQ_OCSP_RESP, len(data), buf)
        return _SSL_TLSEXT_ERR_OK

    callback = _STATUS_CB(status_cb)
    lib.SSL_CTX_callback_ctrl(pointer, _SSL_CTRL_SET_TLSEXT_STATUS_REQ_CB, callback)
    ctx._l4lb_ocsp_callback = callback  # type: ignore[attr-defined]  # keep it alive
