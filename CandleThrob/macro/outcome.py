"""What one run did for the macro series: per series (its ``macro_audit`` row) and in total.

Part of the run's one state (``RunState.macro``), so the run report and the run's
status are built from it like everything else a run learns.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Optional

FAILED = "failed"


@dataclass
class SeriesOutcome:
    """One series in one run; becomes its ``macro_audit`` row."""

    series_id: str
    status: str = "ok"  # ok: brought up to date (maybe with nothing new) | failed | not_run (out of time)
    api_calls: int = 0
    rows_fetched: int = 0  # rows FRED sent, vintages clipped to the asked window
    observations_added: int = 0  # observation dates stored for the first time
    vintages_added: int = 0  # new rows: first releases and revisions
    vintages_closed: int = 0  # stored vintages given the end FRED now states
    rows_rejected: int = 0
    last_updated: Optional[dt.datetime] = None  # FRED's, naive UTC
    error: Optional[str] = None
    flags: dict = field(default_factory=dict)

    @property
    def updated(self) -> bool:
        return bool(self.vintages_added or self.vintages_closed)

    def row(self, run_id: str) -> dict:
        return {"run_id": run_id, "series_id": self.series_id, "status": self.status, "api_calls": self.api_calls,
                "rows_fetched": self.rows_fetched, "observations_added": self.observations_added,
                "vintages_added": self.vintages_added, "vintages_closed": self.vintages_closed,
                "rows_rejected": self.rows_rejected, "last_updated": self.last_updated,
                "error": (self.error or None) and self.error[:2000], "flags": self.flags}


@dataclass
class MacroState:
    """The macro stage's part of a run."""

    ran: bool = False
    skipped: Optional[str] = None  # why the stage did not run
    outcomes: dict[str, SeriesOutcome] = field(default_factory=dict)
    stopped: Optional[str] = None  # the budget that stopped it before every series was checked
    calls: dict[str, int] = field(default_factory=dict)  # by endpoint, retries included
    retries: dict[str, int] = field(default_factory=dict)  # by category

    def outcome(self, series_id: str) -> SeriesOutcome:
        return self.outcomes.setdefault(series_id, SeriesOutcome(series_id))

    def failed_series(self) -> list[str]:
        return sorted(s for s, o in self.outcomes.items() if o.status == FAILED)

    def unfinished(self) -> bool:
        return bool(self.failed_series() or self.stopped)

    def problems(self) -> list[str]:
        lines = []
        failed = self.failed_series()
        if failed:
            first = self.outcomes[failed[0]]
            lines.append(f"{len(failed)} macro series failed, e.g. {failed[0]}: {first.error}")
        if self.stopped:
            left = sorted(s for s, o in self.outcomes.items() if o.status == "not_run")
            lines.append(f"macro series stopped early by {self.stopped}: {', '.join(left)} not checked")
        return lines

    def report(self) -> dict[str, Any]:
        """The run report's ``macro`` section."""
        outcomes = self.outcomes.values()
        return {
            "ran": self.ran, "skipped": self.skipped, "series": len(self.outcomes),
            "series_updated": sum(o.updated for o in outcomes),
            "observations_stored": sum(o.observations_added for o in outcomes),
            "vintages_added": sum(o.vintages_added for o in outcomes),
            "vintages_closed": sum(o.vintages_closed for o in outcomes),
            "rows_rejected": sum(o.rows_rejected for o in outcomes),
            "calls": sum(self.calls.values()), "calls_by_endpoint": dict(self.calls),
            "retries_by_category": dict(self.retries), "failed_series": self.failed_series(),
            "stopped": self.stopped,
            "outcomes": {s: {k: v for k, v in o.row("").items() if k != "run_id"}
                         for s, o in sorted(self.outcomes.items())},
        }
