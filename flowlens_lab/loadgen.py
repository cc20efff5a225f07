"""``flowlens lab load``: the scenario's test client, sending from the regional network."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flowlens_lab import aws_side, network


def send(every: float, duration: float, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    from inference_workload.load import run_load

    return aws_side.in_namespace(network.AWS_NS, lambda: run_load(aws_side.API_URL, every, duration, progress))
