"""JSON from files and peers, parsed with limits.

The standard ``json`` module parses anything: a message nested 100,000 deep raises
``RecursionError`` (not ``ValueError``), a 5000-digit number raises a ``ValueError`` from
``int`` (Python's digit limit) that says nothing about the input, and a single 1 GB line
is parsed whole. ``loads`` puts one limit on each (size, nesting depth, digits in a
number, no NaN/Infinity) and raises ``JSONLimitError`` (a ``ValueError``) with one
readable line for all of them, so every caller can catch one exception.
"""

from __future__ import annotations

import json
from typing import Any

MAX_DEPTH = 32          # the deepest real message (a .lca header's metadata) is 4 deep
MAX_NUMBER_CHARS = 40   # digits of one number: int64 and float repr fit with room to spare


class JSONLimitError(ValueError):
    """JSON that is malformed or over one of ``loads``'s limits."""


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise JSONLimitError(f"a number of {len(text)} digits")
    return int(text)


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise JSONLimitError(f"a number of {len(text)} characters")
    return float(text)


def _parse_constant(name: str) -> float:
    raise JSONLimitError(f"{name} is not a JSON number")


def depth(value: Any) -> int:
    """How deeply ``value`` nests lists and dicts (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in item)
    return deepest


def loads(text: str | bytes, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` with limits: at most ``max_bytes`` long, ``max_depth`` deep, numbers of
    at most ``MAX_NUMBER_CHARS`` characters, no NaN/Infinity. Raises ``JSONLimitError``."""
    if len(text) > max_bytes:
        raise JSONLimitError(f"{len(text)} bytes of JSON is over the {max_bytes} byte limit")
    try:
        value = json.loads(text, parse_int=_parse_int, parse_float=_parse_float,
                           parse_constant=_parse_constant)
    except RecursionError:
        raise JSONLimitError(f"JSON nested more than {max_depth} deep") from None
    except JSONLimitError:
        raise
    except (ValueError, TypeError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise JSONLimitError(f"not JSON: {str(exc).splitlines()[0][:120]}") from None
    if depth(value) > max_depth:
        raise JSONLimitError(f"JSON nested more than {max_depth} deep")
    return value
