"""CandleThrob: a warehouse of daily OHLCV bars for the S&P 500 and 20 ETFs."""

__version__ = "0.1.0"
