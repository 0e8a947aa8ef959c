"""The ingest CLI as it would run if the source kept only the universe's bars of each
answer before converting it: the change proposed for ``source/polygon.py`` (see
bench/README.md), which this benchmark may not make, measured instead.

    python bench/_ingest_filtered.py UNIVERSE_FILE [ingest_data options]

UNIVERSE_FILE holds the run's tickers, one a line. ``bars_from_polygon`` as
``PolygonSource`` calls it gets ``tickers=`` those; everything else is the CLI.
"""

from __future__ import annotations

import functools
import runpy
import sys
from pathlib import Path

import CandleThrob.source.polygon as polygon

wanted = frozenset(Path(sys.argv[1]).read_text().split())
polygon.bars_from_polygon = functools.partial(polygon.bars_from_polygon, tickers=wanted)
sys.argv = ["ingest_data", *sys.argv[2:]]
runpy.run_module("CandleThrob.ingestion.ingest_data", run_name="__main__", alter_sys=True)
