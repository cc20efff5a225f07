"""The core install is lean: the product declares every module it imports, none of the lab's,
and the CLI works without the lab's extra (the lab says how to get it)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAB_ONLY = {"boto3", "botocore", "moto", "safetensors", "PIL"}


def _dist(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _imported_modules(package: Path) -> set[str]:
    modules: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m != "flowlens"}


def test_every_module_the_product_imports_is_a_core_dependency() -> None:
    core = {_dist(r) for r in _project()["dependencies"]}
    owners = packages_distributions()
    undeclared = {module: owners.get(module) for module in _imported_modules(ROOT / "flowlens")
                  if not {_dist(d) for d in owners.get(module, [])} & core}
    assert undeclared == {}


def test_the_lab_dependencies_come_only_with_the_lab_extra() -> None:
    project = _project()
    core = {_dist(r) for r in project["dependencies"]}
    lab = {_dist(r) for r in project["optional-dependencies"]["lab"]}
    assert core & {"boto3", "moto", "safetensors", "pillow", "botocore"} == set()
    assert {"boto3", "moto", "safetensors", "pillow"} <= lab


_WITHOUT_LAB = f"""
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {sorted(LAB_ONLY)!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Absent())
sys.argv = ["flowlens", *sys.argv[1:]]
from flowlens.surfaces.cli import main
main()
"""


def _flowlens_without_lab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _WITHOUT_LAB, *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "COLUMNS": "200"})


def test_agent_and_collector_run_without_the_lab_extra() -> None:
    for args in (["--help"], ["agent", "--help"], ["collector", "--help"]):
        done = _flowlens_without_lab(*args)
        assert done.returncode == 0, done.stderr
    listed = _flowlens_without_lab("--help").stdout
    assert "lab" in listed and "(not installed: pip install 'flowlens[lab]')" in listed


def test_the_lab_without_its_extra_says_how_to_install_it() -> None:
    done = _flowlens_without_lab("lab", "up")
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: `flowlens lab` needs the lab extra (boto3 is missing): "
                                   "pip install 'flowlens[lab]' (scripts/install.sh does)")
    assert "Traceback" not in done.stderr
