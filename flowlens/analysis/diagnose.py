"""Diagnosis: run every rule over a window and return findings and the health indicator.

One failing rule never stops the others: its error becomes a note and the rest is reported.
"""

from __future__ import annotations

import logging
import time

from flowlens.analysis.context import Context
from flowlens.analysis.rules import bandwidth_allowance, connections, cross_zone, degradation
from flowlens.collector.enrich.inventory import Inventory
from flowlens.collector.events import EventLog
from flowlens.collector.store import FlowStore
from flowlens.model.findings import Diagnosis, Finding

log = logging.getLogger(__name__)

RULES = (bandwidth_allowance.findings, cross_zone.findings, connections.findings)


def diagnose(store: FlowStore, inventory: Inventory, events: EventLog, seconds: float,
             now: float | None = None, bandwidth_scale: float = 1.0) -> Diagnosis:
    end = now if now is not None else time.time()
    ctx = Context(store, inventory, events, end - seconds, end, bandwidth_scale)
    findings: list[Finding] = []
    for rule in RULES:
        try:
            findings += rule(ctx)
        except Exception as err:  # report what the other rules found
            log.exception("rule %s failed", rule.__module__)
            ctx.notes.append(f"{rule.__module__}: {err}")
    try:
        paths, degraded = degradation.evaluate(ctx)
    except Exception as err:
        log.exception("health evaluation failed")
        ctx.notes.append(f"health: {err}")
        paths, degraded = [], []
    findings += degraded
    order = {"critical": 0, "warning": 1, "info": 2}
    findings.sort(key=lambda f: (order.get(f.severity, 3), f.kind, f.title))
    return Diagnosis(ctx.window, max((p.health for p in paths), default=0), tuple(paths), tuple(findings))
