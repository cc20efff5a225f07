"""Running statements on a DuckDB cursor: results read whole, datetimes converted at the edge.

DuckDB 2 refuses a statement on a connection while an earlier result is unread, so every
statement goes through ``run``. Tables store naive UTC timestamps; Python code holds aware
UTC datetimes, converted here in both directions.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from flowlens.collector.store.duckdb.schema import STATE_NAMES
from flowlens.collector.store.tiers import TierState

T = TypeVar("T")
Cursor = duckdb.DuckDBPyConnection


def run(cursor: Cursor, sql: str, params: list[Any] | None = None) -> list[tuple]:
    """Execute and read the whole result; datetime parameters may be aware."""
    if params is None:
        return cursor.execute(sql).fetchall()
    return cursor.execute(sql, [naive(p) if isinstance(p, datetime) else p for p in params]).fetchall()


def run_named(cursor: Cursor, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    """Like :func:`run`, each row as a dict by column name."""
    rows = run(cursor, sql, params)
    names = [column[0] for column in cursor.description or ()]
    return [dict(zip(names, row, strict=True)) for row in rows]


def with_table(cursor: Cursor, name: str, table: pa.Table, body: Callable[[], T]) -> T:
    """Run ``body`` with ``table`` visible to SQL as ``name`` on this cursor."""
    cursor.register(name, table)
    try:
        return body()
    finally:
        cursor.unregister(name)


def read_state(cursor: Cursor) -> TierState:
    values = dict(run(cursor, "SELECT name, value FROM store_state"))
    return TierState(**{name: aware(values.get(name)) for name in STATE_NAMES})


def write_state(cursor: Cursor, state: TierState) -> None:
    for name in STATE_NAMES:
        run(cursor, "UPDATE store_state SET value = ? WHERE name = ?", [getattr(state, name), name])


def naive(t: datetime | None) -> datetime | None:
    if t is None or t.tzinfo is None:
        return t
    return t.astimezone(UTC).replace(tzinfo=None)


def aware(t: datetime | None) -> datetime | None:
    return None if t is None else t.replace(tzinfo=UTC)
