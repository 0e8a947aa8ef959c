"""The warehouse as a Hive-partitioned Parquet dataset, rewritten only where it changed.

    DIR/year=2024/bars.parquet      one file per year, sorted by ticker and date
    DIR/_candlethrob_export.json    what each file was written from (its year's digest)

DuckDB (``read_parquet('DIR/**/*.parquet', hive_partitioning = true)``), polars
(``scan_parquet('DIR/**/*.parquet', hive_partitioning=True)``), pyarrow
(``dataset('DIR', partitioning='hive')``) and pandas (``read_parquet('DIR')``)
read it directly; they skip names starting with ``_`` or ``.``, so the
manifest and a file being written stay out of the data.

A year is read and written at a time, so memory holds one year whatever the
warehouse's length. Each file is replaced whole (temporary name, then rename)
and the manifest is updated after each, so a killed export leaves complete
files and a manifest that says which of them are current.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from CandleThrob.clock import Clock
from CandleThrob.errors import LockHeldError
from CandleThrob.read import files
from CandleThrob.read.bars import BarsRequest, bars_frame, check_adjust
from CandleThrob.read.partitions import YearSummary, year_summaries
from CandleThrob.warehouse.storage import Warehouse

# Bumped when the files' layout or schema changes: every partition is then rewritten.
FORMAT_VERSION = 1
MANIFEST = "_candlethrob_export.json"
FILE_NAME = "bars.parquet"
SCHEMA = pa.schema([
    ("ticker", pa.string()), ("trade_date", pa.date32()),
    ("open", pa.float64()), ("high", pa.float64()), ("low", pa.float64()), ("close", pa.float64()),
    ("volume", pa.float64()), ("vwap", pa.float64()), ("transactions", pa.int64()),
])


@dataclass
class ExportResult:
    directory: Path
    adjust: str
    written: list[int] = field(default_factory=list)
    unchanged: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    rows_written: int = 0

    def summary(self) -> str:
        years = ", ".join(str(y) for y in self.written) or "none"
        return (f"exported {self.adjust}-adjusted bars to {self.directory}: {len(self.written)} partitions "
                f"written ({years}; {self.rows_written:,} rows), {len(self.unchanged)} unchanged, "
                f"{len(self.removed)} removed")


def export_parquet(warehouse: Warehouse, directory: Path, adjust: str = "split",
                   clock: Optional[Clock] = None) -> ExportResult:
    adjust = check_adjust(adjust)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    result = ExportResult(directory, adjust)
    with _exclusive(directory):
        now = (clock or warehouse.clock).utcnow()
        summaries = year_summaries(warehouse, adjust)
        manifest = Manifest.load(directory, adjust)
        for year, summary in sorted(summaries.items()):
            if manifest.digests.get(year) == summary.digest and partition_path(directory, year).is_file():
                result.unchanged.append(year)
                continue
            result.rows_written += _write_year(warehouse, directory, adjust, summary)
            manifest.digests[year] = summary.digest if summary.settled(now) else None
            manifest.save()
            result.written.append(year)
        for year in sorted(set(manifest.digests) - set(summaries)):
            _remove_year(directory, year)
            del manifest.digests[year]
            manifest.save()
            result.removed.append(year)
    return result


def partition_path(directory: Path, year: int) -> Path:
    return directory / f"year={year}" / FILE_NAME


def arrow_table(frame: pd.DataFrame) -> pa.Table:
    """A ``read_bars`` frame as the export's schema (the session date as a Parquet DATE)."""
    arrays = [pa.array(frame["ticker"], pa.string()),
              pa.array(frame["trade_date"].to_numpy().astype("datetime64[D]"), pa.date32())]
    arrays += [pa.array(frame[name], field_.type) for name, field_ in zip(SCHEMA.names[2:], list(SCHEMA)[2:])]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def _write_year(warehouse: Warehouse, directory: Path, adjust: str, summary: YearSummary) -> int:
    request = BarsRequest(tuple(summary.tickers), dt.date(summary.year, 1, 1), dt.date(summary.year, 12, 31),
                          adjust)
    table = arrow_table(bars_frame(warehouse, request))
    path = partition_path(directory, summary.year)
    path.parent.mkdir(parents=True, exist_ok=True)
    with files.replaced(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return table.num_rows


def _remove_year(directory: Path, year: int) -> None:
    path = partition_path(directory, year)
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # something else lives there: leave the folder
        path.parent.rmdir()


@contextlib.contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """One export per directory at a time: two would race on the manifest."""
    with open(directory / ".candlethrob-export.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeldError(f"another export is writing {directory}; wait for it to finish") from None
        yield


@dataclass
class Manifest:
    """Which digest each partition file was written from; another adjustment or format means none."""

    directory: Path
    adjust: str
    digests: dict[int, Optional[str]]

    @classmethod
    def load(cls, directory: Path, adjust: str) -> "Manifest":
        try:
            data = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
            years = {int(y): d for y, d in data["partitions"].items()}
            same = data.get("format") == FORMAT_VERSION and data.get("adjust") == adjust
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            years, same = {}, True
        # Years of another export are still ours to replace or remove, but none is current.
        return cls(directory, adjust, years if same else dict.fromkeys(years))

    def save(self) -> None:
        data = {"format": FORMAT_VERSION, "adjust": self.adjust,
                "partitions": {str(y): d for y, d in sorted(self.digests.items())}}
        with files.replaced(self.directory / MANIFEST) as tmp:
            tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
