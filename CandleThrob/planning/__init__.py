"""Planning: the NYSE calendar, coverage (what was asked), the fewest calls, shards."""
