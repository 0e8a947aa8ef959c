"""CandleThrob schema migrations (Alembic)."""
