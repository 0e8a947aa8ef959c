"""The report's charts, drawn by matplotlib into PNG bytes.

Why matplotlib images: the page must open offline and stay small. A PNG of a
523 × 120 coverage grid in six flat colours compresses to tens of kilobytes,
and a chart's size does not grow with the number of points behind it; plotly's
offline mode would inline its 3.5 MB script into every page and ship every
data point as JSON. ``Figure`` is used directly (no pyplot), so nothing global
is touched and no display is needed.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from CandleThrob.read.coverage_map import STATES, CoverageMap

DPI = 100
# One colour per coverage state, in STATES order: white for nothing expected, green for
# complete, then warmer as the state needs more attention.
STATE_COLOURS = ("#ffffff", "#4caf50", "#ffd54f", "#ff9800", "#8e24aa", "#d32f2f")
EXIT_COLOURS = {0: "#4caf50", 1: "#ff9800"}  # any other exit code: red
FAILED_COLOUR = "#d32f2f"
PRICE_COLOURS = {"as traded": "#9e9e9e", "split-adjusted": "#1565c0", "total return": "#2e7d32"}
MAX_TICK_LABELS = 70


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()


def coverage_heatmap(grid: CoverageMap) -> bytes:
    rows, columns = grid.states.shape
    # Few tickers get readable rows; many get thin ones, so 523 tickers still fit a screen or two.
    figure = Figure(figsize=(12, 2.0 + max(rows * 0.022, min(rows, 60) * 0.16)))
    axes = figure.add_subplot()
    axes.imshow(grid.states, aspect="auto", interpolation="nearest", vmin=0, vmax=len(STATES) - 1,
                cmap=ListedColormap(STATE_COLOURS))
    _ticks(axes.set_yticks, axes.set_yticklabels, grid.tickers, fontsize=6 if rows > 60 else 8)
    months = [str(m) for m in grid.months]
    _ticks(axes.set_xticks, axes.set_xticklabels, months, fontsize=7, every=max(1, -(-columns // 24)))
    axes.tick_params(axis="x", labelrotation=90)
    axes.set_title(f"Coverage: {rows} tickers × {columns} months (each cell: the worst of its sessions)")
    figure.legend(handles=[Patch(facecolor=c, edgecolor="#777777", label=s) for s, c in zip(STATES, STATE_COLOURS)],
                  loc="upper center", ncol=len(STATES), bbox_to_anchor=(0.5, 0.0), frameon=False)
    return png(figure)


def run_history(runs: Sequence[dict]) -> bytes:
    """API calls, bars written and duration per run, oldest first, coloured by exit code."""
    runs = list(reversed(runs))
    figure = Figure(figsize=(12, 5.5))
    colours = [EXIT_COLOURS.get(r["exit_code"], FAILED_COLOUR) for r in runs]
    x = np.arange(len(runs))
    panels = (("api_calls", "API calls"), ("rows_written", "bars written"), ("seconds", "seconds"))
    for i, (key, label) in enumerate(panels):
        axes = figure.add_subplot(len(panels), 1, i + 1)
        axes.bar(x, [r[key] or 0 for r in runs], color=colours)
        axes.set_ylabel(label)
        axes.set_xticks([])
    labels = [f"{r['end_date'] or '-'}" for r in runs]
    _ticks(axes.set_xticks, axes.set_xticklabels, labels, fontsize=7, every=max(1, -(-len(runs) // 30)))
    axes.tick_params(axis="x", labelrotation=90)
    figure.axes[0].set_title("Runs, oldest to newest (by --end): green exit 0, orange exit 1, red otherwise")
    return png(figure)


def rejected_reasons(by_reason: dict) -> bytes:
    reasons = list(by_reason)[::-1]
    missing = [by_reason[r]["still_missing"] for r in reasons]
    fixed = [by_reason[r]["rejected"] - by_reason[r]["still_missing"] for r in reasons]
    figure = Figure(figsize=(10, 1.2 + 0.35 * len(reasons)))
    axes = figure.add_subplot()
    axes.barh(reasons, missing, color=STATE_COLOURS[4], label="still without a bar")
    axes.barh(reasons, fixed, left=missing, color=STATE_COLOURS[1], label="stored since")
    axes.set_xlabel("rejected bars")
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.25 - 0.6 / (1 + len(reasons))), ncol=2, frameon=False)
    axes.set_title("Rejected bars by reason")
    return png(figure)


def price_chart(ticker: str, closes: pd.DataFrame, splits: pd.DataFrame, dividends: pd.DataFrame) -> bytes:
    """Close as traded against split-adjusted and total return (``closes``: trade_date plus one column per
    series), with a dashed line per split and a triangle per ex-dividend date."""
    figure = Figure(figsize=(12, 5))
    axes = figure.add_subplot()
    for name, colour in PRICE_COLOURS.items():
        axes.plot(closes["trade_date"], closes[name], color=colour, linewidth=1.1, label=name)
    for day, split_from, split_to in splits[["execution_date", "split_from", "split_to"]].itertuples(index=False):
        axes.axvline(pd.Timestamp(day), color="#c62828", linestyle="--", linewidth=1)
        axes.annotate(f"split {split_to:g}:{split_from:g}", (pd.Timestamp(day), 1), xycoords=("data", "axes fraction"),
                      xytext=(3, -12), textcoords="offset points", color="#c62828", fontsize=8)
    ex_dates = pd.to_datetime(pd.Series(dividends["ex_dividend_date"], dtype="object"))
    if len(ex_dates):
        axes.plot(ex_dates, np.zeros(len(ex_dates)), linestyle="none", marker="^", color="#6a1b9a", markersize=7,
                  transform=axes.get_xaxis_transform(), clip_on=False, label="ex-dividend")
    axes.set_title(f"{ticker}: close as traded, split-adjusted and total return")
    axes.set_ylabel("close")
    axes.legend(loc="upper left")
    axes.grid(alpha=0.3)
    return png(figure)


def _ticks(set_ticks, set_labels, labels: list[str], fontsize: int, every: int = 0) -> None:  # noqa: ANN001
    """Label every ``every``-th position (default: as many as stay legible)."""
    every = every or max(1, -(-len(labels) // MAX_TICK_LABELS))
    positions = list(range(0, len(labels), every))
    set_ticks(positions)
    set_labels([labels[i] for i in positions], fontsize=fontsize)
