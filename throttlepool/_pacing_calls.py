"""The records a :class:`~throttlepool._pacing.HeaderBudget` keeps of its calls: which may
still count at the server, and the cheaper form they take until a response carries rate
headers (most servers never send any)."""

from __future__ import annotations

from ._pacing_records import MergedCalls, SentCall
from .limiter import Cost

_INF = float("inf")
#: Answered calls whose responses carried no rate headers share one entry per this many
#: seconds (while no window is learned): at tens of thousands of calls a second, one entry
#: each over the horizon would hold millions.
_MERGE_SPAN = 0.01


class CallRecords:
    """The calls a pacer let go: open ones, answered ones that may still count at the
    server, and answered ones merged into one entry per :data:`_MERGE_SPAN`.

    Until a response carries rate headers, calls are kept in a cheaper form: open ones in
    ``_blind_open``, answered ones only in merged entries. The first headers turn them into
    :class:`SentCall` records (:meth:`_see_headers`).
    """

    #: Calls answered this long ago are forgotten while no window is known yet.
    _UNKNOWN_HORIZON = 60.0

    def __init__(self) -> None:
        self._seq = 0  # the last call let go
        self._blind = True
        self._blind_open: dict[int, tuple[float, Cost]] = {}  # seq -> (let go, cost)
        # While blind: the time from which the oldest merged entry may be forgotten (its
        # answer plus the unknown horizon, a microsecond early: _forget_blind decides).
        self._forget_from = _INF
        self._open: dict[int, Cost] = {}  # calls without an answer yet
        self._sent: dict[int, SentCall] = {}  # calls that may still count at the server
        self._merged: MergedCalls | None = None  # the newest entry of merged answered calls
        self._merges = 0  # merged entries made: their keys (negative) are no call's seq
        self._merged_since = 0.0  # the earliest answer in the newest merged entry

    def _merge(self, cost: Cost, stamp: float) -> None:
        """Count a call answered at ``stamp`` in one entry with the calls answered just
        before it.

        The entry counts the sum of their costs from the latest of their answers, so a window
        learned later counts each of them a little longer than it could, never shorter. Its
        key is no call's seq: a 429 that follows (whose call the server did not count) finds
        nothing to withdraw and the call stays counted, on the safe side too.
        """
        merged = self._merged
        if (merged is not None and stamp - self._merged_since <= _MERGE_SPAN
                and self._sent.get(-self._merges) is merged):  # not forgotten yet
            merged.join(cost, stamp)
            return
        if merged is not None:
            merged.close()  # its members' costs are one sum from now on
        self._merges += 1
        self._merged_since = stamp
        self._merged = MergedCalls(stamp, cost, after=self._seq)
        if self._blind and not self._sent:
            self._forget_from = stamp + self._UNKNOWN_HORIZON - 1e-6
        self._sent[-self._merges] = self._merged

    def _forget_blind(self, now: float) -> None:
        """:meth:`_forget` while blind, as it would run on the records the first headers
        make (in dispatch order, an entry made after a call still open is kept)."""
        sent, horizon = self._sent, now - self._UNKNOWN_HORIZON
        oldest_open = next(iter(self._blind_open))  # the call just let go, at the latest
        gone: list[int] = []  # deleted after the walk, as in _forget
        self._forget_from = _INF
        for key, entry in sent.items():
            if isinstance(entry, MergedCalls) and entry.after >= oldest_open:
                # A call let go before it is still open: kept, asked again at the next call.
                self._forget_from = now
                break
            if entry.stamp > horizon:
                self._forget_from = entry.stamp + self._UNKNOWN_HORIZON - 1e-6
                break
            gone.append(key)
        for key in gone:
            del sent[key]

    def _see_headers(self) -> None:
        """Leave the blind form: every open call gets the record the buckets and a learned
        window work with (its answered calls are already merged entries in ``_sent``), in
        dispatch order among them, as if there had been no blind form (_forget's order)."""
        self._blind = False
        pending = list(self._blind_open.items())  # in seq order: admit numbers them so
        sent: dict[int, SentCall] = {}
        taken = 0
        for key, entry in self._sent.items():  # merged entries only, in the order made
            after = entry.after if isinstance(entry, MergedCalls) else 0
            while taken < len(pending) and pending[taken][0] <= after:
                seq, (let_go, cost) = pending[taken]
                sent[seq] = SentCall(let_go, cost)
                taken += 1
            sent[key] = entry
        for seq, (let_go, cost) in pending[taken:]:
            sent[seq] = SentCall(let_go, cost)
        self._sent = sent
        self._open = {seq: cost for seq, (_, cost) in self._blind_open.items()}
        self._blind_open.clear()
