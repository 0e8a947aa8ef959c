"""The ingestion run: the orchestrator, its state, and the stages only it drives."""
