"""Model loads as inference runtimes report them.

Stable Diffusion WebUI (and the reference workload) log one line per load::

    Model loaded in 33.7s (load weights from disk: 27.1s, create model: 0.5s, ...).

:func:`parse_model_load` turns such a line into a :class:`ModelLoad` with its phases; the
collector stores them as events beside the flows, so a diagnosis can say how long loads took
and how much of that was spent waiting on the network.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

LINE = re.compile(r"Model loaded in (?P<total>\d+(?:\.\d+)?)s \((?P<phases>[^()]*(?:\([^()]*\)[^()]*)*)\)")
PHASE = re.compile(r"\s*(?P<name>[^:,]+?):\s*(?P<seconds>\d+(?:\.\d+)?)s\s*")


@dataclass(frozen=True, slots=True)
class ModelLoad:
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def weights_seconds(self) -> float | None:
        """The phase that reads the weights (from disk, a mount or the network)."""
        return next((v for k, v in self.phases.items() if k.startswith("load weights")), None)


def parse_model_load(line: str) -> ModelLoad | None:
    match = LINE.search(line)
    if match is None:
        return None
    phases = {}
    for part in _split_phases(match.group("phases")):
        phase = PHASE.fullmatch(part)
        if phase:
            phases[phase.group("name").strip()] = float(phase.group("seconds"))
    return ModelLoad(float(match.group("total")), phases)


def _split_phases(text: str) -> list[str]:
    """Split on commas outside parentheses (``apply half()`` has some)."""
    parts, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p for p in parts if p.strip()]
