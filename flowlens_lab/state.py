"""The lab's state file: everything it created, recorded before it is created.

``lab down`` trusts this file first and then sweeps by prefix, so a crash or a killed
``lab up`` never leaves anything behind. Several processes (the CLI, the controller) change
the lab; each change is a read-modify-write under an exclusive file lock.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DEFAULT_DIR = "/run/flowlens-lab"


def lab_dir() -> Path:
    return Path(os.environ.get("FLOWLENS_LAB_DIR", DEFAULT_DIR))


def empty_state() -> dict[str, Any]:
    return {"version": 1, "namespaces": [], "etc_netns": [], "processes": [], "nodes": {}, "pods": {},
            "services": {}, "faults": {}, "aws": {}, "spec": {}, "seq": {}, "ready": False}


@contextmanager
def locked(directory: Path | None = None) -> Iterator[dict[str, Any]]:
    """The state, locked for the duration of the block and saved (atomically) after it."""
    directory = directory or lab_dir()
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "state.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = read(directory)
        yield state
        tmp = directory / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
        tmp.replace(directory / "state.json")


def read(directory: Path | None = None) -> dict[str, Any]:
    path = (directory or lab_dir()) / "state.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return empty_state()


def exists(directory: Path | None = None) -> bool:
    return ((directory or lab_dir()) / "state.json").exists()


def next_seq(state: dict[str, Any], name: str) -> int:
    state["seq"][name] = state["seq"].get(name, 0) + 1
    return state["seq"][name]
