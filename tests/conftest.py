"""Shared test setup.

hypothesis is imported here, at collection, on purpose: its pytest plugin otherwise imports it
lazily in the terminal summary, where pytest's assertion rewriting of hypothesis' modules hits
a CPython 3.11 `SystemError: AST constructor recursion depth mismatch` after e2e-only runs.
"""

import hypothesis  # noqa: F401
