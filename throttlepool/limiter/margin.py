"""How long past its window an admission counts: the delay between our grant and the server's
count, as observed, instead of a fixed allowance.

A server stamps a request when it arrives. Between our grant and that stamp lie the hand-off
to a worker thread (observed exactly when the call starts), the client's own
work before the bytes leave (not observable, small on a quiet machine) and, on a thread's
first call, a connection and perhaps the SDK's initialisation (observable afterwards: the
call took longer than the fastest call did). An entry that counts for ``period + margin``
from its stamp can never let a window of the server's clock over the limit as long as its
stamp plus the margin is no earlier than its arrival. The part that was not observed grows
with the part that was (both are the machine's load), so each answered call counts from its
start plus its own hand-off delay (see ``AnsweredArrivals.answered``) and the margin is a
small floor that a 429 widens: the margin each entry gets is the floor plus its own delay,
not plus the largest delay of every recent call (which every entry paid at every window
boundary). The default floor follows the load too: it widens with the calls' hand-off
delays over the longest window and falls back to the fixed floor when they are small (see
:data:`LOAD_FLOOR_FACTOR`); a floor the user gives, or a shared store's, stays fixed. A
thread's first call counts from its answer until a later call shows how long the
server and the way back take at least; it then counts from its start plus whatever it took
beyond that. That fastest duration also holds its own client work before the send, which a
descheduled thread inflates unseen, so each clearly faster call moves the answered calls still
counted later to the bound it gives (see ``AnsweredArrivals.rebound``).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

#: The floor of a limiter in this process until a hand-off delay is observed (then it
#: follows the load, see LOAD_FLOOR_FACTOR): what a call's arrival bound may miss of its own
#: client work before the server counts it. Every window boundary costs it once (a call for
#: the next window waits until the entry it replaces has counted its period plus the floor):
#: 9 boundaries of the 1 s benchmark paid 180 ms at 20 ms. What the bound misses was measured
#: as the closest approach to a violation, min over k of the server's count of call k less that
#: of call k - limit less the window (the known-limit test's run: 16 threads, 50/2 s, 300
#: items, under two CPU burners, load 2-7): at a 20 ms floor never below 19.8 ms (10 runs), at
#: 10 ms never below 9.3 ms (10 runs), at 5 ms never below 3.6 ms (8 runs): the bound missed
#: 1.4 ms at most, the next call's own way to the server (2-25 ms, the same load) covering the
#: rest. (A stamp alone was up to 6 ms before the server's count in the 1 s benchmark.) An
#: early 5 ms floor saw one 429 in 300 calls before calls were counted from their arrival
#: bound; 10 ms keeps seven times the miss measured.
DEFAULT_FLOOR = 0.01
#: A floor that follows the load (``RateLimiter(margin=None)``, a runner's default) lies in
#: [LOAD_FLOOR_MIN, LOAD_FLOOR_MAX]: LOAD_FLOOR_FACTOR times the largest, over the longest
#: window, of an average (weight LOAD_WEIGHT) of the calls' hand-off delays (grant to start on
#: the worker thread). The hand-off delay is the load the limiter observes; the unobserved
#: client work before the send grows with the same load. Measured (two cores, rate-1s and the
#: known-limit test's workload): the average was at most 3.3 ms quiet in rate-1s, 6.0 ms
#: typical and 8.6 ms at most under two CPU burners; in the known-limit workload (16 threads
#: waking together) 5.2-5.5 typical and 11-15 at most quiet, 7.9-10.2 typical and 20-25 at
#: most under two burners. At a fixed 10 ms floor that load kept a closest approach >= 9.3 ms
#: (the bound misses 1.4 ms at most): the factor gives a loaded machine up to 20 ms. The
#: largest over the longest window (not the latest): an entry admitted under load still counts
#: for a whole window, and the floor a boundary pays must cover what that entry missed.
#: Never below the fixed floor: with a 5 ms least, rate-1s saw a 429 at load 4.2 while the
#: floor sat at 5 ms (small hand-off delays did not show what the bound missed).
LOAD_FLOOR_MIN = DEFAULT_FLOOR
LOAD_FLOOR_MAX = 0.02
LOAD_FLOOR_FACTOR = 1.5
LOAD_WEIGHT = 1 / 16
#: The load-following floor moves in steps of this (each move re-places the queued calls).
_LOAD_FLOOR_STEP = 0.001
#: The floor of processes sharing one budget through Redis or SQLite, which count each call
#: from its own arrival bound too, through a round trip to the store (four processes on two
#: cores beside a CPU burner: the server saw no window boundary closer than 16 ms at this
#: floor through Redis).
SHARED_FLOOR = 0.02
#: After a 429 the floor is at least this (then doubles with each further 429).
FIRST_WIDENING = 0.02
#: 429s widen the floor up to this share of the shortest period.
_CEILING_SHARE = 0.05
_INF = float("inf")
#: An average hand-off delay at or below this gives the least floor (see handed_off).
_QUIET_LOAD = LOAD_FLOOR_MIN / LOAD_FLOOR_FACTOR


class AdmissionMargin:
    """The margin each admission counts for, following the observed delays (a pure policy).

    ``floor`` covers the unobserved client work beyond a call's own hand-off delay (which
    the limiter adds to that call's stamp); :meth:`ended` feeds a warm call's duration,
    :meth:`widen` a 429. With ``follows_load`` the given floor holds only until
    :meth:`handed_off` feeds a hand-off delay: the floor then follows those delays (see
    :data:`LOAD_FLOOR_FACTOR`), never below what 429s widened it to; without, it is fixed
    (a floor the user gave, or a shared store's).
    """

    __slots__ = ("_ceiling", "_fastest_lag", "_horizon", "_load", "_load_least", "_peak_floor",
                 "_peaks", "_widened", "floor", "follows_load", "shortest_duration")

    def __init__(self, periods: Sequence[float], floor: float = DEFAULT_FLOOR, *,
                 follows_load: bool = False) -> None:
        if floor < 0:
            raise ValueError(f"margin floor must be >= 0, got {floor!r}")
        self.floor = floor
        self.follows_load = follows_load
        shortest = min(periods, default=0.0)
        self._ceiling = max(_CEILING_SHARE * shortest, floor)
        # What 429s widened the floor to (it wins over the load), and the least floor the
        # load may give with it.
        self._widened = 0.0
        self._load_least = LOAD_FLOOR_MIN
        # The hand-off delays' average, and its largest values still within the longest
        # window as (time fed, average), falling: the first is the largest.
        self._load = -1.0
        self._peaks: deque[tuple[float, float]] = deque()
        # The floor the load gave last, with the peak and the widening it was given by: the
        # peak mostly stays while a busy machine feeds every call's delay (see handed_off).
        self._peak_floor = (-1.0, -1.0, floor)
        self._horizon = max(periods, default=0.0) + LOAD_FLOOR_MAX
        #: The shortest duration of a warm call yet (inf: none yet); see :attr:`fastest`.
        self.shortest_duration = _INF
        self._fastest_lag = 0.0

    @property
    def value(self) -> float:
        """Seconds each admission counts beyond its window, now."""
        return self.floor

    @property
    def fastest(self) -> float | None:
        """The shortest duration of a call that was not a thread's first (None: none yet)."""
        return None if self.shortest_duration == _INF else self.shortest_duration

    def first_call_delay(self, duration: float) -> float | None:
        """How much of a thread's first call ``duration`` may have passed before the server
        saw it: what it took beyond the fastest other call (None: no other call yet).

        A call spends the fastest call's duration at least on the server and on the way
        back; what a first call takes beyond that went on connecting and initialising.
        """
        fastest = self.shortest_duration  # every answered call asks: not through the property
        if fastest == _INF:
            return None
        return duration - fastest if duration > fastest else 0.0

    @property
    def fastest_unobserved(self) -> float:
        """Beyond the floor, how long the fastest call may have spent before the server saw
        it: its hand-off delay (the load it met), at most its whole duration.

        A first call's connecting shows only in its duration, so its arrival is bounded by
        its answer less the fastest call's, and that leaves out the fastest call's own way
        there; the floor plus this covers it."""
        fastest = self.shortest_duration
        return 0.0 if fastest == _INF else min(self._fastest_lag, fastest)

    def ended(self, duration: float, lag: float = 0.0) -> bool:
        """A call that was not its thread's first, handed off ``lag`` seconds after its
        grant, took ``duration`` seconds to answer; True when it is the fastest yet."""
        if 0 < duration < self.shortest_duration:
            self.shortest_duration, self._fastest_lag = duration, max(lag, 0.0)
            return True
        return False

    @property
    def least(self) -> float:
        """The lowest the floor may fall to: a slack taken from the floor of the moment (see
        ``AnsweredArrivals.rebound``) must fit within this, or a floor that follows the load
        down leaves the entries that took it counted too early; a call left counted from its
        grant must be handed off within it (``RateLimiter.call_started``). It never falls."""
        return self._load_least if self.follows_load else self.floor

    def handed_off(self, lag: float, now: float) -> bool:
        """A call was handed off ``lag`` seconds after its grant, at clock time ``now``; True
        when the floor moved (a fixed floor never does)."""
        if not self.follows_load:
            return False
        load = self._load = lag if self._load < 0 else self._load + LOAD_WEIGHT * (lag - self._load)
        if load <= _QUIET_LOAD and self.floor == self._load_least:
            # Every call asks: while the floor is at its least, a load this small leaves it
            # there, and the peaks it would add are below the one that set it.
            return False
        peaks = self._peaks
        while peaks and peaks[-1][1] <= load:
            peaks.pop()
        peaks.append((now, load))
        while peaks[0][0] < now - self._horizon:
            peaks.popleft()
        peak, widened = peaks[0][1], self._widened
        known_peak, known_widened, floor = self._peak_floor
        if peak != known_peak or widened != known_widened:
            steps = math.ceil(LOAD_FLOOR_FACTOR * peak / _LOAD_FLOOR_STEP - 1e-6)
            floor = max(min(max(steps * _LOAD_FLOOR_STEP, LOAD_FLOOR_MIN), LOAD_FLOOR_MAX),
                        widened)
            self._peak_floor = (peak, widened, floor)
        if floor == self.floor:
            return False
        self.floor = floor
        return True

    def widen(self) -> None:
        """A server said 429 despite the margin: double the floor (the load no longer takes it
        below that)."""
        self._widened = min(max(2 * self.floor, FIRST_WIDENING), max(self._ceiling, self.floor))
        self._load_least = max(LOAD_FLOOR_MIN, self._widened)
        self.floor = max(self.floor, self._widened)
