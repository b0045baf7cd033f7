"""Decoding before matching: what an attacker encodes, the rules see decoded.

Each value is decoded in rounds until it stops changing (at most `ROUNDS`), so that double
and mixed encodings (`%253Cscript`, `&#x25;3C`) come out plain, as CRS's `t:urlDecodeUni`,
`t:htmlEntityDecode`, `t:jsDecode` and `t:utf8toUnicode` chains do:

- percent-decoding (UTF-8, invalid sequences replaced) and IIS's `%uXXXX`;
- HTML character references, named and numeric (`html.unescape`, HTML5 rules);
- JavaScript/JSON escapes `\\xNN` and `\\uNNNN`;
- Unicode NFKC, which folds full-width and compatibility forms (a full-width `<script>`,
  U+FF1C...) to ASCII.

A value with none of `%`, `&`, `\\` and only ASCII is returned as it is, without a copy:
that is most values of most requests. Pure functions; no IO.
"""

from __future__ import annotations

import html
import re
import unicodedata
from typing import Final
from urllib.parse import unquote

__all__ = ["ROUNDS", "normalise"]

ROUNDS: Final = 4
_PERCENT_U: Final = re.compile(r"%u([0-9a-fA-F]{4})")
# A character reference worth decoding: numeric, or named with its ';' (html.unescape's
# legacy names without ';' cost a prefix search at every '&' of a query-like cookie).
_REFERENCE: Final = re.compile(r"&(?:#[0-9xX]|[A-Za-z][A-Za-z0-9]{1,31};)")
_JS_ESCAPE: Final = re.compile(r"\\(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4}))")


def _chr(m: re.Match[str]) -> str:
    return chr(int(m.group(1) or m.group(2), 16))


def _percent_u(m: re.Match[str]) -> str:
    return chr(int(m.group(1), 16))


def normalise(text: str) -> str:
    """`text` decoded (see the module docstring); the same object when nothing applies."""
    if "%" not in text and "&" not in text and "\\" not in text and text.isascii():
        return text
    for _ in range(ROUNDS):
        before = text
        if "%" in text:
            if "%u" in text or "%U" in text:
                text = _PERCENT_U.sub(_percent_u, text)
            text = unquote(text, errors="replace")
        if "&" in text and _REFERENCE.search(text):
            text = html.unescape(text)
        if "\\" in text:
            text = _JS_ESCAPE.sub(_chr, text)
        if not text.isascii():
            text = unicodedata.normalize("NFKC", text)
        if text == before:
            break
    return text
