"""Stable item keys: the same request to the same call always hashes to the same key."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any


def _default(obj: Any) -> Any:
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, bytes):
        return obj.hex()
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    if hasattr(obj, "__dict__"):
        return {"__type__": type(obj).__qualname__, **vars(obj)}
    return repr(obj)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces; unknown objects fall back to their fields or repr."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_default,
                      ensure_ascii=False)


def item_key(identity: Mapping[str, Any], item: Any) -> str:
    """SHA-256 (hex, 32 chars) of the call's identity and the item."""
    h = hashlib.sha256()
    h.update(canonical_json(identity).encode("utf-8", "surrogatepass"))
    h.update(b"\x00")
    h.update(canonical_json(item).encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:32]


class KeyMaker:
    """``item_key`` with the identity hashed once: the same keys, about half the work."""

    def __init__(self, identity: Mapping[str, Any]) -> None:
        self._prefix = hashlib.sha256()
        self._prefix.update(canonical_json(identity).encode("utf-8", "surrogatepass"))
        self._prefix.update(b"\x00")

    def __call__(self, item: Any) -> str:
        h = self._prefix.copy()
        h.update(canonical_json(item).encode("utf-8", "surrogatepass"))
        return h.hexdigest()[:32]
