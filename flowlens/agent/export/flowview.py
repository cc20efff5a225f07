"""Flows as plain rows: one dict per flow of an interval, with the metrics' field names.

Shared by the agent's ``/flows`` endpoint and the ``flowlens flows`` command.
"""

from __future__ import annotations

from typing import Any

from flowlens.agent.sampling.sampler import CycleResult
from flowlens.model.flows import ADDITIVE_FIELDS


def interval_rows(result: CycleResult) -> list[dict[str, Any]]:
    seconds = max(result.end - result.start, 1e-9)
    rows = []
    for key, c in result.flows.items():
        rows.append({
            "netns": key.netns, "protocol": key.protocol, "local_ip": key.local_ip,
            "remote_ip": key.remote_ip, "server_port": key.server_port, "role": key.role,
            "service_ip": result.service_ips.get(key), "start": result.start, "end": result.end,
            **{name: getattr(c, name) for name in ADDITIVE_FIELDS if name not in ("rtt_sum_us", "rtt_samples")},
            "active_sockets": result.active_sockets.get(key, 0),
            "rtt_seconds": (c.rtt_sum_us / c.rtt_samples / 1e6) if c.rtt_samples else None,
            "sent_bits_per_second": c.sent_bytes * 8 / seconds,
            "received_bits_per_second": c.received_bytes * 8 / seconds,
        })
    for key, count in result.active_sockets.items():
        if key not in result.flows:  # idle but open connections are flows too
            rows.append({**{f: 0 for f in _COUNTER_FIELDS}, "netns": key.netns, "protocol": key.protocol,
                         "local_ip": key.local_ip, "remote_ip": key.remote_ip, "server_port": key.server_port,
                         "role": key.role, "start": result.start, "end": result.end,
                         "active_sockets": count, "rtt_seconds": None})
    rows.sort(key=lambda r: (-(r["retransmitted_segments"] + 2 * r["rto"] + 4 * r["connections_failed"]),
                             -(r["sent_bytes"] + r["received_bytes"])))
    return rows


_COUNTER_FIELDS = (*(name for name in ADDITIVE_FIELDS if name not in ("rtt_sum_us", "rtt_samples")),
                   "sent_bits_per_second", "received_bits_per_second")
