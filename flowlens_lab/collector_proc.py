"""The lab's collector: ``python -m flowlens_lab.collector_proc``, started by ``lab up``.

It serves the flowlens API on 127.0.0.1 for the user's `flowlens map|top|diagnose`, and on the
zone router's addresses (a socket opened in the fabric namespace) for the node agents' reports.
Its inventory is the lab's Kubernetes-shaped file, its cloud ranges the lab's regional services.
"""

from __future__ import annotations

import json
import logging
import socket

import yaml

from flowlens.collector.service import CollectorConfig
from flowlens.kernel.netns import entered
from flowlens.model.bandwidth import default_table
from flowlens.surfaces.collector_cli import run_until_signalled, serve_collector
from flowlens_lab import aws_side, inventory, network
from flowlens_lab import state as lab_state
from flowlens_lab.spec import COLLECTOR_PORT, SCALE


def fabric_socket() -> socket.socket:
    with entered(f"/run/netns/{network.FABRIC}"):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY from asyncio
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", COLLECTOR_PORT))
    sock.listen(128)
    return sock


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    state = lab_state.read()
    region = state["spec"]["region"]
    folder = lab_state.lab_dir()
    ranges = folder / "ip-ranges.json"
    ranges.write_text(json.dumps(aws_side.ip_ranges(region), indent=1))
    bandwidth = folder / "instance-bandwidth.yaml"  # the lab's links run SCALE times slower than AWS's
    bandwidth.write_text(yaml.safe_dump({t: g / SCALE for t, g in default_table().gbps.items()}, sort_keys=False))
    config = CollectorConfig(port=COLLECTOR_PORT, store=str(folder / "flowlens.duckdb"),
                             inventory_file=str(inventory.inventory_path()), ip_ranges=str(ranges), region=region,
                             instance_bandwidth=str(bandwidth))
    run_until_signalled(serve_collector(config, extra_sockets=(fabric_socket(),)))


if __name__ == "__main__":
    main()
