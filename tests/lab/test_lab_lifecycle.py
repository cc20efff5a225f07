"""`flowlens lab up` killed halfway, then `flowlens lab down`: nothing the lab created remains."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from flowlens_lab import network, processes, teardown

FLOWLENS = [sys.executable, "-m", "flowlens"]


@pytest.fixture
def lab_dir(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if network.lab_namespaces():
        pytest.skip("a lab is already running on this machine")
    directory = tmp_path / "lab"
    env = {**os.environ, "FLOWLENS_LAB_DIR": str(directory)}
    yield directory, env
    subprocess.run([*FLOWLENS, "lab", "down"], env=env, capture_output=True, timeout=120)


def test_killed_lab_up_leaves_nothing_after_down(lab_dir):
    directory, env = lab_dir
    up = subprocess.Popen([*FLOWLENS, "lab", "up", "--weights-mib", "8"], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    state_file = directory / "state.json"
    # Kill it once it has namespaces and at least one server process running.
    while time.time() < deadline:
        if state_file.exists():
            state = json.loads(state_file.read_text())
            if state["processes"] and len(state["namespaces"]) >= 2:
                break
        time.sleep(0.1)
    else:
        pytest.fail("lab up never got going")
    os.killpg(up.pid, signal.SIGKILL)
    up.wait()
    recorded = [p["pid"] for p in json.loads(state_file.read_text())["processes"]]
    assert network.lab_namespaces(), "the killed lab left namespaces for down to remove"

    result = subprocess.run([*FLOWLENS, "lab", "down"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert teardown.leftovers() == []
    assert network.lab_namespaces() == []
    assert not any(processes.alive(pid) for pid in recorded)
    assert not directory.exists()
