"""Macro series from FRED, kept point in time: every ALFRED vintage with its real-time period."""  # noqa: N999 (the package is CandleThrob)
