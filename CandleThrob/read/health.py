"""The warehouse's health, read from its audit tables: one small query per question.

Used by ``status`` and by the HTML report. Everything returned is plain data
(str, int, float, None, lists and dicts), ready for JSON.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
from typing import Optional

from sqlalchemy import and_, func, select

from CandleThrob.actions import factors as factor_math
from CandleThrob.warehouse.ledger import LedgerStore
from CandleThrob.warehouse.schema import (cell_gaps, ingestion_audit, ingestion_coverage, ingestion_runs,
                                          rejected_actions, rejected_bars, ticker_data_raw)
from CandleThrob.warehouse.storage import Warehouse, _date

Span = tuple[dt.date, dt.date]
LISTED = 20  # events, holes and flags listed by name; the rest are counted


def stored_spans(warehouse: Warehouse) -> dict[str, Span]:
    """Each ticker's first and last stored session (one pass over the primary key)."""
    raw = ticker_data_raw.c
    query = select(raw.ticker, func.min(raw.trade_date), func.max(raw.trade_date)).group_by(raw.ticker)
    with warehouse.engine.connect() as conn:
        return {t: (_date(a), _date(b)) for t, a, b in conn.execute(query)}


def last_covered(warehouse: Warehouse) -> dict[str, dt.date]:
    """Each ticker's last session asked for and answered (the ingest's checkpoint)."""
    c = ingestion_coverage.c
    with warehouse.engine.connect() as conn:
        return {t: _date(d) for t, d in conn.execute(select(c.ticker, func.max(c.covered_to)).group_by(c.ticker))}


def expected_tickers(warehouse: Warehouse) -> list[str]:
    """The tickers the nightly run keeps current (the active universe)."""
    return sorted(warehouse.universe(active_only=True)["ticker"])


def recent_holes(warehouse: Warehouse, limit: int = LISTED) -> list[dict]:
    g = cell_gaps.c
    query = (select(g.ticker, g.trade_date, g.kind, g.reason).where(g.status == "hole")
             .order_by(g.trade_date.desc(), g.ticker).limit(limit))
    with warehouse.engine.connect() as conn:
        return [{"ticker": t, "trade_date": _date(d).isoformat(), "kind": k, "reason": r}
                for t, d, k, r in conn.execute(query)]


def rejected_by_reason(warehouse: Warehouse) -> dict[str, dict]:
    """Per reason code: rejections recorded, and how many of those (ticker, session)s still have no bar.
    A bar refused for a low quality score (``low_quality_score``) is a quarantined one."""
    rb, raw = rejected_bars.c, ticker_data_raw.c
    joined = rejected_bars.outerjoin(ticker_data_raw, and_(raw.ticker == rb.ticker, raw.trade_date == rb.trade_date))
    query = select(rb.reasons, func.count(), func.count(raw.ticker)).select_from(joined).group_by(rb.reasons)
    out: dict[str, dict] = collections.defaultdict(lambda: {"rejected": 0, "still_missing": 0})
    with warehouse.engine.connect() as conn:
        for reasons, total, stored in conn.execute(query):
            for reason in str(reasons).split(";"):
                out[reason]["rejected"] += total
                out[reason]["still_missing"] += total - stored
    return dict(sorted(out.items(), key=lambda item: (-item[1]["rejected"], item[0])))


def corporate_actions(warehouse: Warehouse, spans: dict[str, Span]) -> dict:
    """Events on record; those not reached by the stored bars yet (pending); dividends that cannot
    be applied; the vendor's factors that differed from ours; records refused, by reason."""
    ledger = LedgerStore(warehouse)
    splits, dividends = ledger.splits(), ledger.dividends()
    pending = [{"ticker": t, "kind": kind, "date": day.isoformat()}
               for kind, frame, column in (("split", splits, "execution_date"),
                                           ("dividend", dividends, "ex_dividend_date"))
               for t, day in frame[["ticker", column]].itertuples(index=False)
               if t not in spans or day > spans[t][1]]
    first_bar = {t: span[0] for t, span in spans.items()}
    closes = ledger.previous_closes(sorted(set(dividends["ticker"])))
    unapplied = factor_math.compute(splits.iloc[0:0], dividends, closes, first_bar).unapplied
    return {"splits": len(splits), "dividends": len(dividends),
            "pending": sorted(pending, key=lambda e: (e["date"], e["ticker"])),
            "not_applied": unapplied, "vendor_factor_differs": _vendor_flags(warehouse),
            "rejected": _rejected_actions(warehouse)}


def last_runs(warehouse: Warehouse, limit: int) -> list[dict]:
    r = ingestion_runs.c
    with warehouse.engine.connect() as conn:
        rows = conn.execute(select(ingestion_runs).order_by(r.started_at.desc()).limit(limit)).mappings().all()
    return [_run(row) for row in rows]


def judged_runs(warehouse: Warehouse) -> list[dict]:
    """The runs that say whether last night worked: for the ``--end`` of the latest finished run,
    each shard's latest finished run (one, unsharded)."""
    r = ingestion_runs.c
    finished = r.status != "running"
    with warehouse.engine.connect() as conn:
        end = conn.execute(select(r.end_date).where(finished).order_by(r.started_at.desc()).limit(1)).scalar()
        if end is None:
            return []
        rows = conn.execute(select(ingestion_runs).where(finished, r.end_date == end)
                            .order_by(r.started_at.desc())).mappings().all()
    latest: dict[Optional[str], dict] = {}
    for row in rows:
        latest.setdefault(row["shard"], _run(row))
    return sorted(latest.values(), key=lambda run: (run["exit_code"] == 0, str(run["shard"])))


def _run(row: dict) -> dict:
    started, finished = row["started_at"], row["finished_at"]
    code = row["exit_code"]
    if code is None and row["status"] not in ("running",):
        code = 1  # a run that died before it could record its end
    return {"run_id": row["run_id"], "status": row["status"], "shard": row["shard"],
            "started_at": started.isoformat(sep=" ", timespec="seconds") if started else None,
            "seconds": round((finished - started).total_seconds(), 1) if started and finished else None,
            "end_date": _date(row["end_date"]).isoformat() if row["end_date"] else None,
            "exit_code": code, "api_calls": row["api_calls"], "rows_written": row["rows_written"],
            "rows_rejected": row["rows_rejected"], "tickers_failed": row["tickers_failed"], "error": row["error"]}


def _vendor_flags(warehouse: Warehouse) -> list[dict]:
    """Events whose vendor factor differed from ours when they arrived (flagged in the audit)."""
    a = ingestion_audit.c
    query = select(a.flags).where(a.flags.like("%vendor_factor_differs%")).order_by(a.updated_at.desc())
    seen, out = set(), []
    with warehouse.engine.connect() as conn:
        for (flags,) in conn.execute(query):
            for item in json.loads(flags or "{}").get("vendor_factor_differs", []):
                if item.get("event_id") not in seen:
                    seen.add(item.get("event_id"))
                    out.append(item)
    return out


def _rejected_actions(warehouse: Warehouse) -> dict[str, int]:
    a = rejected_actions.c
    query = select(a.kind, a.reasons, func.count()).group_by(a.kind, a.reasons).order_by(a.kind, a.reasons)
    with warehouse.engine.connect() as conn:
        return {f"{kind}: {reasons}": count for kind, reasons, count in conn.execute(query)}
