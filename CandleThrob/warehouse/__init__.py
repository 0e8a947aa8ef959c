"""The warehouse: tables, engines, bulk writes, reads, and the run lock."""
