"""Inference events beside the flows: model loads (and, later, other workload events).

Small in number (one per pod start), so they are kept in memory for queries and appended to a
JSON-lines file next to the store so a restart keeps them. Sources post them to
``/api/v1/events``: the lab's controller from runtime logs, a log shipper or a scraper in a
real cluster.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_EVENTS = 100_000
MAX_EVENTS_PER_POST = 1000


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["model_load"]
    pod: str = Field(min_length=1, max_length=253)
    namespace: str = Field(default="", max_length=253)
    node: str = Field(default="", max_length=253)
    start: float = Field(gt=1e9, lt=1e11)
    end: float = Field(gt=1e9, lt=1e11)
    bytes: int = Field(default=0, ge=0)
    phases: dict[str, float] = Field(default_factory=dict, max_length=32)


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
