"""A bars frame (``read_bars``'s) as CSV, JSON or Parquet, losing nothing.

* CSV: a header, dates as YYYY-MM-DD, floats in Python's shortest round-trip
  form, empty cells for missing values.
* JSON: one array of objects, the same values (missing ones as null); floats as
  Python writes them, which read back to the same double (pandas' own writer
  keeps only 10 to 15 digits).
* Parquet: pyarrow with pandas' schema metadata, so ``pandas.read_parquet``
  gives back the very frame, dtypes included.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

import pandas as pd

from CandleThrob.errors import ReadRequestError


def write_text(frame: pd.DataFrame, fmt: str, stream: TextIO) -> None:
    if fmt == "csv":
        frame.to_csv(stream, index=False, date_format="%Y-%m-%d", lineterminator="\n")
    elif fmt == "json":
        json.dump(json_records(frame), stream, allow_nan=False)
        stream.write("\n")
    else:
        raise ReadRequestError(f"format {fmt!r} cannot go to a text stream; expected csv or json")


def write_file(frame: pd.DataFrame, fmt: str, path: Path) -> None:
    if fmt == "parquet":
        frame.to_parquet(path, index=False, engine="pyarrow")
        return
    with open(path, "w", encoding="utf-8", newline="") as stream:
        write_text(frame, fmt, stream)


def json_records(frame: pd.DataFrame) -> list[dict]:
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[column]):
            out[column] = out[column].dt.strftime("%Y-%m-%d")
    # object dtype first, so that a missing value can become None whatever the column's dtype
    out = out.astype(object).where(out.notna(), None)
    return out.to_dict("records")
