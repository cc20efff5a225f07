"""Logging set-up shared by the entry points: this package at the chosen level, libraries quieter.

Libraries stay at WARNING so the logs show the workload's own story (each task, each attempt)
rather than one httpx line per probe or botocore's endpoint discovery.
"""

from __future__ import annotations

import logging

__all__ = ["configure"]

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure(level: str = "info") -> None:
    logging.basicConfig(level=logging.WARNING, format=FORMAT)
    logging.getLogger("inference_workload").setLevel(level.upper())
