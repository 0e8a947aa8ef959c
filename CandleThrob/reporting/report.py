"""What a run tells its operator, built in one place from the run state and the plan:
the result dict (also the JSON report), the stdout summary, and Kestra's outputs."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

import pandas as pd

from CandleThrob.errors import ConfigError
from CandleThrob.ingestion.state import RunState
from CandleThrob.logs import scrub
from CandleThrob.planning.planner import count_text, duration_text
from CandleThrob.source.fred import FRED_BURST, FRED_CALLS_PER_MINUTE, FRED_SPACING
from CandleThrob.source.polygon import SourceStats
from CandleThrob.universe.market import MARKET

if TYPE_CHECKING:
    from CandleThrob.ingestion.pipeline import Work


def total_calls(work: "Work", verify_calls: int = 0) -> int:
    """Every call a run will make to the market-data API: data, corporate actions, ticker events,
    verification (one page each)."""
    return work.planned.plan.calls + len(work.ledger.calls) + len(work.renames) + verify_calls


def plan_result(work: "Work", end: pd.Timestamp, seconds_per_call: float, verify_calls: int = 0,
                window_unknown_before: Optional[dt.date] = None) -> dict[str, Any]:
    """What ``--plan`` prints and returns: every call the run would make, and its time.
    ``window_unknown_before``: the key's history window is not known yet, and calls start before this."""
    planned, plan, macro = work.planned, work.planned.plan, work.macro
    total = total_calls(work, verify_calls)
    lines = _bars_plan_lines(work, total, seconds_per_call, verify_calls, window_unknown_before) if work.bars else []
    lines += macro.describe()
    if macro.series:
        lines.append(f"{count_text(macro.max_calls, 'FRED call')} at most, "
                     f"{duration_text(fred_seconds(macro.max_calls))} at FRED's {FRED_CALLS_PER_MINUTE} calls a minute")
    return {"status": "plan", "exit_code": 0, "end": end.date().isoformat(), "tickers": len(planned.tickers),
            "calls": total, "data_calls": plan.calls, "grouped_calls": len(plan.grouped),
            "range_calls": len(plan.ranges), "ledger_calls": len(work.ledger.calls), "verify_calls": verify_calls,
            "missing_cells": plan.missing_cells, "unreachable_cells": planned.unreachable,
            "former_members": len(work.former), "former_member_calls": work.former_calls,
            "ticker_event_calls": len(work.renames),
            "history_floor": planned.floor.isoformat() if planned.floor else None,
            "history_window_unknown_before": window_unknown_before.isoformat() if window_unknown_before else None,
            "macro_series": len(macro.series), "macro_calls_min": macro.min_calls, "macro_calls_max": macro.max_calls,
            "macro_skipped": macro.skipped, "plan_text": "\n".join(lines)}


def _bars_plan_lines(work: "Work", total: int, seconds_per_call: float, verify_calls: int,
                     window_unknown_before: Optional[dt.date]) -> list[str]:
    planned, plan = work.planned, work.planned.plan
    head = (f"{count_text(total, 'call')}: {plan.calls:,} for {count_text(plan.missing_cells, 'missing cell')} "
            f"({len(plan.grouped)} grouped, {len(plan.ranges)} range), {len(work.ledger.calls)} corporate actions"
            + (f", {verify_calls} verify" if verify_calls else ""))
    lines = [head] + plan.describe(seconds_per_call).splitlines()[1:-1]
    if planned.settle:
        lines.append(f"settle window: {', '.join(sorted(d.isoformat() for d in planned.settle))} asked again "
                     "(values can still change after the close)")
    if planned.retries:
        lines.append(f"retries: {planned.retries} pending cells whose answer had no valid bar")
    if planned.floor is not None and planned.unreachable:
        lines.append(f"history window: {planned.unreachable:,} cells before {planned.floor} are older than this "
                     "key's plan serves (POLYGON_HISTORY_YEARS); not asked")
    market = planned.missing.get(MARKET)
    if market is not None and len(market):
        lines.append(f"whole market (UNIVERSE=all): {count_text(len(market), 'session')} stored whole, every "
                     "common stock and ETF of their grouped answers; no call per symbol")
    if work.former:
        lines.append(f"point in time: {len(work.former)} former members or earlier symbols inside the window "
                     f"(FORMER_MEMBERS), {work.former_calls:+d} calls for them"
                     + (" (the grouped days carry them)" if work.former_calls == 0 else ""))
    if work.renames:
        lines.append(f"ticker events: {len(work.renames)} calls for renames the page cannot date ("
                     + ", ".join(f"{r.old}->{r.new}" for r in work.renames[:5])
                     + (", ..." if len(work.renames) > 5 else "") + "); the bars are planned again after them")
    if window_unknown_before is not None:
        lines.append(f"history window: not known yet, and calls reach before {window_unknown_before}; a free key "
                     "reads two years. The run makes the oldest call first: if the key may not read that far "
                     "(HTTP 403), it plans again from the earliest reachable date, and the count changes (plus "
                     "that one refused call). Set POLYGON_HISTORY_YEARS to plan within your key's window now.")
    lines += work.ledger.describe()
    if verify_calls:
        lines.append(f"verify adjustments: {verify_calls} range calls with adjusted=true, one per ticker")
    if work.legacy:
        lines.append(f"upgrade: {len(work.legacy)} tickers of a first-release warehouse turned back into "
                     "as-traded bars, no bar fetched again")
    lines.append(f"{count_text(total, 'call')}, {duration_text(total * seconds_per_call)} "
                 f"at {seconds_per_call:g} s per call")
    return lines


def fred_seconds(calls: int) -> float:
    """The limiter's wait for ``calls`` made at once: a burst, then the spacing."""
    return max(0, calls - FRED_BURST) * FRED_SPACING


def run_result(state: RunState, work: "Work", stats: SourceStats, *, seconds: float, peak_rss_mb: float,
               database: str, metrics: dict) -> dict[str, Any]:
    """The run report: what ``--report`` writes and what the summary is made of."""
    plan = work.planned.plan
    return {
        "run_id": state.run_id, "status": state.status, "exit_code": state.exit_code,
        "end": state.end.date().isoformat(), "tickers": len(state.tickers),
        "failed_tickers": state.failed_tickers(), "error": state.error, "failed_stage": state.failed_stage,
        "stopped": state.stopped, "remaining_calls": state.remaining_calls,
        "planned_calls": total_calls(work, state.verify_calls),
        "data_calls": plan.calls, "grouped_calls": len(plan.grouped), "range_calls": len(plan.ranges),
        "ledger_calls": len(work.ledger.calls), "missing_cells": plan.missing_cells,
        "former_members": len(work.former), "former_member_calls": work.former_calls,
        "ticker_event_calls": len(work.renames),
        **state.totals(), "api_calls": stats.total,
        "api_calls_by_endpoint": dict(stats.calls), "failed_api_calls": dict(stats.failed_calls),
        "retries_by_category": dict(stats.retries_by_category), "rate_limited": stats.rate_limited,
        "failed_grouped_days": state.failed_days, "problems": state.problems(),
        "actions_feed_error": state.actions_feed_error,
        "corporate_actions": state.actions, "factors_refreshed": len(state.factors_refreshed),
        "universe_refused": state.universe_refused, "revised_bars": state.revised,
        "settled_sessions": sorted(d.isoformat() for d in state.settled),
        "pending_cells": state.gaps.get("pending_cells", 0), "vendor_holes": state.gaps.get("vendor_holes", 0),
        "unreachable_cells": work.planned.unreachable + state.unreachable,
        "history_floor": (lambda floor: floor.isoformat() if floor else None)(state.history_floor
                                                                              or work.planned.floor),
        "verified": state.verified, "macro_only": not work.bars, "macro": state.macro.report(),
        "seconds": round(seconds, 3), "peak_rss_mb": round(peak_rss_mb, 1), "database": database,
        "market_symbols": state.market_symbols(),
        "outcomes": {t: {k: v for k, v in o.row(state.run_id).items() if k != "run_id"}
                     for t, o in sorted(state.outcomes.items()) if state.listed(o)},
        "metrics": metrics,
    }


def summary(result: dict) -> str:
    """The few lines a person reads on stdout after a run."""
    macro = result.get("macro") or {}
    lines = [f"CandleThrob run {result['run_id']}: {result['status']} (exit {result['exit_code']})"]
    if result["planned_calls"] == 0 and result["status"] == "success" and not macro.get("series_updated"):
        lines.append("  already up to date: nothing new to fetch, nothing written")
    if not result.get("macro_only"):
        lines += _bars_summary(result)
    if macro.get("ran"):
        lines.append(f"  macro: {macro['series_updated']} of {macro['series']} series updated, "
                     f"{macro['observations_stored']} observations stored, {macro['vintages_added']} vintages "
                     f"added, {macro['calls']} FRED calls")
    lines += [f"  time {result['seconds']:.1f} s, peak memory {result['peak_rss_mb']:.0f} MB",
              f"  data: {result['database']}"]
    lines += _notes(result)
    lines += [f"  {problem}" for problem in result.get("problems") or () if "macro series" in problem]
    if result.get("error"):
        where = f" (in {result['failed_stage']})" if result.get("failed_stage") else ""
        lines.append(f"  error{where}: {result['error']}")
    return "\n".join(lines)


def _bars_summary(result: dict) -> list[str]:
    by_endpoint = ", ".join(f"{k} {v}" for k, v in sorted(result.get("api_calls_by_endpoint", {}).items()))
    return [f"  through session {result['end']}: {result['tickers']} tickers, "
            f"{result['rows_written']} bars written, {result['rows_rejected']} rejected",
            f"  API calls: {result.get('api_calls', 0)}" + (f" ({by_endpoint})" if by_endpoint else "")
            + f"; planned {result['planned_calls']} ({result['grouped_calls']} grouped, {result['range_calls']} "
            f"range, {result['ledger_calls']} corporate actions)"]


def _notes(result: dict) -> list[str]:
    """What else the bars stages left to say."""
    lines = []
    if result.get("pending_cells") or result.get("vendor_holes"):
        lines.append(f"  cells: {result['pending_cells']} pending (asked again on later runs), "
                     f"{result['vendor_holes']} vendor holes (recorded, not asked again)")
    if result.get("revised_bars"):
        lines.append(f"  {result['revised_bars']} bars revised by the vendor since they were stored; applied")
    if result.get("unreachable_cells"):
        lines.append(f"  {result['unreachable_cells']} cells before {result['history_floor']} are beyond this "
                     "key's history window; not asked")
    if result.get("universe_refused"):
        lines.append(f"  universe: {result['universe_refused']}; the stored members were used")
    failed = result["failed_tickers"]
    if failed:
        lines.append(f"  failed or quarantined: {', '.join(failed[:20])}" + (" ..." if len(failed) > 20 else ""))
    if result.get("stopped"):
        lines.append(f"  stopped early ({result['stopped']}): {result['remaining_calls']} calls left; "
                     "the next run resumes")
    days = [p for p in result.get("problems") or () if p.startswith("grouped day")]
    lines += [f"  {problem}" for problem in days[:5]] + ([f"  ... {len(days) - 5} more days"] if len(days) > 5 else [])
    return lines


def check_report_path(path: Path) -> None:
    """``--report`` must be writable before the run starts, not after it has done its work."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--report {path} is a directory; expected a file path such as {path / 'report.json'}")
    if _is_special(path):
        if not os.access(path, os.W_OK):
            raise ConfigError(f"--report {path} cannot be written; expected a writable file")
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = _temporary(path)
        probe.write_text("", encoding="utf-8")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--report {path} cannot be written ({exc.strerror}); expected a path in a "
                          "writable folder") from None


def write_report(path: Path, result: dict, secrets: Sequence[str] = ()) -> None:
    """The JSON report, written whole or not at all (a temporary file beside it, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = scrub(json.dumps(result, indent=2, default=str, sort_keys=True), secrets)
    if _is_special(path):
        # /dev/null, /dev/stdout or a pipe: renaming over it would replace the device with a file.
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(text + "\n")
        return
    tmp = _temporary(path)
    tmp.write_text(text + "\n", encoding="utf-8")
    tmp.replace(path)


def _is_special(path: Path) -> bool:
    """A device or pipe the report is streamed into rather than replaced."""
    return path.exists() and not path.is_file()


def _temporary(path: Path) -> Path:
    return path.parent / f".{path.name}.{os.getpid()}.tmp"


KESTRA_OUTPUTS = ("run_id", "status", "exit_code", "end", "tickers", "tickers_ok", "tickers_failed",
                  "rows_written", "rows_rejected", "api_calls", "planned_calls", "remaining_calls", "stopped",
                  "pending_cells", "vendor_holes", "unreachable_cells", "history_floor", "revised_bars",
                  "failed_stage", "error")
KESTRA_COUNTERS = ("rows_written", "rows_rejected", "api_calls", "tickers_failed", "pending_cells", "vendor_holes",
                   "unreachable_cells", "revised_bars")


def kestra_wanted(environ: Mapping[str, str]) -> bool:
    """The flows set CANDLETHROB_KESTRA=true: Kestra's task runner sets nothing the tool could see."""
    return str(environ.get("CANDLETHROB_KESTRA", "")).strip().lower() in ("1", "true", "yes", "on")


def check_kestra(environ: Mapping[str, str]) -> None:
    """Before the run: asked to publish to Kestra without the ``kestra`` package is a usage error."""
    if not kestra_wanted(environ):
        return
    try:
        import kestra  # noqa: F401
    except ImportError:
        raise ConfigError("CANDLETHROB_KESTRA=true needs the kestra package (pip install -r requirements.txt); "
                          "unset CANDLETHROB_KESTRA outside Kestra") from None


def kestra_outputs(result: Mapping[str, Any]) -> tuple[dict, list[tuple[str, str, float]]]:
    """What a Kestra task shows for a run: outputs, and metrics as (kind, name, value).
    A run that failed before it started (exit 2 or 3) has only some of these."""
    outputs = {key: result.get(key) for key in KESTRA_OUTPUTS if key in result}
    if "error" in outputs and not outputs["error"] and result.get("problems"):
        outputs["error"] = "; ".join(result["problems"])  # why a run that ran to its end is partial
    metrics = [("counter", name, result.get(name) or 0) for name in KESTRA_COUNTERS if name in result]
    if "seconds" in result:
        metrics.append(("timer", "duration", result["seconds"]))
    return outputs, metrics


def publish_to_kestra(result: Mapping[str, Any], environ: Mapping[str, str], secrets: Sequence[str] = ()) -> None:
    """Inside a Kestra task (CANDLETHROB_KESTRA=true), publish outputs and metrics with the
    ``kestra`` package, which prints Kestra's stdout protocol lines ``::{"outputs": {...}}::``
    and ``::{"metrics": [...]}::`` (one per metric); elsewhere stay silent."""
    if not kestra_wanted(environ):
        return
    from kestra import Kestra

    outputs, metrics = kestra_outputs(result)
    # An error text can quote a URL or a vendor message: scrubbed like the report.
    Kestra.outputs({k: scrub(v, secrets) if isinstance(v, str) else v for k, v in outputs.items()})
    for kind, name, value in metrics:
        if kind == "timer":
            Kestra.timer(name, value)  # seconds
        else:
            Kestra.counter(name, value)
    sys.stdout.flush()
