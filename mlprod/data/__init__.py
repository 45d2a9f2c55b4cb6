"""Data: historical sources, read into DuckDB and checked against their contracts."""
