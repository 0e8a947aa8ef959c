"""CandleThrob: a warehouse of daily OHLCV bars for the S&P 500 and 20 ETFs, with macro series beside them."""

__version__ = "0.1.0"

from CandleThrob.macro.read import join_macro, read_macro, read_macro_daily  # noqa: E402 - after __version__

__all__ = ["__version__", "read_bars", "read_macro", "read_macro_daily", "join_macro"]


def __getattr__(name: str) -> object:
    # Lazily, so that importing the package (as every ingest run does) does not load the read side.
    if name == "read_bars":
        from CandleThrob.read.bars import read_bars

        return read_bars
    raise AttributeError(f"module 'CandleThrob' has no attribute {name!r}")
