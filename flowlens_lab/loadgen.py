"""``flowlens lab load``: the scenario's test client, sending from the regional network."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flowlens_lab import aws_side, network


def send(every: float, duration: float, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Rounds of the three task types every ``every`` seconds for ``duration`` seconds."""
    from inference_workload.load import run_load

    def work() -> dict[str, Any]:
        sent = rejected = 0
        for submission in run_load(aws_side.API_URL + "/tasks", every=every, duration=duration):
            sent += 1
            if submission.status_code != 200:
                rejected += 1
                progress(f"{submission.tasktype} {submission.id}: HTTP {submission.status_code} {submission.answer}")
            elif sent % 30 == 0:
                progress(f"{sent} tasks sent")
        return {"sent": sent, "rejected": rejected}

    return aws_side.in_namespace(network.AWS_NS, work)
