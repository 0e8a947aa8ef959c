"""Small FRED data sets whose every vintage the macro tests know by heart."""

from __future__ import annotations

import datetime as dt

from CandleThrob.testing.fred_server import FredData, SeriesMeta

KEY = "0123456789abcdef0123456789abcdef"
TODAY = dt.date(2024, 5, 20)
OPEN = dt.date(9999, 12, 31)

# (observation date, value, release date), in publication order per observation.
CPI_RELEASES = [
    ("2024-01-01", "308.417", "2024-02-13"), ("2024-01-01", "308.500", "2024-03-12"),
    ("2024-01-01", "308.611", "2024-04-10"),
    ("2024-02-01", "310.326", "2024-03-12"), ("2024-02-01", "310.100", "2024-04-10"),
    ("2024-02-01", "310.222", "2024-05-15"),
    ("2024-03-01", "312.332", "2024-04-10"), ("2024-03-01", "312.450", "2024-05-15"),
    ("2024-04-01", "313.548", "2024-05-15"),
]
# CPITEST's vintages: (observation date, realtime_start, realtime_end, value).
CPI_VINTAGES = [
    (dt.date(2024, 1, 1), dt.date(2024, 2, 13), dt.date(2024, 3, 11), 308.417),
    (dt.date(2024, 1, 1), dt.date(2024, 3, 12), dt.date(2024, 4, 9), 308.5),
    (dt.date(2024, 1, 1), dt.date(2024, 4, 10), OPEN, 308.611),
    (dt.date(2024, 2, 1), dt.date(2024, 3, 12), dt.date(2024, 4, 9), 310.326),
    (dt.date(2024, 2, 1), dt.date(2024, 4, 10), dt.date(2024, 5, 14), 310.1),
    (dt.date(2024, 2, 1), dt.date(2024, 5, 15), OPEN, 310.222),
    (dt.date(2024, 3, 1), dt.date(2024, 4, 10), dt.date(2024, 5, 14), 312.332),
    (dt.date(2024, 3, 1), dt.date(2024, 5, 15), OPEN, 312.45),
    (dt.date(2024, 4, 1), dt.date(2024, 5, 15), OPEN, 313.548),
]
DAILY_RELEASES = [("2024-05-13", "4.50", "2024-05-14"), ("2024-05-14", ".", "2024-05-15"),
                  ("2024-05-15", "4.52", "2024-05-16")]


def revised_data(cpi_releases: list[tuple[str, str, str]] = CPI_RELEASES) -> FredData:
    """CPITEST: monthly, each month revised twice (the latest ones not yet);
    DAILYTEST: a daily series with FRED's "." on 2024-05-14."""
    data = FredData()
    data.add_series("CPITEST", SeriesMeta("Test Consumer Prices", "Index 1982-1984=100", "Index", "Monthly", "M",
                                          "Seasonally Adjusted", "SA", "Test data."))
    data.add_series("DAILYTEST", SeriesMeta("Test Daily Yield", "Percent", "%", "Daily", "D"))
    for date, value, released in cpi_releases:
        data.publish("CPITEST", date, value, released)
    for date, value, released in DAILY_RELEASES:
        data.publish("DAILYTEST", date, value, released)
    return data
