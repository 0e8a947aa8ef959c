"""--shard K/N: which tickers and which grouped days a shard takes."""

from __future__ import annotations

import zlib

import pandas as pd

from .errors import ConfigError


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
