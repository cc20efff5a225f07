"""`flowlens demo`, shortened (smaller weights), end to end: the findings of the slow phase, then
none of them once the runtime has the larger node type and topology-aware routing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from flowlens_lab import network, teardown


@pytest.fixture
def lab_dir(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if network.lab_namespaces():
        pytest.skip("a lab is already running on this machine")
    return tmp_path / "lab"


def test_demo_diagnoses_then_clears(lab_dir):
    env = {**os.environ, "FLOWLENS_LAB_DIR": str(lab_dir)}
    result = subprocess.run([sys.executable, "-m", "flowlens", "demo", "--json", "--weights-mib", "48"],
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    before, after = report["phases"]
    kinds_before = {f["kind"] for f in before["findings"]}
    assert {"bandwidth_allowance_exceeded", "cross_zone_traffic"} <= kinds_before
    assert before["health"] == 0, "the losses are the nodes' own allowance, not the network"
    slow = next(f for f in before["findings"] if f["kind"] == "bandwidth_allowance_exceeded")
    assert slow["evidence"]["bw_in_allowance_exceeded"] > 0 and slow["impact"]["model_loads"]
    kinds_after = {f["kind"] for f in after["findings"]}
    assert not kinds_after & {"bandwidth_allowance_exceeded", "cross_zone_traffic", "network_degradation"}
    assert after["ui_to_sdruntime_categories_now"] == ["INTRA_AZ"]
    assert after["health"] == 0
    assert max(after["model_load_seconds"]) < min(before["model_load_seconds"])
    assert report["seconds"] < 300
    assert teardown.leftovers() == [] or not network.lab_namespaces()
