"""Words for findings: counts with their noun in the right number."""

from __future__ import annotations


def count(n: int, noun: str, plural: str = "") -> str:
    """``count(1, "workload")`` is "1 workload", ``count(3, "workload")`` "3 workloads"."""
    return f"{n} {noun if n == 1 else (plural or noun + 's')}"
