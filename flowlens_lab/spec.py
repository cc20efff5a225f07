"""What the lab builds: zones, node types, pools and services, with the default scenario.

Bandwidths are the instance types' published figures scaled down 100× for one machine
(g5.2xlarge "up to 10 Gbps" → 100 Mbit/s).
"""

from __future__ import annotations

from dataclasses import dataclass, field

PREFIX = "fll-"
SCALE = 100  # real bandwidth / lab bandwidth


@dataclass(frozen=True, slots=True)
class NodeType:
    name: str
    real_gbps: float
    gpus: int
    pods: int  # how many inference (GPU) pods fit; other pods are not limited

    @property
    def mbit(self) -> float:
        return self.real_gbps * 1000 / SCALE


NODE_TYPES = {t.name: t for t in (
    NodeType("g5.xlarge", 10, 1, 1), NodeType("g5.2xlarge", 10, 1, 1), NodeType("g5.4xlarge", 25, 1, 1),
    NodeType("g5.8xlarge", 25, 1, 1), NodeType("g5.12xlarge", 40, 4, 4), NodeType("g6.2xlarge", 10, 1, 1),
    NodeType("g6.4xlarge", 25, 1, 1), NodeType("m5.xlarge", 10, 0, 0),
)}


@dataclass(frozen=True, slots=True)
class Zone:
    name: str
    index: int  # addresses: nodes 10.<index>.0.x, pods of node k 10.<index>.<k>.x

    @property
    def gateway(self) -> str:
        return f"10.{self.index}.0.1"


@dataclass(slots=True)
class LabSpec:
    zones: tuple[Zone, ...] = (Zone("us-east-1a", 1), Zone("us-east-1b", 2))
    region: str = "us-east-1"
    runtime_zone: str = "us-east-1a"
    ui_zone: str = "us-east-1b"
    runtime_type: str = "g5.2xlarge"
    ui_type: str = "m5.xlarge"
    ui_replicas: int = 3
    runtime_min: int = 0
    runtime_max: int = 5
    target_per_replica: int = 10
    cooldown_s: float = 300.0
    polling_s: float = 1.0
    weights_mib: int = 256
    visibility_timeout_s: int = 30
    max_receives: int = 3
    agent_interval_s: float = 5.0
    # Generations take as long as on the reference's GPU (SDXL-Turbo on an A10G: 7.6 steps/s),
    # so the queue backs up and the autoscaler scales out as in the scenario, whatever the CPU.
    gpu_steps_per_second: float = 7.6
    topology_aware: bool = False
    service_cidr_base: str = "10.96.0."
    aws_subnet: str = "10.9.0."
    extra: dict[str, str] = field(default_factory=dict)

    def zone(self, name: str) -> Zone:
        for zone in self.zones:
            if zone.name == name:
                return zone
        raise KeyError(name)


AWS_GATEWAY = "10.9.0.1"
AWS_SERVICES_IP = "10.9.0.10"  # the S3/SNS/SQS server answers on each service's address
SERVICE_IPS = {"S3": "10.9.0.10", "SQS": "10.9.0.11", "SNS": "10.9.0.12"}
API_IP = "10.9.0.20"  # the task API front end
COLLECTOR_PORT = 9102
AWS_PORT = 4566
API_PORT = 8000
RUNTIME_PORT = 8080
AGENT_PORT = 9101
