"""Diagnosis: run every rule over a window and return findings and the health indicator.

One failing rule never stops the others: its error becomes a note and the rest is reported.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from flowlens.analysis.context import Context
from flowlens.analysis.rules import bandwidth_allowance, connections, cross_zone, degradation, latency, model_loads
from flowlens.collector.enrich.inventory import Inventory
from flowlens.collector.events import EventLog
from flowlens.collector.store import FlowStore
from flowlens.model.bandwidth import BandwidthTable, default_table
from flowlens.model.findings import Diagnosis, Finding

log = logging.getLogger(__name__)
T = TypeVar("T")

def diagnose(store: FlowStore, inventory: Inventory, events: EventLog, seconds: float,
             now: float | None = None, bandwidth: BandwidthTable | None = None,
             failures: Counter[str] | None = None) -> Diagnosis:
    end = now if now is not None else time.time()
    ctx = Context(store, inventory, events, end - seconds, end, bandwidth or default_table())
    ctx.failures = failures if failures is not None else Counter()
    findings: list[Finding] = []
    # What explains losses goes first, so that located degradation is only what is left.
    allowance, explained_nodes = _guarded(ctx, "bandwidth allowance", lambda: bandwidth_allowance.findings(ctx),
                                          ([], set()))
    blocking, blocked = _guarded(ctx, "connections", lambda: connections.findings(ctx), ([], set()))
    findings += allowance + blocking
    findings += _guarded(ctx, "cross-zone traffic", lambda: cross_zone.findings(ctx), [])
    paths, degraded = _guarded(ctx, "health", lambda: degradation.evaluate(ctx, explained_nodes, blocked), ([], []))
    findings += degraded
    remotes = {name for f in degraded if f.kind == "remote_degradation" for name in f.where["remotes"]}
    findings += _guarded(ctx, "model loads", lambda: model_loads.findings(ctx, explained_nodes, remotes), [])
    findings += _guarded(ctx, "latency", lambda: latency.findings(ctx, list(findings)), [])
    order = {"critical": 0, "warning": 1, "info": 2}
    findings.sort(key=lambda f: (order.get(f.severity, 3), f.kind, f.title))
    return Diagnosis(ctx.window, max((p.health for p in paths), default=0), tuple(paths), tuple(findings),
                     tuple(ctx.notes))


def _guarded(ctx: Context, name: str, rule: Callable[[], T], fallback: T) -> T:
    """One failing rule never stops the others: its error becomes a note."""
    try:
        return rule()
    except Exception as err:
        log.exception("rule %s failed", name)
        ctx.notes.append(f"{name}: {err}")
        ctx.failures[name] += 1
        return fallback
