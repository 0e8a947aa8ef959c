"""FRED calls per night for the eleven default MACRO_SERIES, counted in the local FRED server's request log.

    python bench/bench_macro_calls.py [--nights-from 2026-06-01] [--nights-to 2026-06-30]

Serves the eleven default series (FEDFUNDS, CPIAUCSL, UNRATE, GDP, GS10, USREC,
UMCSENT, HOUST, RSAFS, INDPRO, M2SL) from the local FRED-compatible server with
generated values on release calendars close to the real ones (see ``SPECS``:
monthly or quarterly releases, some revising earlier observations at their next
releases), observations from 2000 on. CandleThrob runs ``--macro-only``
in-process into a temporary SQLite file: one cold run the day before the first
night, then one run per weekday night (the cron schedule), with the server's
"today" moved to that night. Prints figures; asserts nothing.

The figures assume FRED moves a series' ``last_updated`` only when it publishes
something for it; a series touched without a change costs one more call that night.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

# _common first: it puts the repository on sys.path
from _common import machine_line, markdown_table

from CandleThrob.config import DEFAULT_MACRO_SERIES, AdvancedBatchConfig
from CandleThrob.ingestion.pipeline import CompleteDataIngestion, RunOptions
from CandleThrob.testing.fred_server import FredData, FredServer, SeriesMeta

KEY = "bench0000000000000000000000000000"[:32]
FIRST_OBSERVATION = dt.date(2000, 1, 1)
Release = Callable[[dt.date], dt.date]  # observation period's first day -> its first release


def _month(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + day.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


def _weekday_near(day: dt.date) -> dt.date:
    return day + dt.timedelta(days={5: -1, 6: 1}.get(day.weekday(), 0))


def _first_business_day(month: dt.date) -> dt.date:
    day = month
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    return day


def _nth_weekday(month: dt.date, weekday: int, n: int) -> dt.date:
    first = month + dt.timedelta(days=(weekday - month.weekday()) % 7)
    return first + dt.timedelta(weeks=n - 1)


def _last_weekday(month: dt.date, weekday: int) -> dt.date:
    last = _month(month, 1) - dt.timedelta(days=1)
    return last - dt.timedelta(days=(last.weekday() - weekday) % 7)


def monthly(day: int) -> Release:
    return lambda period: _weekday_near(_month(period, 1).replace(day=day))


SPECS: dict[str, tuple[str, Release, int, int]] = {
    # series: (frequency, first release of a period, months between periods, later monthly releases
    # that revise it: the release of the same series k months on)
    "FEDFUNDS": ("Monthly", lambda p: _first_business_day(_month(p, 1)), 1, 0),
    "CPIAUCSL": ("Monthly", monthly(12), 1, 0),
    "UNRATE": ("Monthly", lambda p: _nth_weekday(_month(p, 1), 4, 1), 1, 0),
    "GDP": ("Quarterly", lambda p: _last_weekday(_month(p, 3), 3), 3, 2),  # advance, second, third estimate
    "GS10": ("Monthly", lambda p: _first_business_day(_month(p, 1)), 1, 0),
    "USREC": ("Monthly", lambda p: _first_business_day(_month(p, 1)), 1, 0),
    "UMCSENT": ("Monthly", lambda p: _first_business_day(_month(p, 2)), 1, 0),  # FRED posts it a month late
    "HOUST": ("Monthly", monthly(17), 1, 2),
    "RSAFS": ("Monthly", monthly(15), 1, 2),
    "INDPRO": ("Monthly", monthly(16), 1, 5),
    "M2SL": ("Monthly", lambda p: _nth_weekday(_month(p, 1), 1, 4), 1, 2),
}


def generate(until: dt.date, seed: int) -> FredData:
    """Every release of the eleven series up to ``until``: period P first on release(P), revised by the
    series' releases of the next ``revisions`` months (GDP: the second and third estimates)."""
    data = FredData()
    for series_id in DEFAULT_MACRO_SERIES:
        frequency, release, step, revisions = SPECS[series_id]
        data.add_series(series_id, SeriesMeta(series_id, "Units", "Units", frequency, frequency[0]))
        rng = random.Random(f"{seed}:{series_id}")
        level, period, periods = 100.0, FIRST_OBSERVATION, []
        while release(period) <= until:
            periods.append(period)
            period = _month(period, step)
        for period in periods:
            level *= 1 + rng.gauss(0.002, 0.004)
            for k in range(revisions + 1):
                released = release(_month(period, k))
                if released > until:
                    break
                data.publish(series_id, period, f"{level * (1 + rng.gauss(0, 0.001)):.3f}", released)
    return data


def run_night(server: FredServer, database_url: str, night: dt.date) -> dict:
    server.today = night
    config = AdvancedBatchConfig.from_env({}, database_url=database_url, fred_api_key=KEY,
                                          fred_base_url=server.url, retry_delay=0)
    now = dt.datetime.combine(night + dt.timedelta(days=1), dt.time(3), dt.timezone.utc)
    ingestion = CompleteDataIngestion(config, clock=lambda: now)
    try:
        return ingestion.run(RunOptions(macro_only=True))
    finally:
        ingestion.warehouse.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nights-from", type=dt.date.fromisoformat, default=dt.date(2026, 6, 1))
    parser.add_argument("--nights-to", type=dt.date.fromisoformat, default=dt.date(2026, 6, 30))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print(machine_line())
    began = time.perf_counter()
    data = generate(args.nights_to, args.seed)
    nights = [args.nights_from + dt.timedelta(days=d) for d in range((args.nights_to - args.nights_from).days + 1)]
    weekdays = [night for night in nights if night.weekday() < 5]
    rows = []
    with tempfile.TemporaryDirectory(prefix="candlethrob-bench-macro-") as tmp, \
            FredServer(data, api_key=KEY) as server:
        database_url = f"sqlite:///{Path(tmp) / 'warehouse.db'}"
        cold_night = args.nights_from - dt.timedelta(days=1)
        cold = run_night(server, database_url, cold_night)
        cold_calls = collections.Counter(r["path"] for r in server.requests)
        print(f"cold run ({cold_night}): {cold['status']}, {sum(cold_calls.values())} calls {dict(cold_calls)}, "
              f"{cold['macro']['vintages_added']} vintages stored")
        per_night = []
        for night in weekdays:
            mark = len(server.requests)
            result = run_night(server, database_url, night)
            asked = collections.Counter(r["path"] for r in server.requests[mark:])
            per_night.append(sum(asked.values()))
            updated = sorted(s for s, o in result["macro"]["outcomes"].items() if o["vintages_added"])
            rows.append([night.isoformat(), night.strftime("%a"), asked["/fred/series"],
                         asked["/fred/series/observations"], sum(asked.values()), ", ".join(updated) or "-"])
    print(f"\nweekday nights {weekdays[0]}..{weekdays[-1]} (fred/series + fred/series/observations):\n")
    print(markdown_table(["night", "day", "series", "observations", "calls", "series with a release"], rows))
    print(f"\ncold: {sum(cold_calls.values())} calls; nights: min {min(per_night)}, max {max(per_night)}, "
          f"mean {statistics.mean(per_night):.1f}, total {sum(per_night)} over {len(per_night)} weekday nights")
    print(f"total bench time {time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
