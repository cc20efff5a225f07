"""Inference events beside the flows: model loads, and the latency inference servers report.

- ``model_load``: one per pod start (bytes, seconds, phases);
- ``latency``: a mean request latency (``metric``: ttft, e2e, itl or queue) over ``count``
  requests between ``start`` and ``end``, of a pod or a whole workload.

Small in number, so they are kept in memory for queries and appended to a JSON-lines file next
to the store so a restart keeps them. Sources post them to ``/api/v1/events``: the lab's
controller from runtime logs, ``flowlens probe --post`` and ``flowlens signals --post``, a log
shipper or a scraper in a real cluster.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_EVENTS = 100_000
MAX_EVENTS_PER_POST = 1000


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["model_load", "latency"]
    pod: str = Field(default="", max_length=253)
    namespace: str = Field(default="", max_length=253)
    workload: str = Field(default="", max_length=253)
    node: str = Field(default="", max_length=253)
    start: float = Field(gt=1e9, lt=1e11)
    end: float = Field(gt=1e9, lt=1e11)
    bytes: int = Field(default=0, ge=0)
    phases: dict[str, float] = Field(default_factory=dict, max_length=32)
    metric: Literal["ttft", "e2e", "itl", "queue"] | None = None
    value_s: float | None = Field(default=None, ge=0, lt=86_400)
    count: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _complete(self) -> EventIn:
        if self.end < self.start:
            raise ValueError("end is before start")
        if self.kind == "model_load" and not self.pod:
            raise ValueError("a model_load names its pod")
        if self.kind == "latency" and (self.metric is None or self.value_s is None or not (self.pod or self.workload)):
            raise ValueError("a latency event gives metric, value_s and a pod or a workload")
        return self


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    pod: str
    namespace: str
    node: str
    start: float
    end: float
    bytes: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    workload: str = ""
    metric: str | None = None
    value_s: float | None = None
    count: int = 0

    @property
    def seconds(self) -> float:
        return self.end - self.start


class EventLog:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._events: list[Event] = []
        self._lock = threading.Lock()
        if path is not None and path.exists():
            for line in path.read_text().splitlines():
                try:
                    self._events.append(Event(**json.loads(line)))
                except (ValueError, TypeError):
                    continue  # a torn last line after a crash

    def add(self, incoming: list[EventIn]) -> int:
        events = [Event(**item.model_dump()) for item in incoming]
        with self._lock:
            self._events.extend(events)
            del self._events[:-MAX_EVENTS]
            if self.path is not None:
                with self.path.open("a") as f:
                    for event in events:
                        f.write(json.dumps(asdict(event)) + "\n")
        return len(events)

    def between(self, start: float, end: float, kind: str | None = None) -> list[Event]:
        with self._lock:
            return [e for e in self._events if e.end >= start and e.start < end and kind in (None, e.kind)]

    def as_json(self, events: list[Event]) -> list[dict[str, Any]]:
        return [{**asdict(e), "seconds": e.seconds} for e in events]
