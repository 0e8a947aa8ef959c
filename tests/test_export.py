"""`candlethrob export`: a Hive-partitioned Parquet dataset that DuckDB and pyarrow read back row for row,
rewritten only where the warehouse changed (new sessions, revisions, corporate actions)."""

from __future__ import annotations

import datetime as dt
import fcntl
import os

import duckdb
import pandas as pd
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from sqlalchemy import create_engine, text

import CandleThrob
from CandleThrob.read.bars import DTYPES
from CandleThrob.read.connect import load_config, open_warehouse
from CandleThrob.read.export import MANIFEST, export_parquet
from CandleThrob.testing.datagen import Dividend
from CandleThrob.testing.polygon_server import PolygonServer

from ingest_helpers import API_KEY, ingest
from read_helpers import build_warehouse, fresh_database, market, run_cli

LONG_AGO = 946684800  # 2000-01-01: a file still this old was not rewritten
LATER = dt.datetime(2024, 4, 1, tzinfo=dt.timezone.utc)  # after every write of these tests
ALL = "MMM,AOS,ABT,SPY,QQQ,DIA,IWM,VTI,TLT,GLD,XLF,XLE,XLK,XLV,ARKK,VXX,TQQQ,SQQQ,SOXL,XLI,XLY,XLP,SLV"


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse_url(request, tmp_path_factory):
    url = fresh_database(request, tmp_path_factory)
    build_warehouse(url)
    return url


def export(url: str, directory, adjust: str = "split", now: dt.datetime = LATER) -> str:
    code, out, err = run_cli("export", "--format", "parquet", "--output", str(directory), "--adjust", adjust,
                             "--database-url", url, now=now)
    assert (code, err) == (0, ""), err
    return out


def files(directory) -> dict[str, int]:
    return {str(p.relative_to(directory)): p.stat().st_mtime_ns for p in sorted(directory.rglob("*.parquet"))}


def age(directory) -> None:
    for path in directory.rglob("*.parquet"):
        os.utime(path, (LONG_AGO, LONG_AGO))


def rewritten(directory, before: dict[str, int]) -> list[str]:
    after = files(directory)
    return sorted(p.split("/")[0] for p in after if after[p] != before.get(p))


def _as_read_bars(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.drop(columns=["year"]).sort_values(["ticker", "trade_date"], ignore_index=True)
    frame["trade_date"] = pd.to_datetime(frame["trade_date"]).astype("datetime64[ns]")
    return frame.astype(DTYPES)


@pytest.mark.parametrize("adjust", ["split", "total", "none"])
def test_duckdb_and_pyarrow_read_back_exactly_what_read_bars_returns(warehouse_url, tmp_path, adjust):
    out = export(warehouse_url, tmp_path / "bars", adjust)
    assert out == (f"exported {adjust}-adjusted bars to {tmp_path / 'bars'}: 2 partitions written "
                   f"(2023, 2024; 2,208 rows), 0 unchanged, 0 removed\n")
    assert list(files(tmp_path / "bars")) == ["year=2023/bars.parquet", "year=2024/bars.parquet"]
    want = CandleThrob.read_bars(ALL, adjust=adjust, database_url=warehouse_url)
    assert len(want) == 2208
    glob = (tmp_path / "bars" / "**" / "*.parquet").as_posix()
    by_duckdb = duckdb.sql(f"SELECT * FROM read_parquet('{glob}', hive_partitioning = true)").df()
    assert (by_duckdb["year"] == pd.to_datetime(by_duckdb["trade_date"]).dt.year).all()
    assert duckdb.sql(f"SELECT typeof(trade_date) FROM read_parquet('{glob}') LIMIT 1").fetchall() == [("DATE",)]
    pd.testing.assert_frame_equal(_as_read_bars(by_duckdb), want, check_exact=True)
    by_pyarrow = ds.dataset(tmp_path / "bars", format="parquet", partitioning="hive").to_table().to_pandas()
    pd.testing.assert_frame_equal(_as_read_bars(by_pyarrow), want, check_exact=True)
    by_pandas = pd.read_parquet(tmp_path / "bars")  # the manifest (a name starting with _) is skipped
    assert len(by_pandas) == 2208


def test_a_second_export_rewrites_only_the_partitions_that_changed(warehouse_url, tmp_path):
    split, total = tmp_path / "split", tmp_path / "total"
    data = market()

    def step(expected_split: list[str], expected_total: list[str]) -> None:
        before = (files(split), files(total))
        export(warehouse_url, split, "split")
        export(warehouse_url, total, "total")
        assert (rewritten(split, before[0]), rewritten(total, before[1])) == (expected_split, expected_total)
        age(split)
        age(total)

    step(["year=2023", "year=2024"], ["year=2023", "year=2024"])  # the first export writes everything
    step([], [])  # nothing changed
    engine = create_engine(warehouse_url)  # the vendor revised one 2023 bar (written as an ingest would)
    with engine.begin() as conn:
        conn.execute(text("UPDATE ticker_data_raw SET high_price = high_price + 1, ingested_at = :at "
                          "WHERE ticker = 'SPY' AND trade_date = :day"),
                     {"at": dt.datetime(2024, 3, 22, 12), "day": dt.date(2023, 12, 1)})
    engine.dispose()
    step(["year=2023"], ["year=2023"])
    with PolygonServer(data, api_key=API_KEY) as server:
        ingest(warehouse_url, server, "2024-03-21")  # one new session
        step(["year=2024"], ["year=2024"])
        data.add_dividend(Dividend("MMM", dt.date(2024, 3, 22), 1.25))
        ingest(warehouse_url, server, "2024-03-22")  # a dividend: earlier total returns change, split prices do not
        step(["year=2024"], ["year=2023", "year=2024"])
        data.add_split("MMM", "2024-03-25", 1, 2)
        ingest(warehouse_url, server, "2024-03-25")  # a split: every earlier adjusted price changes
        step(["year=2023", "year=2024"], ["year=2023", "year=2024"])
    revised = pq.read_table(split / "year=2023" / "bars.parquet").to_pandas()
    day = revised[(revised["ticker"] == "SPY") & (revised["trade_date"] == dt.date(2023, 12, 1))]
    want = CandleThrob.read_bars("SPY", "2023-12-01", "2023-12-01", database_url=warehouse_url)
    assert day["high"].tolist() == want["high"].tolist()


def test_a_year_written_in_the_last_seconds_is_exported_again(tmp_path):
    """Stamps are whole seconds: a write in the same second as the export could go unseen, so such a year
    is not marked current."""
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    build_warehouse(url)  # the last run stamps its bars 2024-03-21 12:00:00 UTC
    just_after = dt.datetime(2024, 3, 21, 12, 0, 1, tzinfo=dt.timezone.utc)
    export(url, tmp_path / "bars", now=just_after)
    manifest = (tmp_path / "bars" / MANIFEST).read_text()
    assert '"2024": null' in manifest and '"2023": "' in manifest
    age(tmp_path / "bars")
    before = files(tmp_path / "bars")
    assert "1 partitions written (2024; 1,265 rows), 1 unchanged" in export(url, tmp_path / "bars")
    assert rewritten(tmp_path / "bars", before) == ["year=2024"]


def test_a_failed_write_leaves_the_old_file_whole_and_no_temporary_file(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    build_warehouse(url)
    export(url, tmp_path / "bars")
    old = (tmp_path / "bars" / "year=2024" / "bars.parquet").read_bytes()
    manifest = (tmp_path / "bars" / MANIFEST).read_text()

    def killed_mid_write(table, where, **kwargs):
        with open(where, "wb") as half:
            half.write(b"PAR1 half a file")
        raise KeyboardInterrupt  # as a Ctrl-C in the middle of writing would

    (tmp_path / "bars" / MANIFEST).write_text(manifest.replace('"2024": "', '"2024": "stale'))
    monkeypatch.setattr(pq, "write_table", killed_mid_write)
    warehouse = open_warehouse(load_config(url, {}))
    with pytest.raises(KeyboardInterrupt):
        export_parquet(warehouse, tmp_path / "bars")
    warehouse.dispose()
    assert (tmp_path / "bars" / "year=2024" / "bars.parquet").read_bytes() == old
    assert sorted(p.name for p in (tmp_path / "bars").rglob("*") if p.name.startswith(".") and "tmp" in p.name) == []


def test_removed_years_are_removed_and_one_export_per_directory_at_a_time(tmp_path):
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    build_warehouse(url)
    export(url, tmp_path / "bars")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM ticker_data_raw WHERE trade_date < '2024-01-01'"))
    engine.dispose()
    assert export(url, tmp_path / "bars").endswith("0 partitions written (none; 0 rows), 1 unchanged, 1 removed\n")
    assert not (tmp_path / "bars" / "year=2023").exists()
    with open(tmp_path / "bars" / ".candlethrob-export.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        code, _, err = run_cli("export", "--output", str(tmp_path / "bars"), "--database-url", url, now=LATER)
    assert code == 4 and err == f"candlethrob export: another export is writing {tmp_path / 'bars'}; wait for it " \
                                "to finish\n"
