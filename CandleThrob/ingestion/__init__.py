"""Ingestion pipeline: universe -> coverage -> plan -> fetch -> validate -> store -> report."""
