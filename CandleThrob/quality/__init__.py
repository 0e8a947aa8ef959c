"""The quality gate: which fetched bars may be stored, and how good each ticker is."""
