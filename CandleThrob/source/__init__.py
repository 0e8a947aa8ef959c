"""The data source: Polygon/Massive through the official client, one rate limiter, one retry policy."""
