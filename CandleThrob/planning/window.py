"""The session window of a run: its last session (``--end``) and where history starts."""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Optional

import pandas as pd

from CandleThrob.clock import Clock
from CandleThrob.errors import ConfigError
from CandleThrob.planning.trading_calendar import TradingCalendar

if TYPE_CHECKING:
    from CandleThrob.warehouse.storage import Warehouse

log = logging.getLogger("CandleThrob.window")
# Without HISTORY_START or --start, a ticker never stored gets this much history.
DEFAULT_HISTORY_YEARS = 2
# What a 403 "plan doesn't include this data timeframe" teaches when POLYGON_HISTORY_YEARS is unset.
FREE_TIER_YEARS = 2
HISTORY_YEARS_STATE = "history_years"


def resolve_end(end: Optional[dt.date], calendar: TradingCalendar, clock: Clock) -> pd.Timestamp:
    """The run's last session: ``end`` (a weekend or holiday means the session
    before it) capped at the last session whose bars are final now."""
    final = calendar.last_final_session(clock.now())
    if end is None:
        return final
    if pd.Timestamp(end) < calendar.first_session:
        raise ConfigError(f"--end {end} is before {calendar.first_session.date()}, the first "
                          "session of the trading calendar")
    session = calendar.session_on_or_before(min(pd.Timestamp(end), calendar.last_session))
    if session > final:
        log.warning("--end %s is after the last session with final bars (%s): using %s", end,
                    final.date(), final.date())
        return final
    return session


def default_start(end: pd.Timestamp, history_start: Optional[dt.date]) -> pd.Timestamp:
    """Where history starts for a ticker with nothing stored."""
    if history_start:
        return pd.Timestamp(history_start)
    return end - pd.DateOffset(years=DEFAULT_HISTORY_YEARS) + pd.Timedelta(days=1)


def validate_start(start: Optional[dt.date], history_start: Optional[dt.date], end: pd.Timestamp) -> None:
    """A history start after the run's last session would plan nothing: a usage error, not a no-op."""
    if start is not None and pd.Timestamp(start).date() > end.date():
        raise ConfigError(f"--start {start} is after {end.date()}, the run's last session (--end, or the last "
                          "completed NYSE session); expected a date on or before it")
    if history_start is not None and history_start > end.date():
        raise ConfigError(f"HISTORY_START={history_start.isoformat()!r} is not allowed: expected a date on or "
                          f"before {end.date()}, the run's last session.")


def history_floor(configured_years: Optional[int], warehouse: "Warehouse", clock: Clock) -> Optional[dt.date]:
    """The oldest date the key may read: ``POLYGON_HISTORY_YEARS``, else what a 403 taught, else unknown."""
    years = configured_years or int(warehouse.get_state(HISTORY_YEARS_STATE) or 0)
    if not years:
        return None
    # A day's margin: the vendor counts from its own today, which may be behind ours.
    return (pd.Timestamp(clock.today_in_new_york()) - pd.DateOffset(years=years) + pd.Timedelta(days=1)).date()


def learn_history_window(warehouse: "Warehouse", clock: Clock) -> dt.date:
    """The vendor refused old bars (HTTP 403 NOT_AUTHORIZED): remember the free tier's window."""
    with warehouse.transaction() as conn:
        warehouse.set_state(conn, HISTORY_YEARS_STATE, str(FREE_TIER_YEARS))
    floor = history_floor(None, warehouse, clock)
    log.warning("the data API refused bars older than this key's plan allows (HTTP 403 NOT_AUTHORIZED): "
                "assuming the free tier's %d years, so bars before %s are skipped from now on; set "
                "POLYGON_HISTORY_YEARS if your plan reaches further", FREE_TIER_YEARS, floor)
    return floor
