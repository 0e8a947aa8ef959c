"""What a run tells its operator, built in one place from the run state and the plan:
the result dict (also the JSON report), the stdout summary, and Kestra's outputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from CandleThrob.ingestion.state import RunState
from CandleThrob.logs import scrub
from CandleThrob.planning.planner import Plan
from CandleThrob.source.polygon import SourceStats


def plan_result(plan: Plan, end: pd.Timestamp, tickers: int, seconds_per_call: float) -> dict[str, Any]:
    return {"status": "plan", "exit_code": 0, "end": end.date().isoformat(), "tickers": tickers,
            "calls": plan.calls, "grouped_calls": len(plan.grouped), "range_calls": len(plan.ranges),
            "missing_cells": plan.missing_cells, "plan_text": plan.describe(seconds_per_call)}


def run_result(state: RunState, plan: Plan, stats: SourceStats, *, seconds: float, peak_rss_mb: float,
               database: str, metrics: dict) -> dict[str, Any]:
    """The run report: what ``--report`` writes and what the summary is made of."""
    return {
        "run_id": state.run_id, "status": state.status, "exit_code": state.exit_code,
        "end": state.end.date().isoformat(), "tickers": len(state.tickers),
        "failed_tickers": state.failed_tickers(), "error": state.error, "failed_stage": state.failed_stage,
        "stopped": state.stopped, "remaining_calls": state.remaining_calls,
        "planned_calls": plan.calls, "grouped_calls": len(plan.grouped), "range_calls": len(plan.ranges),
        "missing_cells": plan.missing_cells, **state.totals(), "api_calls": stats.total,
        "api_calls_by_endpoint": dict(stats.calls), "failed_api_calls": dict(stats.failed_calls),
        "retries_by_category": dict(stats.retries_by_category), "rate_limited": stats.rate_limited,
        "restated": state.restated, "failed_grouped_days": state.failed_days,
        "splits_feed_error": state.splits_feed_error,
        "seconds": round(seconds, 3), "peak_rss_mb": round(peak_rss_mb, 1), "database": database,
        "outcomes": {t: {k: v for k, v in o.row(state.run_id).items() if k != "run_id"}
                     for t, o in sorted(state.outcomes.items())},
        "metrics": metrics,
    }


def summary(result: dict) -> str:
    """The few lines a person reads on stdout after a run."""
    by_endpoint = ", ".join(f"{k} {v}" for k, v in sorted(result.get("api_calls_by_endpoint", {}).items()))
    lines = [
        f"CandleThrob run {result['run_id']}: {result['status']} (exit {result['exit_code']})",
        f"  through session {result['end']}: {result['tickers']} tickers, "
        f"{result['rows_written']} bars written, {result['rows_rejected']} rejected",
        f"  API calls: {result.get('api_calls', 0)}" + (f" ({by_endpoint})" if by_endpoint else "")
        + f"; planned {result['planned_calls']} ({result['grouped_calls']} grouped, {result['range_calls']} range)",
        f"  time {result['seconds']:.1f} s, peak memory {result['peak_rss_mb']:.0f} MB",
        f"  data: {result['database']}",
    ]
    if result["planned_calls"] == 0 and not result.get("restated") and result["status"] == "success":
        lines.insert(1, "  already up to date: nothing new to fetch, nothing written")
    failed = result["failed_tickers"]
    if failed:
        lines.append(f"  failed or quarantined: {', '.join(failed[:20])}" + (" ..." if len(failed) > 20 else ""))
    if result.get("stopped"):
        lines.append(f"  stopped early ({result['stopped']}): {result['remaining_calls']} calls left; "
                     "the next run resumes")
    if result.get("error"):
        where = f" (in {result['failed_stage']})" if result.get("failed_stage") else ""
        lines.append(f"  error{where}: {result['error']}")
    return "\n".join(lines)


def write_report(path: Path, result: dict, secrets: Sequence[str] = ()) -> None:
    """The JSON report, written whole or not at all (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = scrub(json.dumps(result, indent=2, default=str, sort_keys=True), secrets)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    tmp.replace(path)


def publish_to_kestra(result: dict, environ: Mapping[str, str]) -> None:
    """Inside a Kestra task, publish outputs and metrics; elsewhere stay silent."""
    if not environ.get("KESTRA_EXECUTION_ID") and not environ.get("KESTRA_WORKER_ID"):
        return
    try:
        from kestra import Kestra
    except ImportError:
        return
    Kestra.outputs({"run_id": result["run_id"], "status": result["status"], "exit_code": result["exit_code"]})
    Kestra.counter("rows_written", result["rows_written"])
    Kestra.counter("rows_rejected", result["rows_rejected"])
    Kestra.counter("api_calls", result["api_calls"])
    Kestra.timer("duration", result["seconds"])
