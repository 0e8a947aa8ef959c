"""What a run tells its operator: the report, the summary, progress and performance."""
