"""``lab down``: remove everything the lab created, from the state file and by prefix.

Works after a clean ``lab up``, after a crash, and after ``lab up`` was killed halfway: the
state file names what was recorded, and a sweep of namespaces, processes inside them and
/etc/netns entries with the lab's prefix catches anything created but not yet recorded.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from flowlens_lab import network, processes
from flowlens_lab import state as lab_state
from flowlens_lab.shell import run
from flowlens_lab.spec import PREFIX


def pids_in(ns: str) -> list[int]:
    out = run("ip", "netns", "pids", ns, check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def down(progress: Callable[[str], None] = lambda _: None) -> dict[str, int]:
    state = lab_state.read()
    # The controller first, so it stops creating nodes and pods while the rest goes; the
    # namespaces are listed after it stopped, so one it was creating is not left behind.
    controller = [p["pid"] for p in state["processes"] if p["name"] == "controller"]
    processes.stop_pids(controller, grace=3)
    state = lab_state.read()
    recorded = [p["pid"] for p in state["processes"]]
    namespaces = sorted(set(state["namespaces"]) | set(network.lab_namespaces()))
    in_namespaces = [pid for ns in namespaces for pid in pids_in(ns)]
    progress(f"stopping {len(set(recorded) | set(in_namespaces))} processes")
    processes.stop_pids(sorted(set(recorded) | set(in_namespaces)), grace=5)
    progress(f"deleting {len(namespaces)} network namespaces")
    for ns in namespaces:
        network.delete_namespace(ns)
    etc = set(state["etc_netns"]) | {str(p) for p in Path("/etc/netns").glob(PREFIX + "*")}
    for directory in etc:
        shutil.rmtree(directory, ignore_errors=True)
    shutil.rmtree(lab_state.lab_dir(), ignore_errors=True)
    return {"processes": len(set(recorded) | set(in_namespaces)), "namespaces": len(namespaces)}


def leftovers() -> list[str]:
    """What of the lab still exists (empty after a successful ``down``)."""
    found = [f"netns {ns}" for ns in network.lab_namespaces()]
    found += [f"/etc/netns/{p.name}" for p in Path("/etc/netns").glob(PREFIX + "*")]
    if lab_state.exists():
        found.append(str(lab_state.lab_dir() / "state.json"))
    return found
