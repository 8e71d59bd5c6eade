"""Pick a limiter backend by URL: ``memory://``, ``sqlite:///path``, ``redis://host:port/0``."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from ..clock import Clock
from ..errors import ConfigError, MissingExtra
from ..store.redact import mask_url
from .core import RateLimiter
from .limits import Limit, LimitSpec, build_limits
from .margin import SHARED_FLOOR

SCHEMES = ("memory", "sqlite", "redis", "rediss", "unix")


def sqlite_path(url: str) -> str:
    """The file of ``sqlite:///rel/path`` or ``sqlite:////abs/path`` (as the checkpoint store)."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
    elif url.startswith("sqlite://"):
        path = url[len("sqlite://"):]
    else:
        path = url
    if not path:
        raise ConfigError(f"limiter URL {mask_url(url)!r} names no file: "
                          "use sqlite:///path/to/file")
    return path


def check_limiter_url(url: str) -> str:
    """``url`` when it is a limiter URL :func:`limiter_from_url` can open; else ConfigError
    (a ValueError) naming it, passwords masked: ``redis:/localhost`` lacks the ``//``."""
    shown = mask_url(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ConfigError(
            f"unknown limiter URL {shown!r}: expected memory://, sqlite:///path, "
            "redis://host:port/db or unix:///path/redis.sock")
    if not url[len(scheme) + 1:].startswith("//"):
        raise ConfigError(f"limiter URL {shown!r} is malformed: expected {scheme}://..., "
                          "e.g. redis://localhost:6379/0 or sqlite:///path/to/file")
    if scheme == "sqlite":
        sqlite_path(url)
    elif scheme == "unix" and not parts.path:
        raise ConfigError(f"limiter URL {shown!r} names no socket: use unix:///path/redis.sock")
    elif scheme in ("redis", "rediss"):
        try:
            parts.port  # noqa: B018 - raises for a port that is not a number
        except ValueError:
            raise ConfigError(f"limiter URL {shown!r} has a port that is not a number "
                              "from 0 to 65535") from None
    return url


def limiter_from_url(
    url: str,
    limits: Iterable[LimitSpec] | LimitSpec | None,
    clock: Clock | None = None,
    name: str = "default",
    *,
    margin: float | None = 0.0,
) -> RateLimiter:
    """A :class:`RateLimiter` over the backend ``url`` selects, enforcing ``limits``.

    - ``memory://``: this process only (the exact in-memory sliding-window log);
    - ``sqlite:///path``: processes on one host sharing the file at ``path`` and ``name``;
    - ``redis://host:port/0``, ``rediss://…``, ``unix:///path/redis.sock``: every process
      and machine using the same server and ``name``.

    ``margin`` (seconds) lengthens the time each admission counts in its window: the floor
    of the margin that follows the observed delays (None: the default floor).
    """
    scheme = urlsplit(check_limiter_url(url)).scheme.lower()
    resolved: list[Limit] = build_limits(limits)
    # Every backend counts an answered call from its own arrival bound and keeps an open
    # call's slot taken (the in-process log itself; Redis and SQLite by hold and restamp).
    # A shared store keeps the larger floor: its stamps take a round trip, measured with
    # less to spare (see limiter.margin). SQLite had 100 ms while it counted from the start.
    if scheme == "memory":
        return RateLimiter(*resolved, clock=clock, margin=margin)  # None: follows the load
    floor = SHARED_FLOOR if margin is None else margin
    if scheme == "sqlite":
        from .sqlite_shared import SQLiteWindowBackend

        on_file = SQLiteWindowBackend(sqlite_path(url), resolved, name, margin=floor)
        return RateLimiter(backend=on_file, clock=clock, margin=floor)
    if scheme in ("redis", "rediss", "unix"):
        try:
            import redis  # noqa: F401
        except ImportError as exc:
            raise MissingExtra("redis", "redis") from exc
        from .redis import RedisWindowBackend

        on_server = RedisWindowBackend(url, resolved, key=f"throttlepool:{name}",
                                       margin=floor)
        return RateLimiter(backend=on_server, clock=clock, margin=floor)
    raise ConfigError(
        f"unknown limiter URL {mask_url(url)!r}: expected memory://, sqlite:///path, "
        "redis://host:port/db or unix:///path/redis.sock")
