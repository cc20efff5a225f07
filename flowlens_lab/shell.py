"""Running the kernel's own tools (ip, tc, iptables, sysctl) for the lab, with clear errors."""

from __future__ import annotations

import subprocess

from flowlens.model.errors import FlowlensError


class LabError(FlowlensError):
    """The lab could not build or change something; the message names the command."""


def run(*args: str, check: bool = True, input_text: str | None = None) -> str:
    result = subprocess.run(args, capture_output=True, text=True, input=input_text)
    if check and result.returncode != 0:
        raise LabError(f"`{' '.join(args)}` failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def in_ns(ns: str, *args: str, check: bool = True, input_text: str | None = None) -> str:
    return run("ip", "netns", "exec", ns, *args, check=check, input_text=input_text)


def sysctl(ns: str, setting: str) -> None:
    in_ns(ns, "sysctl", "-qw", setting)
