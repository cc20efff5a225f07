"""Faults in the lab, under load, each found and named by the diagnosis, and nothing else said.

The cells come from the fault matrix (:mod:`flowlens_lab.matrix`): its CI subset (loss on a pod,
on a node, at a regional service, a busy pod), a blocked pair and loss on the zone router, on a
lab with the runtime in both zones behind topology-aware routing and tasks flowing the whole
time. Each cell must show the expected finding with the expected suspect, and its final
diagnosis must hold no other finding above info; a stretch of the same load with no fault must
hold none at all.
"""

from __future__ import annotations

import os

import pytest

from flowlens_lab import lab, matrix, network, teardown

INTERVAL = 1.0
CELLS = [c for c in matrix.CELLS if c.name in (*matrix.SUBSET, "a blocked workload pair", "loss on the zone router")]


@pytest.fixture(scope="module")
def loaded_lab(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if network.lab_namespaces():
        pytest.skip("a lab is already running on this machine")
    os.environ["FLOWLENS_LAB_DIR"] = str(tmp_path_factory.mktemp("lab"))
    try:
        lab.up(matrix.matrix_spec(INTERVAL))
        matrix.wait_ready()
        with matrix.Load():
            matrix.quiet(INTERVAL)
            yield
    finally:
        teardown.down()
        os.environ.pop("FLOWLENS_LAB_DIR", None)


def test_no_fault_under_load_no_finding(loaded_lab):
    result = matrix.steady(30, INTERVAL)
    assert result.right, matrix.explain(result)


@pytest.mark.parametrize("cell", CELLS, ids=[c.name.replace(" ", "-") for c in CELLS])
def test_fault_is_found_and_named(loaded_lab, cell):
    try:
        result = matrix.run_cell(cell, INTERVAL)
    finally:
        matrix.quiet(INTERVAL)
    assert result.right, f"{matrix.scorecard([result], INTERVAL)}\n{matrix.explain(result)}"
    assert result.seconds_to_finding is not None and result.seconds_to_finding <= 60


def test_the_scorecard_prints_cells_and_the_steady_stretch():
    """No lab needed: the scorecard's lines, a fault cell's and the steady stretch's."""
    found = matrix.Result(CELLS[0], 8.6, ["workload_degradation"], [], "pod ui/x", [], 0)
    steady = matrix.Result(matrix.Cell("no fault, 10 min of load", "none", "-", lambda s: None, frozenset()),
                           None, ["network_degradation"], ["network_degradation"], "", [], 1)
    lines = matrix.scorecard([found, steady], 5.0).splitlines()
    assert lines[2].startswith("right | loss on a pod") and "8.6 s" in lines[2] and "pod ui/x" in lines[2]
    assert lines[3].startswith("WRONG | no fault, 10 min of load") and lines[3].endswith("network_degradation")
    assert lines[-1] == "1/2 cells right; agent interval 5 s"
