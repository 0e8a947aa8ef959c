"""The ticker universe: symbols, the S&P 500 constituents page, and which tickers a run keeps."""
