"""Instance network bandwidth, as data: the published figures for AWS types ship with flowlens
(``instance_bandwidth.yaml``); a file of the same shape overrides or extends them. Used for the
allowance a node can reach, expected model-load times and which larger type to recommend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from flowlens.model.errors import ConfigError

DEFAULT_FILE = "instance_bandwidth.yaml"


@dataclass(frozen=True, slots=True)
class BandwidthTable:
    """Gbps by instance type; the order of the entries is the order sizes are preferred in."""

    gbps: dict[str, float] = field(default_factory=dict)

    def of(self, instance_type: str) -> float | None:
        return self.gbps.get(instance_type)

    def mbit(self, instance_type: str) -> float | None:
        gbps = self.gbps.get(instance_type)
        return gbps * 1000 if gbps else None

    def larger_types(self, instance_type: str) -> list[tuple[str, float]]:
        """Types of the same family with more bandwidth, smallest first (the earlier listed of equals)."""
        own = self.gbps.get(instance_type)
        if own is None:
            return []
        order = list(self.gbps)
        same = [(t, g) for t, g in self.gbps.items() if family(t) == family(instance_type) and g > own]
        return sorted(same, key=lambda item: (item[1], order.index(item[0])))


def family(instance_type: str) -> str:
    return instance_type.split(".", 1)[0]


def parse_table(text: str, source: str) -> dict[str, float]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not YAML ({err.__class__.__name__}); "
                          "expected `instance-type: Gbps` lines") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of instance type to Gbps, e.g. `g5.2xlarge: 10`")
    table: dict[str, float] = {}
    for name, gbps in data.items():
        if (not isinstance(name, str) or isinstance(gbps, bool) or not isinstance(gbps, int | float)
                or not math.isfinite(gbps) or gbps <= 0):
            raise ConfigError(f"{source}: `{name}: {gbps}` is not an instance type with a positive number "
                              "of Gbps, e.g. `g5.2xlarge: 10`")
        table[name] = float(gbps)
    return table


def default_table() -> BandwidthTable:
    text = resources.files("flowlens.model").joinpath(DEFAULT_FILE).read_text()
    return BandwidthTable(parse_table(text, DEFAULT_FILE))


def load_table(path: str = "") -> BandwidthTable:
    """The shipped table, with the entries of ``path`` (when given) replacing or adding types."""
    table = default_table().gbps
    if path:
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ConfigError(f"cannot read the instance bandwidth file {path}: {err.strerror}") from None
        table = {**table, **parse_table(text, path)}
    return BandwidthTable(table)
