"""`candlethrob report`: one self-contained page, rendered by a real headless Chromium (Debian's package):
the browser decodes every chart, and its screenshot shows them."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from CandleThrob.read.charts import PRICE_COLOURS, STATE_COLOURS
from CandleThrob.testing.polygon_server import PolygonServer

from ingest_helpers import API_KEY, ingest
from read_helpers import build_warehouse, market, run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
NOW = dt.datetime(2024, 3, 22, 12, tzinfo=dt.timezone.utc)  # 08:00 New York: 2024-03-21 is final
WIDTH, HEIGHT = 1300, 3200


@pytest.fixture(scope="module")
def browser() -> str:
    if CHROMIUM is None:
        if os.environ.get("CANDLETHROB_REQUIRE_BROWSER"):
            pytest.fail("CANDLETHROB_REQUIRE_BROWSER is set but chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed")
    return CHROMIUM


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    """A report on a warehouse with a split and a dividend (AOS), and a bar of MMM refused by the quality gate
    and waiting for its retry (quarantined, the worst state of its month)."""
    folder = tmp_path_factory.mktemp("report")
    url = f"sqlite:///{folder / 'wh.db'}"
    data = market()
    build_warehouse(url, data)
    good = data.bars("MMM", "2024-03-21", "2024-03-21")
    data.add_bars(good.assign(high=good["low"] * 0.9))
    with PolygonServer(data, api_key=API_KEY) as server:
        ingest(url, server, "2024-03-21", max_cell_retries=0, min_data_quality_score=0.0)
    path = folder / "report.html"
    code, out, err = run_cli("report", "--output", str(path), "--ticker", "aos", "--database-url", url, now=NOW)
    assert (code, err) == (0, "") and out == f"wrote {path} ({path.stat().st_size / 1024:,.0f} KB)\n"
    return path


def headless(browser: str, profile, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=180)


def test_the_page_is_self_contained(page):
    text = page.read_text(encoding="utf-8")
    assert re.findall(r"""(?:src|href)\s*=\s*["']?(?!data:)([^"'\s>]+)""", text) == []  # nothing to fetch
    assert "<link" not in text and "<script src" not in text and "@import" not in text
    assert re.search(r'<body data-charts="4">', text)
    for heading in ("Coverage", "Run history", "Rejected bars by reason", "AOS"):
        assert f"<h2>{heading}</h2>" in text
    assert "<td>MMM</td><td>quarantined</td><td class=\"num\">1</td><td>2024-03</td>" in text
    assert "<td>split</td><td>2024-03-18</td><td>4-for-1</td>" in text
    assert "<td>dividend</td><td>2024-03-11</td><td>0.5 USD</td>" in text
    assert page.stat().st_size < 400_000


def test_chromium_decodes_every_chart(browser, page, tmp_path):
    done = headless(browser, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", page.as_uri())
    body = re.search(r"<body[^>]*>", done.stdout)
    assert body, done.stderr[-2000:]
    assert 'data-charts="4"' in body.group(0) and 'data-charts-rendered="4"' in body.group(0), body.group(0)


def test_chromium_screenshot_shows_the_charts(browser, page, tmp_path):
    shot = tmp_path / "report.png"
    done = headless(browser, tmp_path / "profile", f"--window-size={WIDTH},{HEIGHT}", f"--screenshot={shot}",
                    page.as_uri())
    assert shot.is_file(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    assert len(pixels) == WIDTH * HEIGHT
    assert (pixels.min(axis=1) < 250).mean() > 0.05  # not a blank page

    def count(colour: str) -> int:
        rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
        return int((np.abs(pixels - rgb).max(axis=1) <= 6).sum())

    # The coverage heatmap's complete months (green) fill most of its 1,100 × 450 pixels; its quarantined MMM
    # month and the rejected-bars chart's four bars are purple; the price chart draws three lines (the
    # total-return line runs close over the split-adjusted one, which shows where the dividend parts them).
    assert count(STATE_COLOURS[1]) > 200_000
    assert count(STATE_COLOURS[4]) > 40_000
    for colour in PRICE_COLOURS.values():
        assert count(colour) > 150, colour
