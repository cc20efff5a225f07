"""The instance bandwidth table is data: shipped AWS figures, overridden or extended by a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowlens.model.bandwidth import default_table, load_table
from flowlens.model.errors import ConfigError


def test_the_shipped_table_has_the_published_figures() -> None:
    table = default_table()
    assert (table.of("g5.2xlarge"), table.of("g5.4xlarge"), table.of("g6.48xlarge")) == (10, 25, 100)
    assert table.mbit("g5.2xlarge") == 10_000
    assert table.of("x9.huge") is None and table.mbit("x9.huge") is None


def test_larger_types_are_of_the_same_family_smallest_and_cheapest_first() -> None:
    assert default_table().larger_types("g5.2xlarge")[:3] == [("g5.4xlarge", 25), ("g5.8xlarge", 25),
                                                              ("g5.16xlarge", 25)]
    assert default_table().larger_types("g5.48xlarge") == []
    assert default_table().larger_types("unknown.type") == []


def test_a_file_replaces_and_adds_types(tmp_path: Path) -> None:
    path = tmp_path / "bw.yaml"
    path.write_text("g5.2xlarge: 0.1\np5.48xlarge: 3200\n")
    table = load_table(str(path))
    assert table.of("g5.2xlarge") == 0.1 and table.of("p5.48xlarge") == 3200 and table.of("g5.4xlarge") == 25
    assert table.mbit("g5.2xlarge") == 100


@pytest.mark.parametrize(("text", "says"), [
    ("g5.2xlarge: fast\n", "`g5.2xlarge: fast` is not an instance type with a positive number of Gbps"),
    ("g5.2xlarge: -1\n", "`g5.2xlarge: -1` is not an instance type with a positive number of Gbps"),
    ("g5.2xlarge: .nan\n", "`g5.2xlarge: nan` is not an instance type with a positive number of Gbps"),
    ("- g5.2xlarge\n", "expected a mapping of instance type to Gbps"),
    ("g5: [\n", "not YAML"),
])
def test_a_bad_file_is_refused_with_what_is_wrong(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "bw.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"^" + str(path)) as caught:
        load_table(str(path))
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the instance bandwidth file"):
        load_table(str(tmp_path / "absent.yaml"))
