"""The embedded DuckDB engine of the flow store: schema, SQL text, reads, rollups, the store."""

from flowlens.collector.store.duckdb.store import DuckDBStore

__all__ = ["DuckDBStore"]
