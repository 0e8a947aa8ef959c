"""The read side: bars out of the warehouse, a Parquet export, freshness, an HTML report.

A library core; ``CandleThrob.cli`` is a thin command line over it.
"""

# The choices the command line offers, kept here so that parsing arguments loads nothing heavy.
ADJUSTMENTS = ("split", "total", "none")
BAR_FORMATS = ("csv", "json", "parquet")
BINARY_FORMATS = ("parquet",)
