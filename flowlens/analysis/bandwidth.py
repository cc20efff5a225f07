"""Instance network bandwidth (published figures), for recommendations and expected load times."""

from __future__ import annotations

# Gbps; "up to" figures are bursts above a lower baseline (reference.md). g6 sizes follow g5.
INSTANCE_GBPS: dict[str, float] = {
    "g5.xlarge": 10, "g5.2xlarge": 10, "g5.4xlarge": 25, "g5.8xlarge": 25, "g5.12xlarge": 40,
    "g5.16xlarge": 25, "g5.24xlarge": 50, "g5.48xlarge": 100,
    "g6.xlarge": 10, "g6.2xlarge": 10, "g6.4xlarge": 25, "g6.8xlarge": 25, "g6.12xlarge": 40,
    "g6.16xlarge": 25, "g6.24xlarge": 50, "g6.48xlarge": 100,
    "m5.large": 10, "m5.xlarge": 10, "m5.2xlarge": 10, "m5.4xlarge": 10,
}


def family(instance_type: str) -> str:
    return instance_type.split(".", 1)[0]


def larger_types(instance_type: str) -> list[tuple[str, float]]:
    """Types of the same family with more bandwidth, smallest first."""
    own = INSTANCE_GBPS.get(instance_type)
    if own is None:
        return []
    order = list(INSTANCE_GBPS)  # sizes are listed smallest first: the cheaper of equal bandwidths wins
    same = [(t, g) for t, g in INSTANCE_GBPS.items() if family(t) == family(instance_type) and g > own]
    return sorted(same, key=lambda item: (item[1], order.index(item[0])))
