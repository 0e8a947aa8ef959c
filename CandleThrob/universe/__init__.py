"""Point-in-time S&P 500 universe: who was in the index on any date, under which symbol."""  # noqa: N999
