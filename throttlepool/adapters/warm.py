"""Build an SDK's lazily built pydantic models once per process, before calls run concurrently.

openai, anthropic and google-genai declare their models with ``defer_build``: a model's
validator and core schema are built on first use. pydantic's deferred build is not
thread-safe: ``model_rebuild`` deletes the model's placeholder schema before it sets the real
one, so a second thread reading the schema in between finds pydantic's own ``BaseModel``
placeholder and raises ``PydanticUserError: Pydantic models should inherit from BaseModel,
BaseModel cannot be instantiated directly``. A fresh process whose first batch of calls
parses its first responses together (16 threads of a runner, a Dask worker's threads) met it
in about 1 process in 40.

:func:`warm` builds, once per process and under one lock, every model reachable from the
SDK method's signature (its return type, its parameters) plus the SDK's own request-options
model, with no network; calls that arrive meanwhile wait for it.
"""

from __future__ import annotations

import inspect
import threading
import typing
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_lock = threading.Lock()
#: Keys (SDK method) whose models this process has built.
_warmed: set[Any] = set()


def _pydantic_base() -> type | None:
    try:
        import pydantic
    except ImportError:  # pragma: no cover - every SDK adapter's SDK depends on it
        return None
    base: type = pydantic.BaseModel
    return base


def signature_types(fn: Any) -> list[Any]:
    """The resolved annotations (parameters and return) of an SDK method; [] if unreadable.

    The SDKs write their annotations as strings (``from __future__ import annotations``),
    resolved in the module of the undecorated function.
    """
    target = inspect.unwrap(getattr(fn, "__func__", fn))
    raw = getattr(target, "__annotations__", None)
    if not isinstance(raw, dict):
        return []
    namespace = dict(getattr(target, "__globals__", {}))
    types: list[Any] = []
    for annotation in raw.values():
        if isinstance(annotation, str):
            try:
                annotation = eval(annotation, namespace)  # the SDK's own source text
            except Exception:  # a name imported only for type checkers: skip that one
                continue
        types.append(annotation)
    return types


def _classes(annotation: Any, base: type) -> Iterator[type]:
    """The pydantic models an annotation names: itself, or within Union/list/Annotated/..."""
    if isinstance(annotation, type) and issubclass(annotation, base):
        yield annotation
    origin = typing.get_origin(annotation)
    if isinstance(origin, type) and issubclass(origin, base):
        yield origin
    for arg in typing.get_args(annotation):
        if not isinstance(arg, (str, int, float, bool, bytes)) and arg is not None:
            yield from _classes(arg, base)


def _build(cls: Any) -> None:
    # Resolves the fields' forward references too, so they can be walked. model_rebuild
    # also resolves names in its caller's locals: this frame has none an SDK could mean.
    cls.model_rebuild(raise_errors=False)


def build_models(roots: Iterable[Any]) -> list[type]:
    """Build every pydantic model reachable from ``roots`` (annotations), fields included.

    Returns the models visited. Not thread-safe by itself: :func:`warm` holds the lock.
    """
    base = _pydantic_base()
    if base is None:
        return []
    seen: set[type] = set()
    todo = [cls for root in roots for cls in _classes(root, base)]
    while todo:
        cls = todo.pop()
        if cls in seen or cls is base:
            continue
        seen.add(cls)
        if not getattr(cls, "__pydantic_complete__", True):
            _build(cls)
        fields = getattr(cls, "__pydantic_fields__", None) or {}
        for info in fields.values():
            todo.extend(_classes(info.annotation, base))
    return sorted(seen, key=lambda c: (c.__module__, c.__qualname__))


def stainless_models(sdk: str, method: Any) -> list[Any]:
    """What an openai or anthropic call reads and writes: the SDK's request-options model
    (every request constructs one) and the models of ``method``'s signature (None: a
    user's own function, whose models are unknown)."""
    import importlib

    roots: list[Any] = [importlib.import_module(f"{sdk}._models").FinalRequestOptions]
    return roots if method is None else roots + signature_types(method)


def warm(key: Any, roots: Callable[[], Iterable[Any]]) -> None:
    """Build the models ``roots()`` reaches, once per process per ``key``.

    The first caller builds while holding the lock; callers that arrive meanwhile wait, so no
    call reads a model another thread is building. A failure to walk is ignored: the call
    then builds lazily, as without this.
    """
    if key in _warmed:
        return
    with _lock:
        if key in _warmed:
            return
        try:
            build_models(roots())
        except Exception:  # never make a call fail that would have worked
            pass
        _warmed.add(key)
