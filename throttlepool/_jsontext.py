"""Strict reading of one JSON text: how deep it nests, and where a NaN or Infinity sits.

Python's json module accepts ``NaN``, ``Infinity``, numbers like ``1e999`` (which become
``inf``) and lone surrogate escapes, and recurses once per level; an API refuses the first,
no UTF-8 text holds the second, and a deep enough text exhausts the stack. These helpers let
the input reader refuse each, with the field named, before any call.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

# A JSON string (skipped whole) or one bracket: enough to measure nesting without parsing.
_NESTING = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def nests_deeper_than(text: str, limit: int) -> bool:
    """Whether the objects and arrays of JSON ``text`` nest more than ``limit`` levels."""
    if text.count("[") + text.count("{") <= limit:  # fewer brackets than levels: no loop
        return False
    depth = 0
    for match in _NESTING.finditer(text):
        char = match.group()
        if char in ("[", "{"):
            depth += 1
            if depth > limit:
                return True
        elif char in ("]", "}"):
            depth -= 1
    return False


class _NonFinite:
    """Stands in for a NaN or Infinity while parsing, so that its place can be found."""

    def __init__(self, token: str) -> None:
        self.token = token
        _found.count += 1


def _number(token: str) -> Any:
    value = float(token)
    return value if math.isfinite(value) else _NonFinite(token)


# One decoder for every line (json.loads with hooks would build a new one each call, which
# costs more than the parse); the count of markers it made is per thread.
_found = threading.local()
_DECODER = json.JSONDecoder(parse_constant=_NonFinite, parse_float=_number)


def parse_json(text: str) -> tuple[Any, str | None, str]:
    """``(value, problem, path)``: ``problem`` says why ``value`` cannot be sent (else None)
    and ``path`` where, like ``messages[0].temperature`` ("" for the whole value).

    Refused: ``NaN``, ``Infinity`` and numbers too big for a float (JSON and the APIs have
    no such numbers), and a ``\\udXXX`` escape without its pair (no UTF-8 text can hold
    it). Raises json.JSONDecodeError for malformed text.
    """
    _found.count = 0
    value = _DECODER.decode(text)
    if _found.count:
        path, found = _find(value, lambda v: isinstance(v, _NonFinite))
        return value, (f"{found.token} is not a finite number (JSON has no NaN or Infinity "
                       "and no API accepts them)"), path
    if _SURROGATE_ESCAPE.search(text):
        lone = _find(value, _unpaired)
        if lone is not None:
            char = next(c for c in lone[1] if 0xD800 <= ord(c) <= 0xDFFF)
            return value, (f"the text holds \\u{ord(char):04x}, half of a surrogate pair "
                           "without the other half, which is not text"), lone[0]
    return value, None, ""


def _unpaired(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _find(value: Any, wanted: Callable[[Any], bool], path: str = "") -> Any:
    """``(path, item)`` of the first item (or dict key) that is ``wanted``, else None."""
    if wanted(value):
        return path, value
    children: Iterator[tuple[str, Any]]
    if isinstance(value, dict):
        for key in value:
            if wanted(key):
                return (f"{path}.{key}" if path else str(key)), key
        children = ((f"{path}.{k}" if path else str(k), v) for k, v in value.items())
    elif isinstance(value, list):
        children = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for child_path, child in children:
        found = _find(child, wanted, child_path)
        if found is not None:
            return found
    return None
