"""``candlethrob status`` as text: a few lines a person reads over coffee."""

from __future__ import annotations

from CandleThrob.read.health import LISTED
from CandleThrob.read.status import Problem, plural


def render(status: dict, problems: list[Problem]) -> str:
    behind = status["sessions_behind"]
    freshness = "fresh" if behind == 0 else "nothing stored" if behind is None else \
        f"{plural(behind, 'session')} behind"
    lines = [f"warehouse {status['database']} at {status['now']}",
             f"  last stored session {status['last_stored_session'] or '-'}, last final NYSE session "
             f"{status['last_final_session']}: {freshness}"]
    lines += _tickers(status["tickers"])
    gaps = status["gaps"]
    lines.append(f"  gaps: {plural(gaps['pending_cells'], 'cell')} pending a retry, "
                 f"{plural(gaps['vendor_holes'], 'vendor hole')}"
                 + "".join(f"\n    hole {h['ticker']} {h['trade_date']} ({h['kind']}: {h['reason']})"
                           for h in gaps["holes"]))
    lines += _rejected(status["rejected_bars"])
    lines += _actions(status["corporate_actions"])
    lines += _runs(status["runs"])
    lines.append("check: ok" if not problems else f"check: --check exits {problems[0].code}" + "".join(
        f"\n  {p.code} {p.cause}: {p.message}" for p in problems))
    return "\n".join(lines)


def _tickers(tickers: dict) -> list[str]:
    """Tickers behind, grouped by how far (a stale night puts them all in one group)."""
    behind = tickers["behind"]
    lines = [f"  tickers: {tickers['stored']} stored, {len(behind)} behind the last final session"]
    groups: dict[tuple, list[str]] = {}
    for item in behind:
        groups.setdefault((item["sessions_behind"], item["last_covered"]), []).append(item["ticker"])
    for (sessions, last), names in list(groups.items())[:LISTED]:
        how = "never loaded" if sessions is None else f"{plural(sessions, 'session')} behind (last loaded {last})"
        shown = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        lines.append(f"    {how}: {shown}")
    return lines


def _rejected(by_reason: dict) -> list[str]:
    if not by_reason:
        return ["  rejected bars: none"]
    return ["  rejected bars by reason (rejections / still without a bar):"] + [
        f"    {reason}: {n['rejected']} / {n['still_missing']}" for reason, n in by_reason.items()]


def _actions(actions: dict) -> list[str]:
    lines = [f"  corporate actions: {plural(actions['splits'], 'split')} and "
             f"{plural(actions['dividends'], 'dividend')} on record; {len(actions['pending'])} pending (dated "
             "after the last stored bar), "
             f"{len(actions['not_applied'])} dividends not applied, {len(actions['vendor_factor_differs'])} vendor "
             f"factors differing from ours, {sum(actions['rejected'].values())} records refused"]
    lines += [f"    pending {e['kind']} {e['ticker']} {e['date']}" for e in actions["pending"][:LISTED]]
    lines += [f"    not applied: dividend {e['ticker']} {e['ex_dividend_date']}: {e['why']}"
              for e in actions["not_applied"][:LISTED]]
    lines += [f"    vendor factor differs: {e['kind']} {e['ticker']} {e['date']}: ours {e['ours']}, vendor "
              f"{e['vendor']}" for e in actions["vendor_factor_differs"][:LISTED]]
    lines += [f"    refused {what}: {count}" for what, count in actions["rejected"].items()]
    return lines


def _runs(runs: list[dict]) -> list[str]:
    if not runs:
        return ["  runs: none recorded"]
    lines = ["  last runs (newest first):"]
    for run in runs:
        seconds = "-" if run["seconds"] is None else f"{run['seconds']:g} s"
        shard = f" shard {run['shard']}" if run["shard"] else ""
        lines.append(f"    {run['started_at']}  {run['status']:<11} exit {run['exit_code']}  calls {run['api_calls']}"
                     f"  bars {run['rows_written']}  rejected {run['rows_rejected']}  {seconds}  through "
                     f"{run['end_date']}{shard}  run {run['run_id']}")
    return lines
