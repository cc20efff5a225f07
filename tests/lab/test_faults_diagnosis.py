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
