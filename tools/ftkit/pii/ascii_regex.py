"""A pattern's twin for ASCII text: the same matches, with `\\d`, `\\w` and `\\b` read by table.

Python's `re` tests `\\d` and `\\w` in a str pattern against the Unicode database, a function call per
character; under `re.ASCII` they are table lookups. On a text that is all ASCII (`str.isascii()`, which
CPython knows without reading the text) both read the same, except Unicode `\\s`, which also takes the
separators \\x1c-\\x1f: the twin spells those out. PII-dense text is mostly ASCII.
"""

from __future__ import annotations

import re

_SPACE = r"\t-\r\x1c-\x1f "  # what Unicode \s matches below 128: str.isspace()
_NOT_SPACE = r"\x00-\x08\x0e-\x1b!-\U0010ffff"  # everything else
# (`\s` or `\S`, inside a class or not) -> what the ASCII twin says instead
_SPELLED = {("s", True): _SPACE, ("s", False): f"[{_SPACE}]", ("S", True): _NOT_SPACE, ("S", False): f"[^{_SPACE}]"}


def _ascii_source(source: str) -> str:
    """`source` with each `\\s` and `\\S` spelled out as the characters Unicode reads them as."""
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(source):
        c = source[i]
        if c == "\\":
            escaped = source[i + 1]
            out.append(_SPELLED.get((escaped, in_class), c + escaped))
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
            out.append(c)
            if source[i + 1 : i + 2] == "^":
                out.append("^")
                i += 1
            if source[i + 1 : i + 2] == "]":  # a ']' first in a class is a literal
                out.append("]")
                i += 1
        else:
            in_class = in_class and c != "]"
            out.append(c)
        i += 1
    return "".join(out)


def ascii_twin(pattern: re.Pattern[str]) -> re.Pattern[str]:
    """`pattern` compiled for ASCII text: the same matches on any text for which `str.isascii()` is true."""
    return re.compile(_ascii_source(pattern.pattern), (pattern.flags & ~re.UNICODE) | re.ASCII)
