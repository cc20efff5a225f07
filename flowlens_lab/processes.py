"""Processes of the lab (servers, agents, pod containers, the controller), recorded with their PIDs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from typing import Any

from flowlens_lab import state as lab_state

PYTHON = sys.executable


def start(name: str, command: list[str], netns: str | None = None, env: dict[str, str] | None = None) -> int:
    """Start a process (inside ``netns`` when given), log to the lab's logs folder, record its PID."""
    logs = lab_state.lab_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}.log"
    argv = ["ip", "netns", "exec", netns, *command] if netns else command
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, **(env or {})})
    with lab_state.locked() as state:
        state["processes"].append({"name": name, "pid": proc.pid, "netns": netns, "log": str(log_path)})
    return proc.pid


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def stop_pids(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM the process groups, wait up to ``grace`` seconds, then SIGKILL what is left."""
    for pid in pids:
        _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
        _reap(pids)
    for pid in pids:
        if alive(pid):
            _signal_group(pid, signal.SIGKILL)
    _reap(pids)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _reap(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def stop(names: set[str]) -> None:
    """Stop the recorded processes with these names and forget them."""
    with lab_state.locked() as state:
        chosen = [p for p in state["processes"] if p["name"] in names]
        state["processes"] = [p for p in state["processes"] if p["name"] not in names]
    stop_pids([p["pid"] for p in chosen])


def by_name(state: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((p for p in state["processes"] if p["name"] == name), None)
