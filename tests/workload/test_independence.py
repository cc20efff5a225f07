"""``inference_workload`` and ``flowlens`` stay apart: neither imports the other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def imported_roots(package: str) -> dict[str, set[str]]:
    """Top-level modules each file of ``package`` imports (absolute imports only)."""
    found = {}
    for path in (ROOT / package).rglob("*.py"):
        roots = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                roots |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = roots
    return found


@pytest.mark.parametrize(("package", "forbidden"), [("inference_workload", "flowlens"),
                                                    ("flowlens", "inference_workload")])
def test_no_imports_across(package: str, forbidden: str) -> None:
    files = imported_roots(package)
    assert files, f"no sources found under {package}"
    assert [f for f, roots in files.items() if forbidden in roots] == []
