"""Offline token estimates before a call, and actual usage read from a response afterwards.

The estimate is what the limiter reserves; the usage is what it settles to. Estimates never
touch the network: ``tiktoken`` is used only when it is installed *and* its encoding file is
already in the local cache, otherwise the rule of thumb of four characters per token applies,
rounded down as the servers that charge by it round (OpenAI's rate limiter charges "the
estimated number of tokens based on the character count", PROVIDERS.md §2.5; llmock charges
``body_size // 4``, our simulator ``prompt_chars // 4``): an estimate a token above the charge
would cost a window at a knife-edge. The limiter corrects what remains from settlements
(limiter.calibration).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any

from ..outcome import Usage

CHARS_PER_TOKEN = 4
#: Output tokens reserved when a request sets no output limit (the real cost is settled later).
DEFAULT_OUTPUT_RESERVE = 256

Tokenizer = Callable[[str], int]

# Keys whose string values are protocol words, not prompt text the model reads.
_NON_TEXT_KEYS = frozenset({
    "role", "type", "model", "mime_type", "mimeType", "encoding_format", "name",
    "tool_call_id", "id", "detail", "format", "user",
})

_TIKTOKEN_BASE = "https://openaipublic.blob.core.windows.net/encodings/"
_LOAD_TIMEOUT = 5.0
_MAX_DEPTH = 32  # self-referential objects (mocks) must not recurse forever


def iter_text(obj: Any, _depth: int = 0) -> Iterable[str]:
    """Every piece of prompt text inside a request value (str, messages, contents, parts)."""
    if obj is None or _depth > _MAX_DEPTH:
        return
    depth = _depth + 1
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, (bytes, bytearray, int, float, bool)):
        return
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            if key not in _NON_TEXT_KEYS:
                yield from iter_text(value, depth)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from iter_text(value, depth)
    else:
        # SDK objects (google Content/Part, pydantic models): read their text-bearing fields.
        for attr in ("text", "parts", "content"):
            value = getattr(obj, attr, None)
            if value is not None and not callable(value):
                yield from iter_text(value, depth)


def _tiktoken_cache_dir() -> str | None:
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return os.environ["TIKTOKEN_CACHE_DIR"] or None  # "" disables tiktoken's cache
    if "DATA_GYM_CACHE_DIR" in os.environ:
        return os.environ["DATA_GYM_CACHE_DIR"] or None
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def encoding_name_for(model: str | None) -> str:
    """The tiktoken encoding an OpenAI model uses (``o200k_base`` for 4o/4.1/5/o-series)."""
    m = (model or "").lower()
    if m.startswith(("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")):
        return "o200k_base"
    return "cl100k_base"


@lru_cache(maxsize=8)
def cached_tokenizer(encoding: str) -> Tokenizer | None:
    """A tiktoken counter for ``encoding`` if its file is cached locally; never downloads."""
    if os.environ.get("THROTTLEPOOL_NO_TIKTOKEN"):
        return None
    try:
        if importlib.util.find_spec("tiktoken") is None:
            return None
    except (ImportError, ValueError):
        return None
    cache_dir = _tiktoken_cache_dir()
    if cache_dir is None:
        return None
    url = f"{_TIKTOKEN_BASE}{encoding}.tiktoken"
    cache_file = os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest())
    if not os.path.isfile(cache_file):
        return None
    box: list[Any] = []

    def load() -> None:
        # A broken cache or tiktoken falls back to the heuristic.
        with contextlib.suppress(Exception):
            box.append(importlib.import_module("tiktoken").get_encoding(encoding))

    # A daemon thread bounds the load: a corrupt cache file makes tiktoken try to download.
    loader = threading.Thread(target=load, name="throttlepool-tiktoken", daemon=True)
    loader.start()
    loader.join(_LOAD_TIMEOUT)
    if not box:
        return None
    enc = box[0]

    def count(text: str) -> int:
        return len(enc.encode(text, disallowed_special=()))

    return count


def count_tokens(obj: Any, *, tokenizer: Tokenizer | None = None) -> int:
    """Tokens of the prompt text in ``obj``: ``tokenizer`` if given, else chars // 4 (at
    least 1 for any text: a usage count never says 0 for a prompt)."""
    texts = list(iter_text(obj))
    if tokenizer is not None:
        return sum(tokenizer(t) for t in texts)
    chars = sum(len(t) for t in texts)
    return max(1, chars // CHARS_PER_TOKEN) if chars else 0


def first_number(params: Mapping[str, Any], *names: str) -> float | None:
    """The first of ``names`` present in ``params`` as a positive number."""
    for name in names:
        value = params.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


def _field(obj: Any, *names: str) -> int | None:
    for name in names:
        value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value)
    return None


def usage_from(obj: Any) -> Usage | None:
    """Usage from a response or its usage block: OpenAI, Responses API, Gemini, or a dict."""
    if obj is None:
        return None
    for attr in ("usage", "usage_metadata", "usageMetadata"):
        inner = obj.get(attr) if isinstance(obj, Mapping) else getattr(obj, attr, None)
        if inner is not None and not callable(inner):
            return usage_from(inner)
    prompt = _field(obj, "prompt_tokens", "input_tokens", "prompt_token_count",
                    "promptTokenCount")
    total = _field(obj, "total_tokens", "total_token_count", "totalTokenCount")
    output = _field(obj, "completion_tokens", "output_tokens", "candidates_token_count",
                    "candidatesTokenCount")
    if prompt is None and output is None and total is None:
        return None
    prompt = prompt or 0
    if total is not None and total >= prompt:
        # Gemini's total also counts thinking and tool tokens, which are billed as output.
        output = max(output or 0, total - prompt)
    return Usage(input_tokens=prompt, output_tokens=output or 0)
