"""OCSP stapling for the standard library's `ssl` contexts, through OpenSSL's own API.

The `ssl` module wraps nothing of OpenSSL's OCSP support (python/cpython#88946), and the
loop's TLS transports (asyncio's and uvloop's) only drive `ssl.SSLContext`. So this module
reaches the `SSL_CTX` under an `SSLContext` and installs the status callback OpenSSL calls
when a client sends `status_request` (RFC 6066 §8): `SSL_CTX_set_tlsext_status_cb` (a macro
over `SSL_CTX_callback_ctrl`) and, in the callback, `SSL_set_tlsext_status_ocsp_resp` (over
`SSL_ctrl`), with the response copied into memory from `CRYPTO_malloc` because OpenSSL frees it.

The `SSL_CTX *` is found by `l4lb.tls.native`, which checks it before use; where it cannot be
found safely, `staple` raises `StaplingUnavailable`, so a different CPython degrades to "not
stapled", logged. The callback runs inside the handshake with the GIL taken by ctypes; it only
copies bytes.
"""

from __future__ import annotations

import ctypes
import ssl
from typing import Any

from l4lb.tls.native import NativeUnavailable, libssl, ssl_ctx

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
        lib = libssl()
        lib.SSL_CTX_callback_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, _STATUS_CB]
        lib.SSL_CTX_callback_ctrl.restype = ctypes.c_long
        lib.SSL_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        lib.SSL_ctrl.restype = ctypes.c_long
        lib.CRYPTO_malloc.argtypes = [ctypes.c_size_t, ctypes.c_char_p, ctypes.c_int]
        lib.CRYPTO_malloc.restype = ctypes.c_void_p
        _lib = lib
    return _lib


def _ssl_ctx(ctx: ssl.SSLContext) -> int:
    try:
        pointer = ssl_ctx(ctx)
        _libssl()
    except (OSError, AttributeError) as exc:
        raise StaplingUnavailable(f"OpenSSL functions not found: {exc}") from None
    except NativeUnavailable as exc:
        raise StaplingUnavailable(str(exc)) from None
    return pointer


def staple(ctx: ssl.SSLContext, response: bytes) -> None:
    """Send `response` (DER) to every client of `ctx` that asks for certificate status.
    Raises StaplingUnavailable when this Python's `ssl` cannot be reached safely."""
    pointer = _ssl_ctx(ctx)
    lib = _lib
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
