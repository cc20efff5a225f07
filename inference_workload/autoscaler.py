"""Queue-length autoscaling with KEDA's ``aws-sqs-queue`` semantics (KEDA + the HPA it drives).

``decide`` is the pure decision; ``run`` is the loop around it. The rules:

- queue length = visible + in-flight messages (KEDA's ``scaleOnInFlight``, on by default);
- desired = ceil(length / target) clamped to [min, max] (target 10, min 0, max 5 here);
- scale up at once (from 0 as soon as one message is waiting: KEDA's activation);
- scale down to a non-zero count only when no higher recommendation was made within the
  stabilization window (the HPA's scale-down window, 300 s);
- scale to zero (``min``) only when the queue has been empty for the cooldown (KEDA's
  ``cooldownPeriod``, 300 s);
- the queue is polled every second; a failed poll keeps the current replicas.

The HPA's rate limits on scale-up (100 % or 4 pods per 15 s) and its 10 % tolerance are left
out: with at most 5 replicas and ceil() on whole messages they change nothing that matters here.

    python -m inference_workload.autoscaler --queue-url URL \
        --scale-command "kubectl scale deploy/sdruntime --replicas={replicas}"
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from inference_workload import aws, logs

__all__ = ["ScalePolicy", "ScalerState", "decide", "run", "sqs_queue_length"]

log = logging.getLogger("inference_workload.autoscaler")


@dataclass(frozen=True)
class ScalePolicy:
    target: int = 10  # messages per replica (KEDA queueLength)
    min_replicas: int = 0
    max_replicas: int = 5
    cooldown: float = 300.0  # empty queue → min replicas after this long
    stabilization: float = 300.0  # a lower count is applied only once this long without a higher one
    activation: int = 0  # the queue is "active" above this length (KEDA activationQueueLength)
    polling_interval: float = 1.0


@dataclass(frozen=True)
class ScalerState:
    replicas: int = 0
    last_active: float | None = None
    history: tuple[tuple[float, int], ...] = field(default_factory=tuple)  # (time, recommendation)


def recommend(queue_length: int, policy: ScalePolicy) -> int:
    """ceil(length / target), clamped; at least 1 while there is work."""
    wanted = math.ceil(queue_length / policy.target)
    return max(max(policy.min_replicas, 1), min(policy.max_replicas, wanted))


def decide(state: ScalerState, queue_length: int, now: float, policy: ScalePolicy) -> ScalerState:
    """The state after observing ``queue_length`` at ``now``; its ``replicas`` is what to run."""
    active = queue_length > policy.activation
    last_active = now if active else state.last_active
    cooled = last_active is None or now - last_active >= policy.cooldown
    if not active and cooled:
        return ScalerState(policy.min_replicas, last_active, ())
    raw = recommend(queue_length, policy) if active else max(policy.min_replicas, 1)
    history = (*((t, r) for t, r in state.history if now - t < policy.stabilization), (now, raw))
    # Up at once; down only to the highest recommendation still inside the window; never out of
    # the bounds, even when they just changed (as the HPA applies a new maxReplicas at once).
    replicas = raw if raw >= state.replicas else min(state.replicas, max(r for _, r in history))
    replicas = max(policy.min_replicas, min(policy.max_replicas, replicas))
    return ScalerState(replicas, last_active, history)


def run(queue_length: Callable[[], int], scale_to: Callable[[int], None], policy: ScalePolicy | None = None, *,
        initial_replicas: int = 0, clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], bool] | None = None) -> ScalerState:
    """Poll, decide, call ``scale_to(n)`` on every change, until ``wait`` returns True.

    ``wait(seconds)`` sleeps between polls and returns True to stop (``threading.Event().wait``
    by default, i.e. forever); tests hand in one that advances a fake clock.
    """
    policy = policy or ScalePolicy()
    wait = wait or threading.Event().wait
    state = ScalerState(initial_replicas)
    while True:
        state = _tick(state, queue_length, scale_to, policy, clock)
        if wait(policy.polling_interval):
            return state


def _tick(state: ScalerState, queue_length: Callable[[], int], scale_to: Callable[[int], None],
          policy: ScalePolicy, clock: Callable[[], float]) -> ScalerState:
    try:
        length = queue_length()
    except Exception:
        log.warning("reading the queue length failed; keeping %d replicas", state.replicas, exc_info=True)
        return state
    new = decide(state, length, clock(), policy)
    if new.replicas == state.replicas:
        return new
    try:
        scale_to(new.replicas)
    except Exception:
        log.warning("scaling to %d failed; will try again", new.replicas, exc_info=True)
        return replace(new, replicas=state.replicas)
    log.info("queue length %d: %d -> %d replicas", length, state.replicas, new.replicas)
    return new


def sqs_queue_length(sqs: Any, queue_url: str, *, include_in_flight: bool = True) -> Callable[[], int]:
    """A ``queue_length`` function reading the queue's approximate counts, as KEDA does."""
    names = ["ApproximateNumberOfMessages"] + (["ApproximateNumberOfMessagesNotVisible"] if include_in_flight else [])

    def length() -> int:
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
        return sum(int(attributes.get(name, 0)) for name in names)

    return length


def command_scaler(template: str) -> Callable[[int], None]:
    """A ``scale_to`` running a shell-free command with ``{replicas}`` filled in."""
    def scale_to(replicas: int) -> None:
        subprocess.run(shlex.split(template.format(replicas=replicas)), check=True)
    return scale_to


def main(argv: list[str] | None = None) -> int:
    """Scale by the queue's length until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m inference_workload.autoscaler", description=main.__doc__)
    parser.add_argument("--queue-url", required=True)
    parser.add_argument("--scale-command", default=None,
                        help="command run on every change, {replicas} substituted (default: only log)")
    parser.add_argument("--target", type=int, default=10)
    parser.add_argument("--min-replicas", type=int, default=0)
    parser.add_argument("--max-replicas", type=int, default=5)
    parser.add_argument("--cooldown", type=float, default=300.0)
    parser.add_argument("--stabilization", type=float, default=300.0)
    parser.add_argument("--polling-interval", type=float, default=1.0)
    args = parser.parse_args(argv)
    logs.configure("info")
    policy = ScalePolicy(args.target, args.min_replicas, args.max_replicas, args.cooldown, args.stabilization,
                         polling_interval=args.polling_interval)
    scale_to = command_scaler(args.scale_command) if args.scale_command else (lambda n: None)
    with contextlib.suppress(KeyboardInterrupt):
        run(sqs_queue_length(aws.client("sqs"), args.queue_url), scale_to, policy)
    return 0


if __name__ == "__main__":
    sys.exit(main())
