"""Choose the fewest Polygon calls that fetch every missing (ticker, session) cell.

Two kinds of call exist: a *grouped-daily* call returns every ticker for one
session; a *range* call returns one ticker for a contiguous span of sessions.
Covering the missing cells with the fewest calls is a minimum vertex cover of
the bipartite graph tickers x sessions with one edge per missing cell: a
grouped call takes a session vertex, a range call a ticker vertex (one range
from the ticker's first to last missing session covers all of its cells).

Bipartite vertex cover is solved exactly as a minimum s-t cut (König's theorem,
weighted form), on a graph first shrunk by merging identical vertices.  The
usual shape -- every ticker misses a suffix of the window (nightly run, a
backfill, a new index member) -- has a closed form, the *threshold rule*,
used whenever it applies.

Ties.  Among plans with the fewest calls the one with the fewest grouped calls
wins: a range call returns one ticker's bars, a grouped call those of ~10,000
tickers, so at equal call counts ranges download far less.  That plan is
unique (the inclusion-minimal grouped set), so both methods return it.

Range limit.  Polygon caps a range answer at 50,000 bars (~198 years of
sessions, so never reached for real).  A ticker's range cost is counted as
ceil(span / max_range_bars) over its whole missing span; the plan is optimal
for that cost.  The spans actually requested are shrunk to the cells the
grouped calls leave and split greedily, which can only need fewer calls.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Collection, Mapping, Sequence, Union

import numpy as np
import pandas as pd

POLYGON_MAX_RANGE_BARS = 50_000


@dataclass(frozen=True)
class GroupedCall:
    """One grouped-daily call: every ticker's bar for ``session``."""

    session: pd.Timestamp


@dataclass(frozen=True)
class RangeCall:
    """One range call: ``ticker``'s bars from ``start`` to ``end``, both inclusive."""

    ticker: str
    start: pd.Timestamp
    end: pd.Timestamp


@dataclass
class Plan:
    """The calls that fetch every missing cell, and how long they take at a given rate."""

    grouped: list[GroupedCall]  # sorted by session
    ranges: list[RangeCall]  # sorted by ticker, start
    missing_cells: int
    # The window the plan was made for: describe() needs it to tell which
    # grouped dates are consecutive sessions and how many sessions a span holds.
    sessions: pd.DatetimeIndex = field(default_factory=lambda: pd.DatetimeIndex([]),
                                       repr=False, compare=False)

    @property
    def calls(self) -> int:
        return len(self.grouped) + len(self.ranges)

    def describe(self, seconds_per_call: float) -> str:
        lines = [f"{count_text(self.calls, 'call')} for {count_text(self.missing_cells, 'missing cell')}: "
                 f"{len(self.grouped)} grouped, {len(self.ranges)} range"]
        if self.grouped:
            lines.append("grouped daily (every ticker, one session per call):")
            positions = self._positions([call.session for call in self.grouped])
            # A run ends wherever the next grouped session is not the next session.
            breaks = np.flatnonzero(np.diff(positions) != 1) + 1
            for run in np.split(positions, breaks):
                lines.append(f"  {self._span_text(run[0], run[-1])}")
        if self.ranges:
            lines.append("ticker range (one ticker, a span of sessions per call):")
            for call in self.ranges:
                start, end = self._positions([call.start, call.end])
                lines.append(f"  {call.ticker} {self._span_text(start, end)}")
        total = self.calls * seconds_per_call
        lines.append(f"{count_text(self.calls, 'call')}, {duration_text(total)} "
                     f"at {seconds_per_call:g} s per call")
        return "\n".join(lines)

    def _positions(self, days: Sequence[pd.Timestamp]) -> np.ndarray:
        positions = self.sessions.get_indexer(pd.DatetimeIndex(days))
        if (positions < 0).any():
            raise ValueError("Plan.sessions does not hold every session of the plan")
        return positions

    def _span_text(self, start: int, end: int) -> str:
        first = self.sessions[start].strftime("%Y-%m-%d")
        if start == end:
            return first
        last = self.sessions[end].strftime("%Y-%m-%d")
        return f"{first}..{last} ({end - start + 1} sessions)"


Missing = Union[Mapping[str, Sequence[pd.Timestamp]], Mapping[str, pd.DatetimeIndex]]


def plan_calls(missing: Missing, sessions: pd.DatetimeIndex, *,
               max_range_bars: int = POLYGON_MAX_RANGE_BARS, grouped_only: Collection[str] = ()) -> Plan:
    """The fewest calls covering every missing cell; ``missing`` maps ticker -> sessions.
    Cells of ``grouped_only`` tickers only a grouped call can fill (the whole market's)."""
    if max_range_bars < 1:
        raise ValueError(f"max_range_bars must be at least 1, got {max_range_bars}")
    sessions = pd.DatetimeIndex(sessions)
    if not (sessions.is_monotonic_increasing and sessions.is_unique):
        raise ValueError("sessions must be sorted and distinct")
    tickers, positions = _missing_positions(missing, sessions)
    range_cost = np.array([-(-(p[-1] - p[0] + 1) // max_range_bars) for p in positions],
                          dtype=np.int64)
    for i, ticker in enumerate(tickers):
        if ticker in grouped_only:  # dearer than a grouped call on every session: never ranged
            range_cost[i] = len(sessions) + 1

    cover = _threshold_cover if _all_suffixes(positions, len(sessions)) else _min_cut_cover
    grouped_positions, ranged = cover(positions, range_cost, len(sessions))

    is_grouped = np.zeros(len(sessions), dtype=bool)
    is_grouped[grouped_positions] = True
    ranges = [RangeCall(ticker, sessions[start], sessions[end])
              for ticker, cells, takes_range in zip(tickers, positions, ranged) if takes_range
              for start, end in _split(cells[~is_grouped[cells]], max_range_bars)]
    return Plan(grouped=[GroupedCall(sessions[p]) for p in grouped_positions],
                ranges=ranges,
                missing_cells=sum(len(p) for p in positions),
                sessions=sessions)


def _missing_positions(missing: Missing, sessions: pd.DatetimeIndex
                       ) -> tuple[list[str], list[np.ndarray]]:
    """Tickers with missing cells (sorted) and each one's sorted session positions."""
    tickers, positions = [], []
    known: dict[int, np.ndarray] = {}  # tickers often share one index of days: look it up once
    for ticker in sorted(missing):
        given = missing[ticker]
        if not len(given):
            continue
        if id(given) not in known:  # ``missing`` holds every ``given`` alive: no id is reused
            days = pd.DatetimeIndex(given)
            found = sessions.get_indexer(days)
            if (found < 0).any():
                day = days[int(np.argmax(found < 0))]
                raise ValueError(f"{ticker}: {day.date()} is not a session of the window")
            # Callers pass sorted days; sorting 500 x 2,500 positions again would be
            # most of the planner's time, so only disorder or repeats pay for it.
            known[id(given)] = found if (np.diff(found) > 0).all() else np.unique(found)
        tickers.append(ticker)
        positions.append(known[id(given)])
    return tickers, positions


def _all_suffixes(positions: list[np.ndarray], n_sessions: int) -> bool:
    # Positions are sorted and distinct, so ending at the last session and
    # starting len-1 before it means "exactly the last len sessions".
    return all(p[-1] == n_sessions - 1 and p[0] == n_sessions - len(p) for p in positions)


def _threshold_cover(positions: list[np.ndarray], range_cost: np.ndarray, n_sessions: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Exact cover when every ticker misses the last m_i sessions.

    Any grouped set G leaves ticker i uncovered unless its whole suffix lies in
    G, so only the longest suffix g inside G helps, and cost(g) = g + cost of
    ranging every ticker with m_i > g.  Between two m_i cost(g) only grows,
    so g in {0} and the m_i suffices; the smallest minimiser is the tie-break.
    """
    lengths = np.array([len(p) for p in positions], dtype=np.int64)
    candidates = np.unique(np.concatenate([[0], lengths]))
    order = np.argsort(lengths)
    # Cost of ranging every ticker longer than candidate g: a suffix sum.
    tail = np.concatenate([np.cumsum(range_cost[order][::-1])[::-1], [0]])
    longer_from = np.searchsorted(lengths[order], candidates, side="right")
    costs = candidates + tail[longer_from]
    g = int(candidates[int(np.argmin(costs))])  # argmin takes the first, i.e. smallest g
    return np.arange(n_sessions - g, n_sessions), lengths > g


def _min_cut_cover(positions: list[np.ndarray], range_cost: np.ndarray, n_sessions: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Exact cover for any missing pattern: merge identical vertices, then min cut.

    Tickers with the same missing sessions are all in or all out of every
    minimum cover (if one is out, all its sessions are in, and a second one
    in would be redundant); likewise sessions with the same missing tickers.
    So each class becomes one vertex weighing the sum of its members' costs.
    """
    cells = np.zeros((len(positions), n_sessions), dtype=bool)
    for row, p in enumerate(positions):
        cells[row, p] = True
    active_sessions = np.flatnonzero(cells.any(axis=0))
    cells = cells[:, active_sessions]

    ticker_class, ticker_rep = _identical_rows(cells)
    session_class, session_rep = _identical_rows(cells.T)
    adjacency = cells[np.ix_(ticker_rep, session_rep)]
    ticker_weight = np.bincount(ticker_class, weights=range_cost).astype(np.int64)
    session_weight = np.bincount(session_class).astype(np.int64)

    ranged_class, grouped_class = _min_weight_cover(adjacency, ticker_weight, session_weight)
    return active_sessions[grouped_class[session_class]], ranged_class[ticker_class]


def _identical_rows(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class of each row (identical rows share one) and a representative row per class."""
    packed = np.ascontiguousarray(np.packbits(matrix, axis=1))
    keys = packed.view(np.dtype((np.void, packed.shape[1]))).ravel()
    _, representative, klass = np.unique(keys, return_index=True, return_inverse=True)
    return klass.ravel(), representative


def _min_weight_cover(adjacency: np.ndarray, left_weight: np.ndarray, right_weight: np.ndarray  # noqa: C901
                      ) -> tuple[np.ndarray, np.ndarray]:
    # Complexity: one exact max-flow kept whole on purpose; it is checked against brute force.
    """Minimum weight vertex cover of a bipartite graph; masks of (left, right) in it.

    Network: source -> left vertex (capacity its weight) -> right vertex
    (unbounded) -> sink (capacity its weight).  A finite cut cuts no middle
    edge, so each edge has its left end on the sink side or its right end on
    the source side: {left not reachable} + {right reachable} is a cover, and
    a minimum cut is a minimum cover.  After max flow, the vertices reachable
    from the source in the residual graph form the smallest source side of
    any minimum cut, hence the fewest right (grouped) vertices: the tie-break.

    Max flow by shortest augmenting paths (Edmonds-Karp) after a greedy start.
    Flow lives only on edges that carry it, and each left vertex's neighbours
    are scanned with numpy, so a pass costs about one numpy call per left vertex.
    """
    n_left, n_right = adjacency.shape
    neighbours = [np.flatnonzero(row) for row in adjacency]
    sent = np.zeros(n_left, dtype=np.int64)
    received = np.zeros(n_right, dtype=np.int64)
    flow: list[dict[int, int]] = [{} for _ in range(n_left)]  # flow[l][r] > 0
    senders: list[set[int]] = [set() for _ in range(n_right)]  # senders[r] = {l: flow[l][r] > 0}

    def push(left: int, right: int, amount: int) -> None:
        sent[left] += amount
        received[right] += amount
        now = flow[left].get(right, 0) + amount
        if now:
            flow[left][right] = now
            senders[right].add(left)
        else:
            del flow[left][right]
            senders[right].discard(left)

    # Greedy start, scarcest vertices first: it usually leaves few paths to find.
    for left in sorted(range(n_left), key=lambda v: len(neighbours[v])):
        rights = neighbours[left]
        room = right_weight[rights] - received[rights]
        before = np.cumsum(room) - room
        take = np.minimum(room, np.clip(left_weight[left] - before, 0, None))
        for right in np.flatnonzero(take > 0):
            push(left, int(rights[right]), int(take[right]))

    while True:
        reached_left = sent < left_weight
        reached_right = np.zeros(n_right, dtype=bool)
        left_via = np.full(n_left, -1)  # right vertex a left one was reached from (reverse edge)
        right_via = np.full(n_right, -1)  # left vertex a right one was reached from
        queue = deque(np.flatnonzero(reached_left).tolist())
        open_end = -1
        while queue:
            left = queue.popleft()
            rights = neighbours[left]
            fresh = rights[~reached_right[rights]]
            reached_right[fresh] = True
            right_via[fresh] = left
            with_room = fresh[received[fresh] < right_weight[fresh]]
            if with_room.size:
                open_end = int(with_room[0])
                break
            for right in fresh.tolist():
                for back in senders[right]:
                    if not reached_left[back]:
                        reached_left[back] = True
                        left_via[back] = right
                        queue.append(back)
        if open_end < 0:
            return ~reached_left, reached_right

        path = []  # (left, right) forward edges, walked back from the sink
        right = open_end
        amount = int(right_weight[right] - received[right])
        while True:
            left = int(right_via[right])
            path.append((left, right))
            right = int(left_via[left])
            if right < 0:
                amount = min(amount, int(left_weight[left] - sent[left]))
                break
            amount = min(amount, flow[left][right])
            path.append((left, ~right))  # ~ marks a reverse edge to undo flow on
        for left, right in path:
            if right >= 0:
                push(left, right, amount)
            else:
                push(left, ~right, -amount)


def _split(cells: np.ndarray, max_bars: int) -> list[tuple[int, int]]:
    """Fewest spans of at most max_bars sessions covering the sorted cell positions.

    Greedy from the left is optimal for points on a line; each span ends at the
    last cell it holds, so no call asks for sessions past the cells it needs.
    """
    spans = []
    i = 0
    while i < len(cells):
        j = int(np.searchsorted(cells, cells[i] + max_bars - 1, side="right"))
        spans.append((int(cells[i]), int(cells[j - 1])))
        i = j
    return spans


def count_text(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def duration_text(seconds: float) -> str:
    # Whole minutes, rounded down, past the first minute: an estimate, not a stopwatch.
    if seconds < 60:
        return f"{round(seconds, 1):g} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        rest = int(seconds % 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"
