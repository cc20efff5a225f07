"""Render flow rows (see :mod:`flowlens.agent.export.flowview`) as a terminal table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_rate(bits: float) -> str:
    for unit in ("bit/s", "kbit/s", "Mbit/s", "Gbit/s"):
        if bits < 1000 or unit == "Gbit/s":
            return f"{bits:.0f} {unit}" if unit == "bit/s" else f"{bits:.1f} {unit}"
        bits /= 1000
    return f"{bits:.1f} Gbit/s"


def flows_table(rows: list[dict[str, Any]], limit: int, title: str) -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    for name, justify in (("netns", "left"), ("local", "left"), ("remote", "left"), ("port", "right"),
                          ("role", "left"), ("sent", "right"), ("recv", "right"), ("in rate", "right"),
                          ("retrans", "right"), ("rto", "right"), ("conn ok/fail", "right"),
                          ("socks", "right"), ("rtt ms", "right")):
        table.add_column(name, justify=justify, no_wrap=True)
    for row in rows[:limit]:
        rtt = row.get("rtt_seconds")
        table.add_row(
            escape(str(row["netns"])), escape(row["local_ip"]), escape(row["remote_ip"]), str(row["server_port"]),
            row["role"], human_bytes(row["sent_bytes"]), human_bytes(row["received_bytes"]),
            human_rate(row["received_bits_per_second"]), str(row["retransmitted_segments"]), str(row["rto"]),
            f"{row['connections_established']}/{row['connections_failed']}", str(row["active_sockets"]),
            f"{rtt * 1000:.2f}" if rtt is not None else "-",
        )
    if not rows:
        table.caption = "no TCP flows in the last interval"
    elif len(rows) > limit:
        table.caption = f"{len(rows) - limit} more flows not shown (--limit)"
    return table


def output_console() -> Console:
    """Where tables go: as wide as the terminal, or, into a pipe or a file, as wide as they
    need (names are never cut to fit 80 columns)."""
    console = Console()
    if not console.is_terminal:
        console = Console(width=100_000, soft_wrap=True)
    return console
