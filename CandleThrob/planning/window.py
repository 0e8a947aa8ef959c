"""The session window of a run: its last session (``--end``) and where history starts."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Optional

import pandas as pd

from CandleThrob.clock import Clock
from CandleThrob.errors import ConfigError
from CandleThrob.planning.trading_calendar import TradingCalendar

log = logging.getLogger("CandleThrob.window")
# Without HISTORY_START or --start, a ticker never stored gets this much history.
DEFAULT_HISTORY_YEARS = 2


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
