"""Test and demo helpers: a Polygon-compatible local server and generated data."""
