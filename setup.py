"""Packaging is in pyproject.toml; this file only adds the optional compiled build.

The HTTP hot path (l7/) and the L4 one (accept, connect, splice) are compiled with mypyc
into C extensions (about a quarter less Python time per request, bench/RESULTS.md; a fifth
fewer instructions per new TCP connection, `bench/syscalls.py --callgrind`), as black and
mypy ship themselves:
- `L4LB_MYPYC=1`: compiled, or the install fails;
- `L4LB_MYPYC=auto` (the default, so `pip install .`): compiled where mypyc and a C compiler
  with the Python headers are there, else (or if the compile fails) pure Python, which
  behaves the same;
- `L4LB_MYPYC=0`: pure Python. scripts/setup installs the working tree this way (editable),
  since .so files beside the sources would run stale code after an edit; the compiled build
  of a working tree is made in a copy of it by scripts/build-compiled.
"""

import os
import shutil
import sys
import sysconfig

from setuptools import setup

# The modules every HTTP request or TCP connection runs through; compiled together (they
# call each other natively inside one shared library, named l7__mypyc for its first members).
HOT_PATH = [
    "l7/validate.py",
    "l7/forwarded.py",
    "l7/errors_page.py",
    "l7/model.py",
    "l7/engine.py",
    "l7/deadline.py",
    "l7/upstream.py",
    "l7/exchange.py",
    "l7/forwarding.py",
    "l7/respheaders.py",
    "l7/answers.py",
    "l7/tunnel.py",
    "l7/finish.py",
    "l7/h1wire.py",
    "l7/h1.py",
    "l7/h1tunnel.py",
    "l7/h1errors.py",
    "l7/h2fields.py",
    "l7/streams.py",
    "l7/h2events.py",
    "l7/h2frames.py",
    "l7/hpackout.py",
    "l7/h2send.py",
    "l7/h2conn.py",
    "l7/h2stream.py",
    "l7/h2.py",
    "l7/cache/hit.py",
    "l7/cache/stage.py",
    "l7/cache/serve.py",
    "l7/cache/answer.py",
    "l7/cache/policy.py",
    # (not l7/cache/store.py: l7/cache/flight.py keys a weak dictionary by its MemoryStore,
    # and a compiled class takes no weak reference)
    "l4lb/attempt.py",
    # Consulted on every request (routing, the breaker, the retry budget): interpreted, they
    # were a tenth of the compiled request's instructions (bench/http_inproc.py, callgrind).
    "l7/router.py",
    # The validated config the request path reads (routes, the listener's and pools' http
    # settings): interpreted, every read of one of their fields was a generic attribute
    # lookup, about a tenth of a request's CPU (perf, bench/RESULTS.md).
    "l7/routes.py",
    "l4lb/config/schema.py",
    "l7/breaker.py",
    "l7/budget.py",
    # the security stages' per-request code
    "l7/waf/decode.py",
    "l7/waf/extract.py",
    "l7/waf/matcher.py",
    "l7/waf/stage.py",
    "l7/jwtverify.py",
    "l7/jwtstage.py",
    "l7/refusal.py",
    "l7/guard.py",
    "l4lb/gcra.py",
    "l4lb/shared/limits.py",
    # Choosing a server (every request and every new TCP connection): the pool, the servers'
    # state and the balancers.
    "l4lb/pool.py",
    "l4lb/server.py",
    "l4lb/health/state.py",
    "l4lb/balance/base.py",
    "l4lb/balance/round_robin.py",
    "l4lb/balance/weighted_round_robin.py",
    "l4lb/balance/least_conn.py",
    "l4lb/balance/hash.py",
    "l4lb/balance/random_two.py",
    # The L4 path: accept, connect, splice (every new TCP connection runs through these).
    "l4lb/poller.py",
    "l4lb/relay.py",
    "l4lb/listener.py",
]


def _can_compile() -> bool:
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    headers = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    return bool(compiler) and os.path.exists(headers)


mode = os.environ.get("L4LB_MYPYC", "auto")
ext_modules = []
if mode == "1" or (mode == "auto" and _can_compile()):
    try:
        from mypyc.build import mypycify
    except ImportError:
        if mode == "1":
            raise
        mypycify = None

    # --follow-imports=silent: the modules imported from l4lb/ are type-checked only as far
    # as the compiled ones use them; --ignore-missing-imports: the build needs no runtime
    # dependency installed (httptools, uvloop are called as ordinary Python objects).
    flags = ["--follow-imports=silent", "--ignore-missing-imports"]
    if mypycify is not None:
        try:
            ext_modules = mypycify([*flags, *HOT_PATH], opt_level="3", group_name="l7")
        except (Exception, SystemExit) as exc:
            if mode == "1":
                raise
            # Said, not hidden: a type error in the hot path once left every install pure.
            print(
                f"l4lb: the compiled HTTP path failed to build ({exc}); installing the "
                "pure-Python one (L4LB_MYPYC=1 makes this an error)",
                file=sys.stderr,
            )
            ext_modules = []
    if mode == "auto":
        for ext in ext_modules:
            ext.optional = True  # a failed C compile leaves the pure-Python modules

setup(ext_modules=ext_modules)
