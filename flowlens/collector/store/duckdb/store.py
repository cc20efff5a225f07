"""The flow store on DuckDB: an embedded file (``:memory:`` for tests), safe from many threads.

Write path: a report's rows are hashed into flow-key ids inside DuckDB, keys never seen before
go to ``flow_keys``, and only times, the id and the counters go to ``flow_intervals`` (see
``schema``). The report id goes in with them, in the same transaction, so a retried
report is refused whole and a failed one leaves nothing behind. One writer at a time (DuckDB
has one per database anyway), and group commit: reports that arrive while a commit runs are
committed together by the next one, so concurrent ingest requests share the cost of a
transaction. The in-memory id set and the rollup watermarks change only under the writer lock
and only after a commit.

Read path: each thread gets its own cursor (a DuckDB connection to the same database) and
runs each query in one read transaction, so a query sees rollups and watermarks of the same
moment while ingest goes on.

Rollups: ``roll_up`` folds each closed minute of raw intervals into ``flows_1m`` and each
closed hour of those into ``flows_1h``, summed per flow key, and moves watermarks; rows that
arrive for an already rolled-up minute are added to the rollups by the append itself. Queries
read hours, minutes and raw edges as ``tiers.plan`` splits the range; the answer is the one
raw rows give (tests compare them).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowlens.collector.store import ReportBatch, Retention, StoreError, StoreStats
from flowlens.collector.store.duckdb import read as duckdb_read
from flowlens.collector.store.duckdb import rollup as duckdb_rollup
from flowlens.collector.store.duckdb.exec import Cursor, naive, read_state, run, with_table, write_state
from flowlens.collector.store.duckdb.idset import IdSet
from flowlens.collector.store.duckdb.schema import (
    COUNTERS,
    FLOW_STORE_SCHEMA,
    KEY_COLUMNS,
    NODE_STORE_SCHEMA,
    SCHEMA_VERSION,
    STATE_NAMES,
    ddl,
)
from flowlens.collector.store.duckdb.sql import lit
from flowlens.collector.store.tiers import EARLIEST, GRANULARITY, HOUR, MINUTE, TierState
from flowlens.model.queries import PER_FLOW, FlowFilter, FlowRow, MapLevel, ServiceMap, Subject, TimeSeries, TopBy, View
from flowlens.model.records import flow_ids

T = TypeVar("T")
log = logging.getLogger(__name__)
_GROUP_ROWS = 500_000  # a group commit stops taking queued reports past this many flow rows
_DB = "flowstore"
_ROW_GROUP = 16_384


class _Prepared(NamedTuple):
    report_id: str
    flows: pa.Table
    nodes: pa.Table
    first_time: datetime | None  # naive UTC: the earliest row start; with the id, the dedupe key


class _Ticket:
    """A caller's reports waiting in the group-commit queue, and their answers."""

    def __init__(self, reports: list[_Prepared]) -> None:
        self.reports = reports
        self.answers: list[bool] = []
        self.error: BaseException | None = None
        self.done = False

    def result(self) -> list[bool]:
        if self.error is not None:
            raise self.error
        return self.answers


class DuckDBStore:
    """``FlowStore`` on DuckDB. ``read_rollups=False`` answers every query from raw intervals
    (what rollups are checked against)."""

    def __init__(self, path: str | Path = ":memory:", retention: Retention | None = None, *,
                 threads: int | None = None, memory_limit: str | None = None, read_rollups: bool = True) -> None:
        # Rows need no order inside a table (every query groups or sorts), and without it DuckDB
        # inserts in parallel: ingest is ~2x faster on two cores.
        config: dict[str, Any] = {"preserve_insertion_order": False}
        if threads:
            config["threads"] = threads
        if memory_limit:
            config["memory_limit"] = memory_limit
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = duckdb.connect(":memory:", config=config)
        try:
            # Attached rather than opened, for the storage option: with row groups of 16 Ki rows
            # (instead of 120 Ki) a group commit of that many rows is written straight to the
            # file, compressed, instead of through the WAL, which costs about 1 µs a row.
            run(self._db, f"ATTACH {lit(str(path))} AS {_DB} (ROW_GROUP_SIZE {_ROW_GROUP})")
        except duckdb.Error as err:
            self._db.close()
            raise StoreError(f"cannot open the flow store {path}: {err}") from None
        self.path = str(path)
        self.retention = retention or Retention()
        self.read_rollups = read_rollups
        self.stats = StoreStats()
        self._lock = threading.Lock()  # one writer at a time
        self._queue_cond = threading.Condition()
        self._queue: list[_Ticket] = []
        self._leading = False  # a thread is committing queued reports
        self._cursors_lock = threading.Lock()
        self._local = threading.local()
        self._cursors: list[Cursor] = []
        self._closed = False
        self._writer = self._cursor()
        try:
            self._create()
            self._state = read_state(self._writer)
            self._ids = self._load_ids()
        except BaseException:
            self._writer.close()
            self._db.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------------

    def _create(self) -> None:
        w = self._writer
        for statement in ddl():
            run(w, statement)
        version = run(w, "SELECT value FROM store_meta WHERE key = 'schema_version'")
        if not version:
            run(w, "INSERT INTO store_meta VALUES ('schema_version', ?)", [SCHEMA_VERSION])
        elif version[0][0] != SCHEMA_VERSION:
            raise StoreError(f"{self.path} has store schema {version[0][0]}; this flowlens reads {SCHEMA_VERSION}")
        present = {name for (name,) in run(w, "SELECT name FROM store_state")}
        for name in STATE_NAMES:
            if name not in present:
                run(w, "INSERT INTO store_state VALUES (?, NULL)", [name])

    def _cursor(self) -> Cursor:
        cursor = self._db.cursor()
        run(cursor, f"USE {_DB}")
        return cursor

    def _load_ids(self) -> IdSet:
        return IdSet(self._writer.execute("SELECT flow_id FROM flow_keys").fetchnumpy()["flow_id"])

    def close(self) -> None:
        with self._lock, self._cursors_lock:
            if self._closed:
                return
            self._closed = True
            for cursor in [*self._cursors, self._writer]:
                cursor.close()
            self._db.close()

    def __enter__(self) -> DuckDBStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the flow store is closed")

    # -- write path --------------------------------------------------------------------------

    def append_report(self, report_id: str, flows: pa.Table, nodes: pa.Table | None = None) -> bool:
        return self.append_reports([ReportBatch(report_id, flows, nodes)])[0]

    def append_reports(self, reports: list[ReportBatch]) -> list[bool]:
        """Group commit: reports that queue up while a commit runs go into the next one together,
        so under concurrent ingest the cost of a transaction is shared by many reports; a lone
        report is committed at once."""
        ticket = _Ticket([_prepare(r) for r in reports])  # validation needs no lock
        with self._queue_cond:
            self._queue.append(ticket)
            while self._leading and not ticket.done:
                self._queue_cond.wait()
            if ticket.done:
                return ticket.result()
            self._leading = True  # this thread commits everything queued so far
            tickets = self._take_queued()
        try:
            with self._lock:
                self._check_open()
                answers = self._commit([p for t in tickets for p in t.reports])
            for t in tickets:
                t.answers, answers = answers[:len(t.reports)], answers[len(t.reports):]
        except BaseException as err:
            for t in tickets:
                t.error = err
            raise
        finally:
            with self._queue_cond:
                for t in tickets:
                    t.done = True
                self._leading = False
                self._queue_cond.notify_all()
        return ticket.result()

    def _take_queued(self) -> list[_Ticket]:
        tickets, rows = [], 0
        while self._queue and (not tickets or rows < _GROUP_ROWS):
            tickets.append(self._queue.pop(0))
            rows += sum(p.flows.num_rows for p in tickets[-1].reports)
        return tickets

    def _commit(self, prepared: list[_Prepared]) -> list[bool]:
        w = self._writer
        run(w, "BEGIN TRANSACTION")
        try:
            answers, accepted = self._admit(prepared)
            new_ids = self._insert(accepted)
            run(w, "COMMIT")
        except BaseException:
            run(w, "ROLLBACK")
            raise
        if new_ids is not None:
            self._ids.add(new_ids)  # only once committed: a rolled-back key must be inserted again
        self.stats.reports_stored += len(accepted)
        self.stats.flow_rows += sum(p.flows.num_rows for p in accepted)
        self.stats.node_rows += sum(p.nodes.num_rows for p in accepted)
        self.stats.new_flow_keys += 0 if new_ids is None else len(new_ids)
        return answers

    def _admit(self, prepared: list[_Prepared]) -> tuple[list[bool], list[_Prepared]]:
        """Record the ids of the reports not stored yet, in one statement for the whole group.
        The lookup joins on first_time too, which prunes the scan of ``reports`` to the row
        groups of those times (no index: millions of ids would cost memory for nothing)."""
        horizon = naive(self._state.raw_horizon)
        candidates: dict[tuple[str, datetime], _Prepared] = {}
        for p in prepared:
            if p.first_time is not None and (horizon is None or p.first_time >= horizon):
                candidates.setdefault((p.report_id, p.first_time), p)
        fresh = self._record_ids(candidates)
        answers, accepted = [], []
        for p in prepared:
            key = (p.report_id, p.first_time)
            if p.first_time is None:  # nothing to store, so nothing to count twice
                answers.append(True)
            elif key in fresh:
                fresh.discard(key)  # a second copy in the same group is a duplicate
                accepted.append(p)
                answers.append(True)
            else:
                expired = horizon is not None and p.first_time < horizon
                self.stats.reports_expired += expired
                self.stats.reports_duplicate += not expired
                answers.append(False)
        return answers, accepted

    def _record_ids(self, candidates: dict[tuple[str, datetime], _Prepared]) -> set[tuple[str, datetime]]:
        """Insert the (id, first_time) keys not in ``reports`` yet; returns those inserted."""
        w = self._writer
        new = ("WHERE NOT EXISTS (SELECT 1 FROM reports r WHERE r.first_time = c.first_time "
               "AND r.report_id = c.report_id) RETURNING report_id, first_time")
        if len(candidates) == 1:  # the usual case without concurrency: cheaper without an Arrow table
            ((report_id, first_time), p), = candidates.items()
            return set(run(w, f"INSERT INTO reports SELECT * FROM (SELECT ? AS report_id, ? AS first_time, ?, ?) c "
                               f"{new}", [report_id, first_time, p.flows.num_rows, p.nodes.num_rows]))
        table = pa.table({"report_id": [k[0] for k in candidates],
                          "first_time": pa.array([k[1] for k in candidates], pa.timestamp("ms")),
                          "flow_rows": pa.array([p.flows.num_rows for p in candidates.values()], pa.int32()),
                          "node_rows": pa.array([p.nodes.num_rows for p in candidates.values()], pa.int32())})
        sql = f"INSERT INTO reports SELECT * FROM _reports c {new}"
        return set(with_table(w, "_reports", table, lambda: run(w, sql)))

    def _insert(self, accepted: list[_Prepared]) -> np.ndarray | None:
        if not accepted:
            return None
        w = self._writer
        flows = pa.concat_tables([p.flows for p in accepted])
        nodes = pa.concat_tables([p.nodes for p in accepted])
        new_ids = with_table(w, "_batch", flows, lambda: self._insert_flows(flows)) if flows.num_rows else None
        if nodes.num_rows:
            with_table(w, "_nodes", nodes, lambda: self._insert_nodes(nodes))
        return new_ids

    def _insert_flows(self, flows: pa.Table) -> np.ndarray | None:
        """Counters go in under their flow id (enrichment computed it); ids never seen before
        have their key columns stored once (rare once a flow has been seen)."""
        w = self._writer
        run(w, f"INSERT INTO flow_intervals SELECT time_start, time_end, flow_id, {', '.join(COUNTERS)} FROM _batch")
        ids = flows["flow_id"].to_numpy()
        missing = self._ids.missing(ids)
        new_ids = np.unique(ids[missing]) if missing.any() else None
        if new_ids is not None:
            keys = ", ".join(KEY_COLUMNS)
            run(w, f"INSERT INTO flow_keys (flow_id, first_seen, {keys}) "
                    f"SELECT DISTINCT ON (flow_id) flow_id, time_start, {keys} FROM _batch "
                    "WHERE flow_id IN (SELECT unnest(?::UBIGINT[])) ORDER BY flow_id, time_start", [new_ids.tolist()])
        late, bounds = duckdb_rollup.late_bounds(self._state, flows)
        self.stats.late_rows += late
        source = f"(SELECT time_start, flow_id, {', '.join(COUNTERS)} FROM _batch)"
        for unit, until in bounds:
            run(w, duckdb_rollup.flow_rollup_sql(unit, source, "time_start", raw=True), [EARLIEST, until])
        return new_ids

    def _insert_nodes(self, nodes: pa.Table) -> None:
        w = self._writer
        run(w, f"INSERT INTO node_intervals SELECT {', '.join(NODE_STORE_SCHEMA.names)} FROM _nodes")
        for unit, until in duckdb_rollup.late_bounds(self._state, nodes)[1]:
            run(w, duckdb_rollup.node_rollup_sql(unit, "_nodes", "time_start", raw=True), [EARLIEST, until])

    # -- rollups and retention ---------------------------------------------------------------

    def roll_up(self, now: datetime | float | None = None) -> None:
        self._maintain(_when(now), retention=False)

    def apply_retention(self, now: datetime | float | None = None) -> None:
        """Roll up first, so that nothing is deleted before the next tier has it."""
        self._maintain(_when(now), retention=True)

    def _maintain(self, now: datetime, retention: bool) -> None:
        with self._lock:
            self._check_open()
            w = self._writer
            run(w, "BEGIN TRANSACTION")
            try:
                state = duckdb_rollup.roll_up(w, self._state, now, self.retention.rollup_delay)
                keys_dropped = False
                if retention:
                    state, keys_dropped = duckdb_rollup.expire(w, state, now, self.retention)
                write_state(w, state)
                run(w, "COMMIT")
            except duckdb.Error as err:
                run(w, "ROLLBACK")
                log.warning("store maintenance failed as a whole (%s): going on one bucket at a time", err)
                self.stats.maintenance_failures += 1
                state, keys_dropped = self._maintain_stepwise(now, retention)
            except BaseException:
                run(w, "ROLLBACK")
                raise
            self._state = state
            if keys_dropped:
                self._ids = self._load_ids()

    def _maintain_stepwise(self, now: datetime, retention: bool) -> tuple[TierState, bool]:
        """Each bucket in its own transaction; one that fails is logged, counted and skipped
        (its raw rows stay until retention), so one bad row never stops the rest."""
        w, state = self._writer, self._state
        for unit in (MINUTE, HOUR):
            target = duckdb_rollup.targets(state, now, self.retention.rollup_delay)[unit]
            bucket = duckdb_rollup.watermark(state, unit) or duckdb_rollup.first_watermark(w, unit, target)
            while bucket < target:
                folded = self._step(lambda s=state, u=unit, b=bucket: (duckdb_rollup.fold_one(w, s, u, b), False),
                                    f"the {unit} rollup of {bucket:%Y-%m-%d %H:%M} UTC")
                if folded is None:
                    folded = self._step(lambda s=state, u=unit, b=bucket: (duckdb_rollup.skip_one(s, u, b), False),
                                        "moving past it")
                state = folded[0] if folded is not None else state
                bucket += GRANULARITY[unit]
        if not retention:
            return state, False
        expired = self._step(lambda: duckdb_rollup.expire(w, state, now, self.retention), "retention")
        return expired if expired is not None else (state, False)

    def _step(self, step: Callable[[], tuple[TierState, bool]], what: str) -> tuple[TierState, bool] | None:
        """Run one maintenance step and store the tier state it returns, in one transaction;
        None (logged, counted) when it fails."""
        w = self._writer
        run(w, "BEGIN TRANSACTION")
        try:
            state, keys_dropped = step()
            write_state(w, state)
            run(w, "COMMIT")
            return state, keys_dropped
        except duckdb.Error as err:
            run(w, "ROLLBACK")
            self.stats.maintenance_failures += 1
            log.warning("store maintenance: %s failed and is skipped: %s", what, err)
            return None

    # -- read path ---------------------------------------------------------------------------

    def _reader(self) -> Cursor:
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            with self._cursors_lock:
                self._check_open()
                cursor = self._cursor()
                self._cursors.append(cursor)
            self._local.cursor = cursor
        return cursor

    def _read(self, query: Callable[[Cursor, TierState], T]) -> T:
        """One read transaction: the tier state and the tables it describes are of one moment."""
        self._check_open()
        cursor = self._reader()
        run(cursor, "BEGIN TRANSACTION")
        try:
            return query(cursor, read_state(cursor))
        finally:
            run(cursor, "ROLLBACK")

    def service_map(self, flt: FlowFilter, level: MapLevel = MapLevel.WORKLOAD) -> ServiceMap:
        return self._read(lambda cur, state: duckdb_read.service_map(cur, state, flt, MapLevel(level),
                                                                     self.read_rollups))

    def flow_table(self, flt: FlowFilter, view: View | None = None, by: TopBy = TopBy.BYTES,
                   limit: int = 100, keep: frozenset[str] = PER_FLOW) -> list[FlowRow]:
        return self._read(lambda cur, state: duckdb_read.flow_table(cur, state, flt, view, by, limit,
                                                                    self.read_rollups, keep))

    def timeseries(self, flt: FlowFilter, subject: Subject, step: timedelta) -> TimeSeries:
        return self._read(lambda cur, state: duckdb_read.timeseries(cur, state, flt, subject, step,
                                                                    self.read_rollups))

    # -- inspection --------------------------------------------------------------------------

    def table_rows(self) -> dict[str, int]:
        """Rows per table (for operators, benchmarks and tests)."""
        tables = ("reports", "flow_keys", "flow_intervals", "flows_1m", "flows_1h", "node_intervals", "nodes_1m",
                  "nodes_1h")
        return self._read(lambda cur, _: {t: run(cur, f"SELECT count(*) FROM {t}")[0][0] for t in tables})

    def tier_state(self) -> TierState:
        return self._read(lambda _, state: state)


def _prepare(report: ReportBatch) -> _Prepared:
    flows = _conform(report.flows, FLOW_STORE_SCHEMA, "flow", report.report_id)
    given = report.flows is not None and "flow_id" in report.flows.column_names
    ids = report.flows["flow_id"].cast(pa.uint64()) if given else flow_ids(flows)  # type: ignore[index]
    flows = flows.append_column("flow_id", ids)
    nodes = _conform(report.nodes, NODE_STORE_SCHEMA, "node", report.report_id)
    starts = [m for m in (pc.min(flows["time_start"]).as_py(), pc.min(nodes["time_start"]).as_py()) if m is not None]
    return _Prepared(str(report.report_id), flows, nodes, min(starts) if starts else None)


def _conform(table: pa.Table | None, schema: pa.Schema, what: str, report_id: str) -> pa.Table:
    if table is None:
        return schema.empty_table()
    present = set(table.column_names)
    missing = [name for name in schema.names if name not in present]
    if missing:
        raise StoreError(f"report {report_id}: {what} rows lack columns {', '.join(missing)}")
    try:
        table = table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as err:
        raise StoreError(f"report {report_id}: {what} rows do not fit the stored schema: {err}") from None
    for name in ("time_start", "time_end"):
        if table[name].null_count:
            raise StoreError(f"report {report_id}: {what} rows have no {name}")
    return table


def _when(now: datetime | float | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if isinstance(now, int | float):
        return datetime.fromtimestamp(now, UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC)
