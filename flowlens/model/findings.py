"""What a diagnosis says: findings with their evidence, and the network health indicator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Finding:
    """One explained problem. ``kind`` is stable (scripts match on it); the rest is for people."""

    kind: str
    severity: str  # critical | warning | info
    title: str
    window: tuple[float, float]  # epoch seconds
    where: dict[str, list[str]]  # pods, nodes, zones, workloads, services, paths
    evidence: dict[str, Any]
    impact: dict[str, Any]
    recommendation: str


@dataclass(frozen=True, slots=True)
class PathHealth:
    """A network path (a zone pair, a cloud service, or the internet) in a window.

    ``health`` is 1 when degradation on the path spans independent workloads and nodes and the
    nodes' own allowance counters do not explain it, else 0."""

    path: str
    health: int
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Diagnosis:
    window: tuple[float, float]
    health: int
    paths: tuple[PathHealth, ...]
    findings: tuple[Finding, ...]
    notes: tuple[str, ...] = ()  # rules that failed, caps that were hit
