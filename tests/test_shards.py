"""--shard K/N: shards run at the same time and together equal one unsharded run."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib

import pandas as pd
import pytest

from CandleThrob.planning.shards import parse_shard, session_shard, shard_of
from CandleThrob.errors import ConfigError
from CandleThrob.testing.datagen import generate_market
from CandleThrob.testing.polygon_server import PolygonServer

from ingest_helpers import API_KEY, ROOT, data_calls, stored

SHARDS = 3


def _env(server, url):
    return {**{k: v for k, v in os.environ.items() if not k.startswith("POLYGON_")},
            "POLYGON_API_KEY": API_KEY, "POLYGON_BASE_URL": server.url, "DATABASE_URL": url,
            "SP500_URL": f"{server.url}/wiki/List_of_S%26P_500_companies", "POLYGON_RATE_LIMIT": "0",
            "MIN_SP500_SYMBOLS": "1", "PYTHONPATH": str(ROOT)}


def _run_shards(server, url, end) -> list[subprocess.CompletedProcess]:
    procs = [subprocess.Popen([sys.executable, "-m", "CandleThrob.ingestion.ingest_data", "--end", end,
                               "--shard", f"{k}/{SHARDS}", "--no-progress"], env=_env(server, url),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(1, SHARDS + 1)]
    return [(p, *p.communicate(timeout=180)) for p in procs]


def _unsharded(server, url, end):
    done = subprocess.run([sys.executable, "-m", "CandleThrob.ingestion.ingest_data", "--end", end,
                           "--no-progress"], env=_env(server, url), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr


def test_concurrent_shards_store_what_one_run_stores_with_no_more_calls(database_url, tmp_path):
    market = generate_market(16, "2023-01-03", "2024-03-28", seed=21)
    single = f"sqlite:///{tmp_path / 'single.db'}"
    with PolygonServer(market, api_key=API_KEY, today="2024-03-15") as server:
        _unsharded(server, single, "2024-03-15")
        one_run = len(data_calls(server))
        mark = len(server.requests)
        for proc, _out, err in _run_shards(server, database_url, "2024-03-15"):
            assert proc.returncode == 0, err
        assert len(data_calls(server, mark)) == one_run == 36  # one range call per ticker

        # Three new sessions: three grouped days, shared among the shards.
        server.today = "2024-03-20"
        mark = len(server.requests)
        _unsharded(server, single, "2024-03-20")
        one_run = len(data_calls(server, mark))
        mark = len(server.requests)
        for proc, _out, err in _run_shards(server, database_url, "2024-03-20"):
            assert proc.returncode == 0, err
        sharded = [c["path"] for c in data_calls(server, mark)]
    # three new sessions, and 03-15 once more (the settle window): four grouped days either way
    assert one_run == 4 and len(sharded) == 4 and all("/grouped/" in p for p in sharded)
    pd.testing.assert_frame_equal(stored(database_url), stored(single))


def test_shard_assignment_is_a_stable_hash_and_days_go_round():
    assert shard_of("AAPL", 4) == zlib.crc32(b"AAPL") % 4 + 1
    tickers = [f"T{i:03d}" for i in range(400)]
    before = {t: shard_of(t, 4) for t in tickers}
    after = {t: shard_of(t, 4) for t in tickers + ["NEW"]}
    assert all(before[t] == after[t] for t in tickers)  # a new member moves nobody
    days = pd.bdate_range("2024-03-04", "2024-03-08")
    assert [session_shard(d, 3) for d in days] == [(d.toordinal() % 3) + 1 for d in days]
    assert len({session_shard(d, 3) for d in days}) == 3


@pytest.mark.parametrize("text", ["0/3", "4/3", "a/b", "3", "1/0"])
def test_bad_shard_is_a_usage_error(text):
    with pytest.raises(ConfigError, match="expected K/N with 1 <= K <= N"):
        parse_shard(text)
