"""--shard K/N: which tickers and which grouped days a shard takes."""

from __future__ import annotations

import zlib

import pandas as pd

from CandleThrob.errors import ConfigError
from CandleThrob.planning.planner import Plan


def shard_of(ticker: str, shards: int) -> int:
    """1-based shard of a ticker: a stable hash, so membership changes move few tickers."""
    return zlib.crc32(ticker.encode("utf-8")) % shards + 1


def session_shard(session: pd.Timestamp, shards: int) -> int:
    """1-based shard that fetches a grouped day."""
    return session.toordinal() % shards + 1


def parse_shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {text!r} is not allowed: expected K/N with 1 <= K <= N, e.g. 2/4") from None
    if not 1 <= k <= n:
        raise ConfigError(f"--shard {text!r} is not allowed: expected K/N with 1 <= K <= N, e.g. 2/4")
    return k, n


def share_of(plan: Plan, shard: tuple[int, int], mine: set[str]) -> Plan:
    """A shard's part of the global plan: its tickers' range calls and the
    grouped days it owns, so N shards together make the calls of one run.
    A day's owner depends on the date alone (consecutive sessions go round
    the shards), never on the plan: shards that start a little apart and so
    see slightly different coverage still agree on who fetches which day."""
    k, n = shard
    grouped = [call for call in plan.grouped if session_shard(call.session, n) == k]
    ranges = [call for call in plan.ranges if call.ticker in mine]
    return Plan(grouped=grouped, ranges=ranges, missing_cells=plan.missing_cells, sessions=plan.sessions)
