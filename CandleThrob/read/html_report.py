"""One self-contained HTML page about the warehouse: it opens offline, with no CDN and no files beside it.

Charts are PNG images inlined as ``data:`` URIs (see ``charts`` for why); the
tables are plain HTML. The ``<body>`` carries ``data-charts`` (images on the
page), and a few lines of inline script set ``data-charts-rendered`` to the
number the browser actually decoded, so a headless browser can tell a page
that rendered from one that did not.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Iterable, Optional, Sequence

import pandas as pd

from CandleThrob.errors import ReadRequestError
from CandleThrob.planning.trading_calendar import TradingCalendar
from CandleThrob.read import charts, files
from CandleThrob.read.bars import BarsRequest, bars_frame
from CandleThrob.read.coverage_map import CoverageMap, coverage_map
from CandleThrob.read.health import stored_spans
from CandleThrob.read.status import warehouse_status
from CandleThrob.warehouse.ledger import LedgerStore
from CandleThrob.warehouse.storage import Warehouse

PROBLEMS_LISTED = 200
RUNS_LISTED = 20
STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #212121; max-width: 1300px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ddd; }
img { max-width: 100%; display: block; margin: 8px 0; }
table { border-collapse: collapse; font-size: 12px; } td, th { border: 1px solid #ddd; padding: 2px 8px; }
th { background: #f5f5f5; text-align: left; } td.num { text-align: right; }
.bad { color: #c62828; font-weight: 600; } .ok { color: #2e7d32; font-weight: 600; }
"""
SELF_CHECK = """addEventListener("load", () => {
  document.body.dataset.chartsRendered = [...document.images].filter(i => i.complete && i.naturalWidth > 0).length;
});"""


def build_report(warehouse: Warehouse, ticker: Optional[str] = None, runs: int = 60,
                 calendar: Optional[TradingCalendar] = None) -> str:
    """The page, as text. ``ticker`` adds its price chart (raw against adjusted, with its corporate actions)."""
    calendar = calendar or TradingCalendar(clock=warehouse.clock)
    spans = stored_spans(warehouse)
    status = warehouse_status(warehouse, calendar, runs=runs, spans=spans)
    final = pd.Timestamp(status["last_final_session"]).date()
    sections = [_header(status), _coverage(coverage_map(warehouse, calendar, final, spans)), _runs(status["runs"]),
                _rejected(status["rejected_bars"])]
    if ticker is not None:
        sections.append(_ticker(warehouse, ticker))
    body = "\n".join(sections)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>CandleThrob warehouse report'
            f'</title><style>{STYLE}</style></head>\n<body data-charts="{body.count("<img ")}">\n{body}\n'
            f"<script>{SELF_CHECK}</script>\n</body></html>\n")


def write_report(path: Path, page: str) -> None:
    with files.replaced(Path(path)) as tmp:
        tmp.write_text(page, encoding="utf-8")


def _header(status: dict) -> str:
    behind = status["sessions_behind"]
    fresh = '<span class="ok">fresh</span>' if behind == 0 else \
        f'<span class="bad">{"nothing stored" if behind is None else f"{behind} sessions behind"}</span>'
    gaps, actions = status["gaps"], status["corporate_actions"]
    return (f"<h1>CandleThrob warehouse report</h1>\n<p>{_e(status['database'])}, at {_e(status['now'])}.<br>"
            f"Last stored session {_e(status['last_stored_session'] or '-')}, last final NYSE session "
            f"{_e(status['last_final_session'])}: {fresh}. {status['tickers']['stored']} tickers stored, "
            f"{len(status['tickers']['behind'])} behind; {gaps['pending_cells']} cells pending a retry, "
            f"{gaps['vendor_holes']} vendor holes. Corporate actions: {actions['splits']} splits, "
            f"{actions['dividends']} dividends, {len(actions['pending'])} pending, {len(actions['not_applied'])} "
            f"not applied, {sum(actions['rejected'].values())} records refused.</p>")


def _coverage(grid: CoverageMap) -> str:
    if not grid.tickers:
        return "<h2>Coverage</h2>\n<p>No bars stored.</p>"
    problems = grid.problems()
    more = f"<p>… and {len(problems) - PROBLEMS_LISTED} more.</p>" if len(problems) > PROBLEMS_LISTED else ""
    listing = _table(("ticker", "state", "months", "which"), problems[:PROBLEMS_LISTED]) + more if problems \
        else "<p>Every month of every ticker is complete.</p>"
    return (f"<h2>Coverage</h2>\n{_img(charts.coverage_heatmap(grid), 'coverage heatmap, tickers by months')}\n"
            f"<h3>Months that are not complete, worst first</h3>\n{listing}")


def _runs(runs: Sequence[dict]) -> str:
    if not runs:
        return "<h2>Run history</h2>\n<p>No run recorded.</p>"
    columns = ("started", "status", "exit", "through", "shard", "API calls", "bars written", "rejected", "seconds",
               "run")
    rows = [(r["started_at"], r["status"], r["exit_code"], r["end_date"], r["shard"] or "", r["api_calls"],
             r["rows_written"], r["rows_rejected"], r["seconds"], r["run_id"]) for r in runs[:RUNS_LISTED]]
    return (f"<h2>Run history</h2>\n{_img(charts.run_history(runs), 'API calls, bars and duration per run')}\n"
            f"{_table(columns, rows)}")


def _rejected(by_reason: dict) -> str:
    if not by_reason:
        return "<h2>Rejected bars</h2>\n<p>None.</p>"
    rows = [(reason, n["rejected"], n["still_missing"]) for reason, n in by_reason.items()]
    return (f"<h2>Rejected bars by reason</h2>\n{_img(charts.rejected_reasons(by_reason), 'rejected bars by reason')}"
            f"\n{_table(('reason', 'rejected', 'still without a bar'), rows)}")


def _ticker(warehouse: Warehouse, ticker: str) -> str:
    request = BarsRequest.of([ticker])
    closes = None
    for adjust, name in (("none", "as traded"), ("split", "split-adjusted"), ("total", "total return")):
        frame = bars_frame(warehouse, BarsRequest(request.tickers, adjust=adjust))
        column = frame[["trade_date", "close"]].rename(columns={"close": name})
        closes = column if closes is None else closes.merge(column, on="trade_date")
    if closes.empty:
        raise ReadRequestError(f"--ticker {request.tickers[0]}: no bars stored for it; expected a ticker in the "
                               "warehouse (candlethrob status lists them by count)")
    ledger = LedgerStore(warehouse)
    splits, dividends = ledger.splits(request.tickers), ledger.dividends(request.tickers)
    events = [("split", d, f"{b:g}-for-{a:g}") for d, a, b in
              splits[["execution_date", "split_from", "split_to"]].itertuples(index=False)]
    events += [("dividend", d, f"{c:g} {u}") for d, c, u in
               dividends[["ex_dividend_date", "cash_amount", "currency"]].itertuples(index=False)]
    chart = charts.price_chart(request.tickers[0], closes, splits, dividends)
    listing = _table(("event", "date", "amount"), sorted(events, key=lambda e: e[1])) if events else \
        "<p>No split or dividend on record.</p>"
    return (f"<h2>{_e(request.tickers[0])}</h2>\n{_img(chart, request.tickers[0] + ' close, raw and adjusted')}\n"
            f"{listing}")


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'


def _table(columns: Iterable[str], rows: Iterable[Sequence]) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "\n".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


def _cell(value: object) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'<td class="num">{value:,}</td>' if isinstance(value, int) else f'<td class="num">{value:g}</td>'
    return f"<td>{_e('' if value is None else value)}</td>"


def _e(value: object) -> str:
    return html.escape(str(value))
