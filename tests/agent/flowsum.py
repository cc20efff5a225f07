"""Summing sampler output per namespace and role, for assertions."""

from __future__ import annotations

from collections.abc import Iterable

from flowlens.agent.sampling.sampler import CycleResult
from flowlens.model.flows import FlowCounters, FlowKey


def total(results: Iterable[CycleResult], netns: str, role: str | None = None,
          server_port: int | None = None) -> FlowCounters:
    out = FlowCounters()
    for result in results:
        for key, counters in result.flows.items():
            if _match(key, netns, role, server_port):
                out.add(counters)
    return out


def keys(results: Iterable[CycleResult], netns: str) -> set[FlowKey]:
    return {key for result in results for key in result.flows if key.netns == netns}


def _match(key: FlowKey, netns: str, role: str | None, server_port: int | None) -> bool:
    return (key.netns == netns and (role is None or key.role == role)
            and (server_port is None or key.server_port == server_port))
