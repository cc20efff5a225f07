"""The flow store on DuckDB: an embedded file (``:memory:`` for tests), safe from many threads.

Write path: a report's rows are hashed into flow-key ids inside DuckDB, keys never seen before
go to ``flow_keys``, and only times, the id and the counters go to ``flow_intervals`` (see
``duckdb_schema``). The report id goes in with them, in the same transaction, so a retried
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

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from flowlens.analysis.predicates import Eq, Pred, all_of
from flowlens.analysis.views import filter_predicate, view_predicate
from flowlens.collector import duckdb_sql as q
from flowlens.collector.duckdb_schema import (
    COUNTERS,
    FLOW_STORE_SCHEMA,
    KEY_COLUMNS,
    NODE_COUNTERS,
    NODE_KEY_COLUMNS,
    NODE_STORE_SCHEMA,
    RAW_RTT_MAX,
    SCHEMA_VERSION,
    STATE_NAMES,
    SUMMED,
    ddl,
)
from flowlens.collector.idset import IdSet
from flowlens.collector.store import ReportBatch, Retention, StoreError, StoreStats
from flowlens.collector.tiers import EARLIEST, GRANULARITY, LATEST, Piece, TierState, floor, plan, step_for
from flowlens.model.queries import (
    Allowance,
    Edge,
    EdgeSubject,
    Endpoint,
    FlowFilter,
    FlowRow,
    MapLevel,
    MapNode,
    NodeKind,
    NodeSubject,
    PodSubject,
    ServiceMap,
    Subject,
    TimePoint,
    TimeSeries,
    TopBy,
    View,
)

T = TypeVar("T")
MAX_POINTS = 100_000
_GROUP_ROWS = 500_000  # a group commit stops taking queued reports past this many flow rows
_BIG_BATCH = 20_000  # rows: from here on, hash first and insert numbers (see _insert_flows)
_DB = "flowstore"
_ROW_GROUP = 16_384
_HASH = f"hash({', '.join(KEY_COLUMNS)})"
_ROLLUPS = {("flows", "minute"): "flows_1m", ("flows", "hour"): "flows_1h", ("nodes", "minute"): "nodes_1m",
            ("nodes", "hour"): "nodes_1h"}
MAX_LIMIT = 100_000


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
        try:
            self._db = duckdb.connect(":memory:", config=config)
            # Attached rather than opened, for the storage option: with row groups of 16 Ki rows
            # (instead of 120 Ki) a group commit of that many rows is written straight to the
            # file, compressed, instead of through the WAL, which costs about 1 µs a row.
            _run(self._db, f"ATTACH {q.lit(str(path))} AS {_DB} (ROW_GROUP_SIZE {_ROW_GROUP})")
            _run(self._db, f"USE {_DB}")
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
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._closed = False
        self._writer = self._cursor()
        try:
            self._create()
            self._state = _read_state(self._writer)
            self._ids = self._load_ids()
        except BaseException:
            self._writer.close()
            self._db.close()
            raise

    # -- lifecycle ---------------------------------------------------------------------------

    def _create(self) -> None:
        w = self._writer
        for statement in ddl():
            _run(w, statement)
        version = _run(w, "SELECT value FROM store_meta WHERE key = 'schema_version'")
        if not version:
            _run(w, "INSERT INTO store_meta VALUES ('schema_version', ?)", [SCHEMA_VERSION])
        elif version[0][0] != SCHEMA_VERSION:
            raise StoreError(f"{self.path} has store schema {version[0][0]}; this flowlens reads {SCHEMA_VERSION}")
        present = {name for (name,) in _run(w, "SELECT name FROM store_state")}
        for name in STATE_NAMES:
            if name not in present:
                _run(w, "INSERT INTO store_state VALUES (?, NULL)", [name])

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor = self._db.cursor()
        _run(cursor, f"USE {_DB}")
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
        _run(w, "BEGIN TRANSACTION")
        try:
            answers, accepted = self._admit(prepared)
            new_ids = self._insert(accepted)
            _run(w, "COMMIT")
        except BaseException:
            _run(w, "ROLLBACK")
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
        horizon = _naive(self._state.raw_horizon)
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
            return set(_run(w, f"INSERT INTO reports SELECT * FROM (SELECT ? AS report_id, ? AS first_time, ?, ?) c "
                               f"{new}", [report_id, first_time, p.flows.num_rows, p.nodes.num_rows]))
        table = pa.table({"report_id": [k[0] for k in candidates],
                          "first_time": pa.array([k[1] for k in candidates], pa.timestamp("ms")),
                          "flow_rows": pa.array([p.flows.num_rows for p in candidates.values()], pa.int32()),
                          "node_rows": pa.array([p.nodes.num_rows for p in candidates.values()], pa.int32())})
        return set(_with(w, "_reports", table, lambda: _run(w, f"INSERT INTO reports SELECT * FROM _reports c {new}")))

    def _insert(self, accepted: list[_Prepared]) -> np.ndarray | None:
        if not accepted:
            return None
        w = self._writer
        flows = pa.concat_tables([p.flows for p in accepted])
        nodes = pa.concat_tables([p.nodes for p in accepted])
        new_ids = _with(w, "_batch", flows, lambda: self._insert_flows(flows)) if flows.num_rows else None
        if nodes.num_rows:
            _with(w, "_nodes", nodes, lambda: self._insert_nodes(nodes))
        return new_ids

    def _insert_flows(self, flows: pa.Table) -> np.ndarray | None:
        """Counters go in under the hash of the key columns; the ids come back, and those never
        seen before have their key columns stored once (rare once a flow has been seen)."""
        w = self._writer
        facts = f"SELECT time_start, time_end, {_HASH} AS flow_id, {', '.join(COUNTERS)} FROM _batch"
        if flows.num_rows < _BIG_BATCH:
            ids = w.execute(f"INSERT INTO flow_intervals {facts} RETURNING flow_id").fetchnumpy()["flow_id"]
        else:
            # RETURNING makes the insert single-threaded; for big batches hashing in a parallel
            # query first and inserting plain numbers is faster.
            table = w.sql(facts).to_arrow_table()
            _with(w, "_facts", table, lambda: _run(w, "INSERT INTO flow_intervals SELECT * FROM _facts"))
            ids = table["flow_id"].to_numpy()
        ids = np.asarray(ids, np.uint64)
        missing = self._ids.missing(ids)
        new_ids = np.unique(ids[missing]) if missing.any() else None
        if new_ids is not None:
            keys = ", ".join(KEY_COLUMNS)
            _run(w, f"INSERT INTO flow_keys (flow_id, first_seen, {keys}) "
                    f"SELECT DISTINCT ON (flow_id) flow_id, time_start, {keys} FROM "
                    f"(SELECT {_HASH} AS flow_id, * FROM _batch) WHERE flow_id IN (SELECT unnest(?::UBIGINT[])) "
                    "ORDER BY flow_id, time_start", [new_ids.tolist()])
        late, bounds = self._late(flows)
        self.stats.late_rows += late
        source = f"(SELECT time_start, {_HASH} AS flow_id, {', '.join(COUNTERS)} FROM _batch)"
        for unit, until in bounds:
            _run(w, _flow_rollup(_ROLLUPS["flows", unit], source, "time_start", unit, raw=True),
                 [_naive(EARLIEST), until])
        return new_ids

    def _insert_nodes(self, nodes: pa.Table) -> None:
        w = self._writer
        _run(w, f"INSERT INTO node_intervals SELECT {', '.join(NODE_STORE_SCHEMA.names)} FROM _nodes")
        for unit, until in self._late(nodes)[1]:
            _run(w, _node_rollup(_ROLLUPS["nodes", unit], "_nodes", "time_start", unit, raw=True),
                 [_naive(EARLIEST), until])

    def _late(self, table: pa.Table) -> tuple[int, list[tuple[str, datetime]]]:
        """Rows older than a watermark belong to buckets already rolled up: they are added to
        those rollups too. Returns (late rows, [(unit, watermark)])."""
        minute, hour = _naive(self._state.minute_watermark), _naive(self._state.hour_watermark)
        oldest = pc.min(table["time_start"]).as_py()
        if minute is None or oldest >= minute:
            return 0, []
        late = pc.sum(pc.less(table["time_start"], pa.scalar(minute, pa.timestamp("ms")))).as_py()
        bounds = [("minute", minute)]
        if hour is not None and oldest < hour:
            bounds.append(("hour", hour))
        return late, bounds

    # -- rollups and retention ---------------------------------------------------------------

    def roll_up(self, now: datetime | float | None = None) -> None:
        self._maintain(_when(now), retention=False)

    def apply_retention(self, now: datetime | float | None = None) -> None:
        self._maintain(_when(now), retention=True)

    def _maintain(self, now: datetime, retention: bool) -> None:
        with self._lock:
            self._check_open()
            w = self._writer
            _run(w, "BEGIN TRANSACTION")
            try:
                state = self._roll_up(now)
                gc = False
                if retention:
                    state, gc = self._expire(now, state)
                for name in STATE_NAMES:
                    _run(w, "UPDATE store_state SET value = ? WHERE name = ?", [_naive(getattr(state, name)), name])
                _run(w, "COMMIT")
            except BaseException:
                _run(w, "ROLLBACK")
                raise
            self._state = state
            if gc:
                self._ids = self._load_ids()

    def _roll_up(self, now: datetime) -> TierState:
        s = self._state
        target = floor(now - self.retention.rollup_delay, GRANULARITY["minute"])
        minute = self._fold("minute", s.minute_watermark, target)
        hour = self._fold("hour", s.hour_watermark, floor(minute, GRANULARITY["hour"]))
        return TierState(s.raw_horizon, s.minute_horizon, minute, s.hour_horizon, hour)

    def _fold(self, unit: str, watermark: datetime | None, target: datetime) -> datetime:
        """Fold [watermark, target) of the finer tier into ``unit`` rollups; the new watermark."""
        raw = unit == "minute"
        flows, nodes, column = ("flow_intervals", "node_intervals", "time_start") if raw else \
            ("flows_1m", "nodes_1m", "bucket")
        if watermark is None:  # first run: start at the oldest row (nothing older to fold)
            watermark = min(target, self._first(flows, nodes, column, GRANULARITY[unit]) or target)
        if target <= watermark:
            return watermark
        w = self._writer
        _run(w, _flow_rollup(_ROLLUPS["flows", unit], flows, column, unit, raw), _bounds(watermark, target))
        _run(w, _node_rollup(_ROLLUPS["nodes", unit], nodes, column, unit, raw), _bounds(watermark, target))
        return target

    def _first(self, flows: str, nodes: str, column: str, grain: timedelta) -> datetime | None:
        first = _run(self._writer,
            f"SELECT least((SELECT min({column}) FROM {flows}), (SELECT min({column}) FROM {nodes}))")[0][0]
        return None if first is None else floor(_aware(first), grain)

    def _expire(self, now: datetime, s: TierState) -> tuple[TierState, bool]:
        """Cut each tier, never past what the next tier has summarised (so nothing is lost)."""
        assert s.minute_watermark is not None and s.hour_watermark is not None
        w, r = self._writer, self.retention
        raw = _later(s.raw_horizon, min(floor(now - r.raw, GRANULARITY["minute"]), s.minute_watermark))
        minute = _later(s.minute_horizon, min(floor(now - r.minute, GRANULARITY["hour"]), s.hour_watermark))
        hour = _later(s.hour_horizon, floor(now - r.hour, GRANULARITY["hour"]))
        deleted = 0
        for table, column, cut in (("flow_intervals", "time_start", raw), ("node_intervals", "time_start", raw),
                                   ("reports", "first_time", raw), ("flows_1m", "bucket", minute),
                                   ("nodes_1m", "bucket", minute), ("flows_1h", "bucket", hour),
                                   ("nodes_1h", "bucket", hour)):
            deleted += _run(w, f"DELETE FROM {table} WHERE {column} < ?", [_naive(cut)])[0][0]
        gc = False
        if deleted:
            # A key is still used by an hour rollup, by a minute rollup not yet in an hour, or by a
            # raw interval not yet in a minute; older minute and raw rows are in those already.
            gone = _run(w,
                "DELETE FROM flow_keys WHERE flow_id NOT IN (SELECT flow_id FROM flows_1h "
                "UNION SELECT flow_id FROM flows_1m WHERE bucket >= ? "
                "UNION SELECT flow_id FROM flow_intervals WHERE time_start >= ?)",
                [_naive(s.hour_watermark), _naive(s.minute_watermark)])[0][0]
            gc = gone > 0
        return TierState(raw, minute, s.minute_watermark, hour, s.hour_watermark), gc

    # -- read path ---------------------------------------------------------------------------

    def _reader(self) -> duckdb.DuckDBPyConnection:
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            with self._cursors_lock:
                self._check_open()
                cursor = self._cursor()
                self._cursors.append(cursor)
            self._local.cursor = cursor
        return cursor

    def _read(self, query: Callable[[duckdb.DuckDBPyConnection, TierState], T]) -> T:
        """One read transaction: the tier state and the tables it describes are of one moment."""
        self._check_open()
        cursor = self._reader()
        _run(cursor, "BEGIN TRANSACTION")
        try:
            return query(cursor, _read_state(cursor))
        finally:
            _run(cursor, "ROLLBACK")

    def _plan(self, flt: FlowFilter, state: TierState, step: timedelta | None = None) -> list[Piece]:
        return plan(flt.since or EARLIEST, flt.until or LATEST, state, step, self.read_rollups)

    def service_map(self, flt: FlowFilter, level: MapLevel = MapLevel.WORKLOAD) -> ServiceMap:
        level = MapLevel(level)
        pred = filter_predicate(flt)
        rows = self._read(lambda cur, state: _fetch(cur, *q.service_map_sql(pred, self._plan(flt, state), level)))
        edges = [Edge(_node(r[0:4]), _node(r[4:8]), r[8], *(int(v) for v in r[9:18]), r[18], int(r[19]))
                 for r in rows]
        return ServiceMap.from_edges(level, edges)

    def flow_table(self, flt: FlowFilter, view: View | None = None, by: TopBy = TopBy.BYTES,
                   limit: int = 100) -> list[FlowRow]:
        if not 0 < limit <= MAX_LIMIT:
            raise ValueError(f"limit must be 1..{MAX_LIMIT}, got {limit}")
        pred = all_of(filter_predicate(flt), view_predicate(view))
        rows = self._read(lambda cur, state: _fetch(cur, *q.flow_table_sql(pred, self._plan(flt, state), by, limit)))
        n = len(q.ENDPOINT_FIELDS)
        return [FlowRow(Endpoint(**dict(zip(q.ENDPOINT_FIELDS, r[:n], strict=True)), service=r[2 * n + 2]),
                        Endpoint(**dict(zip(q.ENDPOINT_FIELDS, r[n:2 * n], strict=True)), service=r[2 * n + 3]),
                        r[2 * n], r[2 * n + 1], *(int(v) for v in r[2 * n + 4:2 * n + 13]), r[2 * n + 13])
                for r in rows]

    def timeseries(self, flt: FlowFilter, subject: Subject, step: timedelta) -> TimeSeries:
        if step <= timedelta(0) or step % timedelta(milliseconds=1):
            raise ValueError(f"step must be a positive whole number of milliseconds, got {step}")
        return self._read(lambda cur, state: self._series(cur, state, flt, subject, step))

    def _series(self, cur: duckdb.DuckDBPyConnection, state: TierState, flt: FlowFilter, subject: Subject,
                step: timedelta) -> TimeSeries:
        if self.read_rollups:
            step = step_for(step, flt.since or EARLIEST, state)
        pieces = self._plan(flt, state, step)
        step_ms = step // timedelta(milliseconds=1)
        base = filter_predicate(flt)
        flows: dict[int, list[int]] = {}
        nodes: set[str] | None = None
        if isinstance(subject, EdgeSubject):
            pred = all_of(base, Eq("category", subject.category)) if subject.category else base
            ends = tuple((str(n.kind), n.name, n.namespace, n.region) for n in (subject.source, subject.destination))
            for b, *values in _fetch(cur, *q.edge_series_sql(pred, pieces, step_ms, subject.level, ends)):
                flows[b] = [int(v) for v in values]
        else:
            pred = _local_subject(base, subject)
            nodes = {subject.node} if isinstance(subject, NodeSubject) else set()
            for b, node, *values in _fetch(cur, *q.local_series_sql(pred, pieces, step_ms)):
                nodes.add(node)
                flows[b] = [a + int(v) for a, v in zip(flows.get(b, [0, 0, 0, 0]), values, strict=True)]
        allowance: dict[int, Allowance] = {}
        if nodes:
            for b, *values in _fetch(cur, *q.allowance_sql(pieces, step_ms, sorted(nodes))):
                allowance[b] = Allowance(*(int(v) for v in values))
        return TimeSeries(subject, step, _points(flt, step_ms, flows, allowance, nodes is not None))

    # -- inspection --------------------------------------------------------------------------

    def table_rows(self) -> dict[str, int]:
        """Rows per table (for operators, benchmarks and tests)."""
        tables = ("reports", "flow_keys", "flow_intervals", "flows_1m", "flows_1h", "node_intervals", "nodes_1m",
                  "nodes_1h")
        return self._read(lambda cur, _: {t: _run(cur, f"SELECT count(*) FROM {t}")[0][0] for t in tables})

    def tier_state(self) -> TierState:
        return self._read(lambda _, state: state)


# -- helpers -------------------------------------------------------------------------------------


def _prepare(report: ReportBatch) -> _Prepared:
    flows = _conform(report.flows, FLOW_STORE_SCHEMA, "flow", report.report_id)
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


def _with(cursor: duckdb.DuckDBPyConnection, name: str, table: pa.Table, run: Callable[[], T]) -> T:
    cursor.register(name, table)
    try:
        return run()
    finally:
        cursor.unregister(name)


def _flow_rollup(target: str, source: str, time_col: str, unit: str, raw: bool) -> str:
    sums = ", ".join(f"sum({c})" for c in SUMMED)
    rtt = f"max({RAW_RTT_MAX})" if raw else "max(rtt_max_us)"
    intervals = "count(*)" if raw else "sum(intervals)"
    # Ordered by bucket so that each row group covers few buckets: time filters then prune well.
    return (f"INSERT INTO {target} SELECT date_trunc('{unit}', {time_col}) AS bucket, flow_id, {sums}, "
            f"max(active_sockets), {rtt}, {intervals} FROM {source} WHERE {time_col} >= ? AND {time_col} < ? "
            "GROUP BY ALL ORDER BY bucket")


def _node_rollup(target: str, source: str, time_col: str, unit: str, raw: bool) -> str:
    keys = ", ".join(NODE_KEY_COLUMNS)
    sums = ", ".join(f"sum({c})" for c in NODE_COUNTERS)
    intervals = "count(*)" if raw else "sum(intervals)"
    return (f"INSERT INTO {target} SELECT date_trunc('{unit}', {time_col}) AS bucket, {keys}, {sums}, {intervals} "
            f"FROM {source} WHERE {time_col} >= ? AND {time_col} < ? GROUP BY ALL ORDER BY bucket")


def _fetch(cursor: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[tuple]:
    return _run(cursor, sql, [_naive(p) if isinstance(p, datetime) else p for p in params])


def _run(cursor: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[tuple]:
    """Execute and read the whole result: DuckDB 2 refuses a statement while one is unread."""
    return (cursor.execute(sql, params) if params is not None else cursor.execute(sql)).fetchall()


def _read_state(cursor: duckdb.DuckDBPyConnection) -> TierState:
    values = dict(_run(cursor, "SELECT name, value FROM store_state"))
    return TierState(**{name: _aware(values.get(name)) for name in STATE_NAMES})


def _node(parts: tuple) -> MapNode:
    return MapNode(NodeKind(parts[0]), parts[1], parts[2], parts[3])


def _local_subject(base: Pred, subject: PodSubject | NodeSubject) -> Pred:
    if isinstance(subject, PodSubject):
        return all_of(base, Eq("local_namespace", subject.namespace), Eq("local_pod", subject.pod))
    return all_of(base, Eq("node", subject.node))


def _points(flt: FlowFilter, step_ms: int, flows: dict[int, list[int]], allowance: dict[int, Allowance],
            with_allowance: bool) -> tuple[TimePoint, ...]:
    """Every bucket of the range, empty ones as zeros (a gap in traffic is a value, not a hole)."""
    known = [*flows, *allowance]
    first = _ms(flt.since) // step_ms * step_ms if flt.since else min(known, default=None)
    end = _ms(flt.until) if flt.until else max(known, default=-1) + step_ms
    if first is None or end <= first:
        return ()
    if (end - first) // step_ms > MAX_POINTS:
        raise ValueError(f"{(end - first) // step_ms} points: more than {MAX_POINTS}; use a longer step")
    points = []
    for b in range(first, end, step_ms):
        out, into, retransmitted, ooo = flows.get(b, (0, 0, 0, 0))
        points.append(TimePoint(EARLIEST + timedelta(milliseconds=b), out, into, retransmitted, ooo,
                                allowance.get(b, Allowance()) if with_allowance else None))
    return tuple(points)


def _ms(t: datetime) -> int:
    return (t - EARLIEST) // timedelta(milliseconds=1)


def _when(now: datetime | float | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    if isinstance(now, int | float):
        return datetime.fromtimestamp(now, UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC)


def _later(current: datetime | None, cut: datetime) -> datetime:
    return cut if current is None else max(current, cut)


def _bounds(start: datetime, end: datetime) -> list[datetime]:
    return [_naive(start), _naive(end)]


def _naive(t: datetime | None) -> datetime | None:
    return None if t is None else t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t


def _aware(t: datetime | None) -> datetime | None:
    return None if t is None else t.replace(tzinfo=UTC)

