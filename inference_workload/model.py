"""The runtime's model: load it in the WebUI's phases, time each, and write the WebUI's log line.

Each phase does real work on the real tensors, so its time scales with the checkpoint:

- load weights from disk: read the checkpoint (ranged GETs from S3, or a file) and parse it;
- create model: allocate one parameter array per tensor;
- apply weights to model: copy the checkpoint into the parameters;
- apply half(): cast to fp16 (a no-op cast for an fp16 checkpoint, as with SDXL-Turbo fp16);
- calculate empty prompt: run the empty prompt through the first weight matrix.

The summary line matches the WebUI's, with every phase shown even when it rounds to 0.0 s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from inference_workload.weights import ReadStats

__all__ = ["PHASES", "LoadReport", "Model", "load_model"]

PHASES = ("load weights from disk", "create model", "apply weights to model", "apply half()",
          "calculate empty prompt")
PROMPT_TOKENS = 77  # CLIP's context length


@dataclass(frozen=True)
class Model:
    """The loaded parameters and the cached empty-prompt conditioning."""

    name: str
    parameters: dict[str, np.ndarray]
    empty_prompt: np.ndarray

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.parameters.values())


@dataclass(frozen=True)
class LoadReport:
    """How long loading took, phase by phase, and what was read."""

    total: float
    phases: dict[str, float]
    read: ReadStats
    started_at: float
    finished_at: float

    def log_line(self) -> str:
        parts = ", ".join(f"{name}: {self.phases[name]:.1f}s" for name in PHASES)
        return f"Model loaded in {self.total:.1f}s ({parts})."


def load_model(read: Callable[[], tuple[dict[str, np.ndarray], ReadStats]], name: str,
               clock: Callable[[], float] = time.perf_counter,
               wall: Callable[[], float] = time.time) -> tuple[Model, LoadReport]:
    """Load a model with ``read`` (which returns the checkpoint's tensors) and time every phase."""
    started_at, marks = wall(), [clock()]
    tensors, stats = read()
    marks.append(clock())
    parameters = {key: np.empty(t.shape, dtype=t.dtype) for key, t in tensors.items()}
    marks.append(clock())
    for key, tensor in tensors.items():
        np.copyto(parameters[key], tensor)
    del tensors  # the checkpoint copy is no longer needed; halve the resident size early
    marks.append(clock())
    parameters = {key: p.astype(np.float16, copy=False) for key, p in parameters.items()}
    marks.append(clock())
    empty = _encode_empty_prompt(parameters)
    marks.append(clock())
    phases = {phase: marks[i + 1] - marks[i] for i, phase in enumerate(PHASES)}
    report = LoadReport(marks[-1] - marks[0], phases, stats, started_at, wall())
    return Model(name, parameters, empty), report


def _encode_empty_prompt(parameters: dict[str, np.ndarray]) -> np.ndarray:
    matrices = [p for p in parameters.values() if p.ndim == 2]
    if not matrices:
        return np.zeros((PROMPT_TOKENS, 1), dtype=np.float32)
    weight = matrices[0][:768].astype(np.float32)
    tokens = np.full((PROMPT_TOKENS, weight.shape[0]), 1.0 / weight.shape[0], dtype=np.float32)
    return np.tanh(tokens @ weight)
