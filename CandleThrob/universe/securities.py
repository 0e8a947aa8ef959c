"""The securities behind the symbols: a stable id per company and the days each symbol meant it.

Bars are fetched by symbol, but symbols move: FB became META on 2022-06-09, and before
that META was another security (Roundhill's metaverse ETF). A security id follows the
company through its renames, and a symbol is valid for it only on the days the
intervals give it that symbol, so reading by security never fetches another
security's bars.

Ids: the CIK for a company whose CIK is known (``"1326801"``); when one CIK has several
symbols at once (share classes such as GOOG and GOOGL), the chain that began first
keeps the CIK and each other one is ``"<cik>.<its first ticker>"``. A stay with no
known CIK is its own security, ``"<ticker>@<first day>"`` (``"AN@1998-12-11"``, or
``"AN@start"`` when the start is unknown): without a CIK, two stays of one symbol may
be two companies, so they are never joined.
"""

from __future__ import annotations

import pandas as pd

from CandleThrob.planning.trading_calendar import DateLike

from .frames import INTERVAL_COLUMNS, ONE_DAY, day_of

SYMBOL_HISTORY_COLUMNS = ["security_id", "ticker", "valid_from", "valid_to"]
# Stand-ins for open ends while ordering and comparing; NaT never compares.
_EARLIEST, _LATEST = pd.Timestamp("1000-01-01"), pd.Timestamp("9999-01-01")


class SymbolConflictError(ValueError):
    """Two securities hold one symbol on the same day: the intervals are inconsistent."""


def assign_security_ids(intervals: pd.DataFrame) -> pd.DataFrame:
    """The intervals with a ``security_id`` column.

    Stays of one CIK that follow each other form one security, whatever their symbols
    (a rename is an add/remove pair of one CIK on one date: FB ends 2022-06-08, META
    starts 2022-06-09). A stay that overlaps every chain of its CIK starts a new chain
    (another share class). A following stay joins, in this order of preference, the
    chain that last had its symbol, the chain that ended the day before it starts, the
    chain that ended last.
    """
    frame = intervals[INTERVAL_COLUMNS].reset_index(drop=True)
    stays = frame.to_dict("records")
    ids: list[str] = [""] * len(stays)
    by_cik: dict[str, list[int]] = {}
    for number, stay in enumerate(stays):
        if stay["cik"] is None or pd.isna(stay["cik"]):
            start = "start" if pd.isna(stay["first_day"]) else f"{stay['first_day']:%Y-%m-%d}"
            ids[number] = f"{stay['ticker']}@{start}"
        else:
            by_cik.setdefault(stay["cik"], []).append(number)
    for cik, numbers in by_cik.items():
        for order, chain in enumerate(_chains([stays[number] for number in numbers])):
            first_ticker = stays[numbers[chain[0]]]["ticker"]
            for position in chain:
                ids[numbers[position]] = cik if order == 0 else f"{cik}.{first_ticker}"
    return frame.assign(security_id=ids)


def symbol_history(intervals: pd.DataFrame) -> pd.DataFrame:
    """``security_id, ticker, valid_from, valid_to``: which symbol each security had, when.

    Stays of one security under one symbol that touch are joined; a gap stays a gap
    (the company was out of the index, and who held its symbol then is not known).
    ``valid_from`` NaT: before the sources begin; ``valid_to`` NaT: still valid.
    Raises SymbolConflictError if two securities would hold one symbol on one day.
    """
    rows: list[dict] = []
    ordered = assign_security_ids(intervals).sort_values(["security_id", "first_day"], na_position="first")
    for stay in ordered.to_dict("records"):
        last = rows[-1] if rows else None
        if (last is not None and last["security_id"] == stay["security_id"] and last["ticker"] == stay["ticker"]
                and pd.notna(last["valid_to"]) and pd.notna(stay["first_day"])
                and last["valid_to"] + ONE_DAY == stay["first_day"]):
            last["valid_to"] = stay["last_day"]
            continue
        rows.append({"security_id": stay["security_id"], "ticker": stay["ticker"],
                     "valid_from": stay["first_day"], "valid_to": stay["last_day"]})
    history = pd.DataFrame(rows, columns=SYMBOL_HISTORY_COLUMNS).astype(
        {"valid_from": "datetime64[us]", "valid_to": "datetime64[us]"})
    _refuse_shared_symbols(history)
    return history.sort_values(["security_id", "valid_from"], na_position="first").reset_index(drop=True)


def symbol_pieces(history: pd.DataFrame, security_id: str, start: DateLike,
                  end: DateLike) -> list[tuple[str, pd.Timestamp, pd.Timestamp]]:
    """The ``(ticker, from, to)`` pieces to read for ``security_id`` between ``start`` and ``end``, in order.

    Only days on which the symbol was this security's are returned; days on which no
    symbol is known for it (out of the index, or a rename on an unknown day) are left
    out rather than guessed.
    """
    start, end = day_of(start), day_of(end)
    pieces = []
    for row in history[history["security_id"] == security_id].itertuples(index=False):
        lo = start if pd.isna(row.valid_from) else max(start, row.valid_from)
        hi = end if pd.isna(row.valid_to) else min(end, row.valid_to)
        if lo <= hi:
            pieces.append((row.ticker, lo, hi))
    return sorted(pieces, key=lambda piece: piece[1])


def _chains(stays: list[dict]) -> list[list[int]]:
    """Stays of one CIK grouped into securities (positions in ``stays``), the earliest-starting chain first."""
    def start(position: int) -> pd.Timestamp:
        return _EARLIEST if pd.isna(stays[position]["first_day"]) else stays[position]["first_day"]

    chains: list[list[int]] = []
    ends: list[pd.Timestamp] = []
    for position in sorted(range(len(stays)), key=lambda p: (start(p), stays[p]["ticker"])):
        stay = stays[position]
        free = [n for n, end in enumerate(ends) if end < start(position)]
        if free:
            chosen = max(free, key=lambda n: (stays[chains[n][-1]]["ticker"] == stay["ticker"],
                                              ends[n] + ONE_DAY == start(position), ends[n]))
            chains[chosen].append(position)
        else:
            chosen = len(chains)
            chains.append([position])
            ends.append(_LATEST)
        ends[chosen] = _LATEST if pd.isna(stay["last_day"]) else stay["last_day"]
    return chains


def _refuse_shared_symbols(history: pd.DataFrame) -> None:
    spans = sorted(((row["ticker"], _EARLIEST if pd.isna(row["valid_from"]) else row["valid_from"],
                     _LATEST if pd.isna(row["valid_to"]) else row["valid_to"], row["security_id"])
                    for row in history.to_dict("records")), key=lambda span: span[:2])
    holder, reach, previous = None, None, None  # the row of the ticker reaching furthest so far
    for ticker, lo, hi, security in spans:
        if ticker != previous:
            holder, reach, previous = None, None, ticker
        if holder is not None and lo <= reach and security != holder:
            raise SymbolConflictError(f"{ticker} is held by {holder} and {security} on {lo:%Y-%m-%d}")
        if reach is None or hi > reach:
            holder, reach = security, hi
