"""Packaging is in pyproject.toml; this file only adds the optional compiled build.

With `L4LB_MYPYC=1` the HTTP/1.1 hot path (l7/) is compiled with mypyc into C extensions
(about a quarter less Python time per request, bench/RESULTS.md), as black and mypy ship
themselves. Without it, nothing is compiled and l4lb is pure Python. Build it with
`scripts/build-compiled`, which works on a copy of the tree so that the .so files never shadow
the sources being edited.
"""

import os

from setuptools import setup

# The modules every HTTP request runs through; compiled together (they call each other
# natively inside one shared library named l7__mypyc).
HOT_PATH = [
    "l7/validate.py",
    "l7/forwarded.py",
    "l7/errors_page.py",
    "l7/model.py",
    "l7/engine.py",
    "l7/deadline.py",
    "l7/upstream.py",
    "l7/exchange.py",
    "l7/h1wire.py",
    "l7/h1.py",
    "l4lb/attempt.py",
]

ext_modules = []
if os.environ.get("L4LB_MYPYC") == "1":
    from mypyc.build import mypycify

    # --follow-imports=silent: the modules imported from l4lb/ are type-checked only as far
    # as the compiled ones use them; --ignore-missing-imports: the build needs no runtime
    # dependency installed (httptools, uvloop are called as ordinary Python objects).
    flags = ["--follow-imports=silent", "--ignore-missing-imports"]
    ext_modules = mypycify([*flags, *HOT_PATH], opt_level="3", group_name="l7")

setup(ext_modules=ext_modules)
