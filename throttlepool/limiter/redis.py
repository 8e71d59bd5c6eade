"""A sliding-window log in Redis: one budget shared by every process and machine.

One Lua script checks every configured limit atomically on the Redis server's clock
(``TIME``, microseconds) and either admits the cost in all of them or returns the exact
wait. Each limit keeps a sorted set of members ``"<uuid>:<weight>"`` scored by admission
time plus a running sum, so memory is proportional to requests in the window, not tokens.
Weights are stored in milli-units so fractional costs stay exact integers.

Limits of one unit and period (``100 output tokens/hour`` and ``80 output tokens/hour``)
share one window, checked against the smaller amount: each call is counted once, and a
window's keys depend only on its unit and period, so processes whose limits differ still
share the windows they have in common.

Keys are hash-tagged ``{key}:...`` so they all live in one cluster slot. When Redis cannot be
reached the backend raises :class:`~throttlepool.errors.LimiterUnavailable` (fail closed):
it never falls back to a per-process limit, which would multiply the budget.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from ..errors import CostExceedsLimit, LimiterUnavailable, MissingExtra
from ..store.redact import mask_url, redact_text
from .limits import Cost, Limit
from .ticket import OPEN_CALL_HOLD, OPEN_CALL_POLL, BackendBase, Ticket

try:
    import redis as _redis
    from redis.exceptions import NoScriptError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise MissingExtra("redis", "redis") from exc

log = logging.getLogger(__name__)

_MILLI = 1000  # weights and amounts are stored in thousandths of a unit

# KEYS = [pause, z1, s1, z2, s2, ...]
# ARGV = [n, win_us1, lim1, w1, win_us2, lim2, w2, ..., id, poll_us]
# -> {1, now_us} admitted, {0, wait_us} denied, {-1, i} weight i exceeds its limit.
ACQUIRE_LUA = """
local n = tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local id = ARGV[2 + 3 * n]
local worst = 0
local paused = tonumber(redis.call('GET', KEYS[1]) or '0')
if paused > now then worst = paused - now end
for i = 1, n do
  local z, s = KEYS[2*i], KEYS[2*i+1]
  local win, lim, w = tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i]), tonumber(ARGV[3*i+1])
  if w > lim then return {-1, i} end
  local old = redis.call('ZRANGEBYSCORE', z, '-inf', now - win)
  local used = redis.call('GET', s)
  if #old > 0 then
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now - win)
  end
  if used and #old > 0 then
    local gone = 0
    for j = 1, #old do gone = gone + tonumber(string.match(old[j], ':(%d+)$')) end
    used = redis.call('DECRBY', s, gone)
  elseif not used then
    -- the sum key is missing (first use, or evicted): rebuild it from the log
    used = 0
    local all = redis.call('ZRANGE', z, 0, -1)
    for j = 1, #all do used = used + tonumber(string.match(all[j], ':(%d+)$')) end
    if used > 0 then redis.call('SET', s, used, 'PX', math.floor(win / 1000) + 1) end
  end
  used = tonumber(used)
  if w > 0 and used + w > lim then
    local need, freed = used + w - lim, 0
    local e = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
    for j = 1, #e, 2 do
      freed = freed + tonumber(string.match(e[j], ':(%d+)$'))
      if freed >= need then
        local wait = tonumber(e[j+1]) + win - now + 1
        -- a member stamped ahead is a call still open: it leaves when it answers
        if tonumber(e[j+1]) > now then wait = math.min(wait, tonumber(ARGV[3 + 3 * n])) end
        if wait > worst then worst = wait end
        break
      end
    end
  end
end
if worst > 0 then return {0, worst} end
for i = 1, n do
  local z, s = KEYS[2*i], KEYS[2*i+1]
  local win, w = tonumber(ARGV[3*i-1]), tonumber(ARGV[3*i+1])
  if w > 0 then
    local ttl = math.floor(win / 1000) + 1
    redis.call('ZADD', z, now, id .. ':' .. w)
    redis.call('INCRBY', s, w)
    redis.call('PEXPIRE', z, ttl); redis.call('PEXPIRE', s, ttl)
  end
end
return {1, now}
"""

# KEYS = [z1, s1, ...]; ARGV = [n, admitted_us, id, win_us1, old1, new1, ...]
# Swaps each member to its new weight at the same score (new = 0 removes it).
SETTLE_LUA = """
local n, at, id = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
for i = 1, n do
  local z, s = KEYS[2*i-1], KEYS[2*i]
  local win, old, new = tonumber(ARGV[3*i+1]), tonumber(ARGV[3*i+2]), tonumber(ARGV[3*i+3])
  if at > now - win and old ~= new then
    local present = 0
    if old > 0 then present = redis.call('ZREM', z, id .. ':' .. old) end
    if present == 1 or old == 0 then
      local delta = new - old
      if new > 0 then redis.call('ZADD', z, at, id .. ':' .. new) end
      if redis.call('EXISTS', s) == 1 then redis.call('INCRBY', s, delta) end
      local ttl = math.floor(win / 1000) + 1
      redis.call('PEXPIRE', z, ttl); redis.call('PEXPIRE', s, ttl)
    end
  end
end
return 1
"""

# KEYS = [z1, s1, z2, s2, ...]; ARGV = [n, id, offset_us, win_us1, w1, ...] -> the new
# admission time: the server's now plus ``offset_us`` (negative: the call's answer bounds its
# arrival that long ago; positive: it is open, see OPEN_CALL_HOLD). The keys then live until
# the moved members leave their windows: they expire a window after the last admission, and a
# member moved past that would vanish with them, freeing its budget.
RESTAMP_LUA = """
local n, id = tonumber(ARGV[1]), ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local target = now + tonumber(ARGV[3])
for i = 1, n do
  local z, s = KEYS[2*i-1], KEYS[2*i]
  local win, w = tonumber(ARGV[2 + 2*i]), tonumber(ARGV[3 + 2*i])
  if w > 0 and redis.call('ZADD', z, 'XX', 'CH', target, id .. ':' .. w) == 1 then
    local ttl = math.floor((target + win - now) / 1000) + 1
    if redis.call('PTTL', z) < ttl then redis.call('PEXPIRE', z, ttl) end
    if redis.call('PTTL', s) < ttl then redis.call('PEXPIRE', s, ttl) end
  end
end
return target
"""

# KEYS = [pause]; ARGV = [duration_us]: admit nothing for that long (never shortens a pause).
PAUSE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local target = now + tonumber(ARGV[1])
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if target > cur then
  redis.call('SET', KEYS[1], target, 'PX', math.floor(tonumber(ARGV[1]) / 1000) + 1)
end
return 1
"""


def _milli(x: float) -> int:
    """A weight in milli-units, rounded up so the budget is never under-counted."""
    return math.ceil(x * _MILLI - 1e-6) if x > 0 else 0


def _period_tag(period: float) -> str:
    return f"{period:g}s"


def make_client(url: str, *, timeout: float = 5.0) -> Any:
    """A redis-py client for ``redis://``, ``rediss://`` or ``unix://`` URLs."""
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    return _redis.Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=min(timeout, 2.0),
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
        health_check_interval=30,
    )


class RedisWindowBackend(BackendBase):
    """Shared exact sliding-window log over any limits, admitted atomically in Redis.

    ``url_or_client`` is a ``redis://host:port/db``, ``rediss://`` or ``unix:///path`` URL,
    or a ready ``redis.Redis`` client. Every process using the same ``key`` and limits
    shares one budget. Denied reservations come back *provisional*, with ``admit_at`` at
    the exact moment the windows (or a shared pause) allow them. ``margin`` (seconds)
    lengthens the time each admission counts, to absorb jitter between our decision and
    the API server's clock.
    """

    def __init__(self, url_or_client: Any, limits: Sequence[Limit],
                 key: str = "throttlepool:default", *, margin: float = 0.0) -> None:
        if isinstance(url_or_client, str):
            # What we print and log: the client alone keeps the password.
            self.url = mask_url(url_or_client)
            self.client = make_client(url_or_client)
        else:
            self.client = url_or_client
            self.url = _describe(url_or_client)
        self.limits = list(limits)
        self.key = key
        tag = "{" + key + "}"
        self._pause_key = f"{tag}:pause"
        # One window per distinct (unit, period); _window_of[i] is limits[i]'s window.
        self._windows: list[Limit] = []
        self._window_of: list[int] = []
        for lim in self.limits:
            same = [j for j, w in enumerate(self._windows)
                    if (w.unit, w.period) == (lim.unit, lim.period)]
            if same:
                j = same[0]
                self._windows[j] = min(self._windows[j], lim, key=lambda x: x.amount)
            else:
                j = len(self._windows)
                self._windows.append(lim)
            self._window_of.append(j)
        self._settle_keys: list[str] = []
        for win in self._windows:
            base = f"{tag}:{win.unit}:{_period_tag(win.period)}"
            self._settle_keys += [f"{base}:z", f"{base}:s"]
        self._keys: list[str] = [self._pause_key, *self._settle_keys]
        self._margin = margin
        self._win_us = [round((w.period + margin) * 1_000_000) for w in self._windows]
        self._lim_m = [math.floor(w.amount * _MILLI + 1e-6) for w in self._windows]
        self._sha: dict[str, str] = {}

    # ---- script plumbing ---------------------------------------------------------------

    def _unavailable(self, exc: BaseException) -> LimiterUnavailable:
        return LimiterUnavailable(redact_text(
            f"the shared rate limiter at {self.url} is unreachable ({type(exc).__name__}: "
            f"{exc}); dispatch stops rather than exceed the shared budget "
            "(there is no per-process fallback)"
        ))

    def _eval(self, script: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            sha = self._sha.get(script)
            if sha is None:
                sha = self._sha[script] = self.client.script_load(script)
            try:
                return self.client.evalsha(sha, len(keys), *keys, *args)
            except NoScriptError:  # the server restarted or flushed its script cache
                sha = self._sha[script] = self.client.script_load(script)
                return self.client.evalsha(sha, len(keys), *keys, *args)
        except (_redis.ConnectionError, _redis.TimeoutError, OSError) as exc:
            raise self._unavailable(exc) from exc

    def ping(self) -> None:
        """Raise :class:`LimiterUnavailable` unless the server answers."""
        try:
            self.client.ping()
        except (_redis.ConnectionError, _redis.TimeoutError, OSError) as exc:
            raise self._unavailable(exc) from exc

    # ---- the backend seam --------------------------------------------------------------

    def _weights(self, cost: Cost) -> list[int]:
        """The milli-unit weight of ``cost`` in each window."""
        out = []
        for win, cap in zip(self._windows, self._lim_m, strict=True):
            w = cost.of(win.unit)
            m = _milli(w)
            if m > cap:
                raise CostExceedsLimit(w, str(win))
            out.append(m)
        return out

    def reserve(self, cost: Cost, now: float) -> Ticket:
        weights = self._weights(cost)
        member = uuid.uuid4().hex
        args: list[Any] = [len(self._windows)]
        for win, cap, w in zip(self._win_us, self._lim_m, weights, strict=True):
            args += [win, cap, w]
        args += [member, round(OPEN_CALL_POLL * 1_000_000)]
        status, value = self._eval(ACQUIRE_LUA, self._keys, args)
        if status == 1:
            ticket = Ticket(cost, now)
            ticket.handle = (member, int(value), weights)
            return ticket
        if status == -1:
            lim = self._windows[int(value) - 1]
            raise CostExceedsLimit(cost.of(lim.unit), str(lim))
        return Ticket(cost, now + int(value) / 1_000_000, provisional=True)

    def _swap(self, ticket: Ticket, new: list[int]) -> None:
        if ticket.provisional or ticket.handle is None:
            return
        member, at, old = ticket.handle
        args: list[Any] = [len(self._windows), at, member]
        for win, o, n in zip(self._win_us, old, new, strict=True):
            args += [win, o, n]
        try:
            self._eval(SETTLE_LUA, self._settle_keys, args)
        except LimiterUnavailable as exc:
            # The call was already made; losing its result would be worse than a stale
            # weight. The next reserve fails closed anyway.
            log.warning("could not settle a reservation: %s", exc)
            return
        ticket.handle = (member, at, new)

    def settle(self, ticket: Ticket, actual: Cost, now: float) -> Iterable[Ticket]:
        self._swap(ticket, self._weights(actual))
        ticket.cost = actual
        return []

    def cancel(self, ticket: Ticket, now: float) -> Iterable[Ticket]:
        self._swap(ticket, [0] * len(self._windows))
        return []

    def restamp(self, ticket: Ticket, now: float, at: float | None = None
                ) -> Iterable[Ticket]:
        """Count an admitted reservation from ``at`` (default ``now``) on, read on Redis's
        clock as that long before its now (clocks of hosts differ; durations agree)."""
        return self._move(ticket, 0.0 if at is None else min(at - now, 0.0), now)

    def hold(self, ticket: Ticket, now: float) -> Iterable[Ticket]:
        """Stamp an open call :data:`OPEN_CALL_HOLD` ahead on Redis's clock. The limiter
        renews its open calls at every step; a hold renewed within the last second is left as
        it is (a round trip per open call per step would be the cost otherwise)."""
        if ticket.admit_at - now > OPEN_CALL_HOLD - 1.0:
            return []
        return self._move(ticket, OPEN_CALL_HOLD, now)

    def _move(self, ticket: Ticket, offset: float, now: float) -> Iterable[Ticket]:
        if ticket.provisional or ticket.handle is None:
            return []
        member, _, weights = ticket.handle
        args: list[Any] = [len(self._windows), member, math.ceil(offset * 1_000_000)]
        for win, w in zip(self._win_us, weights, strict=True):
            args += [win, w]
        try:
            new_at = self._eval(RESTAMP_LUA, self._settle_keys, args)
        except LimiterUnavailable as exc:
            log.warning("could not restamp a reservation: %s", exc)
            return []
        ticket.handle = (member, int(new_at), weights)
        ticket.admit_at = now + offset
        return []

    def set_margin(self, margin: float, now: float) -> Iterable[Ticket]:
        """Count this process's admissions for ``margin`` seconds beyond their windows."""
        self._margin = margin
        self._win_us = [round((w.period + margin) * 1_000_000) for w in self._windows]
        return []

    def pause_until(self, until: float, now: float) -> Iterable[Ticket]:
        duration = until - now
        if duration <= 0:
            return []
        try:
            self._eval(PAUSE_LUA, [self._pause_key], [math.ceil(duration * 1_000_000)])
        except LimiterUnavailable as exc:
            log.warning("could not share a pause: %s", exc)
        return []

    # ---- inspection --------------------------------------------------------------------

    def usage(self) -> list[tuple[Limit, float]]:
        """Units currently counted in each limit's window (may include expired entries)."""
        try:
            raw = self.client.mget(self._settle_keys[1::2])
        except (_redis.ConnectionError, _redis.TimeoutError, OSError) as exc:
            raise self._unavailable(exc) from exc
        return [(lim, int(raw[j] or 0) / _MILLI)
                for lim, j in zip(self.limits, self._window_of, strict=True)]

    def reset(self) -> None:
        """Forget every reservation and pause under this key (tests, benchmarks)."""
        try:
            self.client.delete(*self._keys)
        except (_redis.ConnectionError, _redis.TimeoutError, OSError) as exc:
            raise self._unavailable(exc) from exc

    def close(self) -> None:
        self.client.close()

    def __repr__(self) -> str:
        return f"RedisWindowBackend({self.url!r}, key={self.key!r})"


def _describe(client: Any) -> str:
    try:
        kw = client.connection_pool.connection_kwargs
    except AttributeError:
        return repr(client)
    if kw.get("path"):
        return f"unix://{kw['path']}"
    return f"redis://{kw.get('host', '?')}:{kw.get('port', '?')}/{kw.get('db', 0)}"
