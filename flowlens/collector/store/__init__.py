"""The flow store: the protocol every engine implements (``protocol``), the tiers that split a
time range between raw rows and rollups (``tiers``), and the engines, one folder each
(``duckdb/``, embedded, the default). Callers outside the store import from here only.
"""

from flowlens.collector.store.protocol import FlowStore, ReportBatch, Retention, StoreError, StoreStats

__all__ = ["FlowStore", "ReportBatch", "Retention", "StoreError", "StoreStats"]
