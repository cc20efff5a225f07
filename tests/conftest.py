"""Shared fixtures: real network namespaces joined by veth, always removed afterwards."""

from __future__ import annotations

import itertools
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

_counter = itertools.count()


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True)


def ns_exec(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ip", "netns", "exec", ns, *args, check=check)


@dataclass
class NsPair:
    """Two namespaces ``a`` (10.x.y.1) and ``b`` (10.x.y.2) joined by a veth pair."""

    a: str
    b: str
    ip_a: str
    ip_b: str
    veth_a: str = "veth0"
    veth_b: str = "veth0"
    extra: list[str] = field(default_factory=list)


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")


def make_namespace(prefix: str = "fltest") -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    sh("ip", "netns", "add", name)
    ns_exec(name, "ip", "link", "set", "lo", "up")
    return name


def delete_namespace(name: str) -> None:
    sh("ip", "netns", "pids", name, check=False)
    for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
        sh("kill", "-9", pid, check=False)
    sh("ip", "netns", "del", name, check=False)


@pytest.fixture
def netns() -> Iterator[str]:
    """One fresh namespace with loopback up."""
    _require_root()
    name = make_namespace()
    try:
        yield name
    finally:
        delete_namespace(name)


@pytest.fixture
def ns_pair() -> Iterator[NsPair]:
    """Two namespaces joined by a veth pair, addresses in a /24 unique to this test."""
    _require_root()
    a, b = make_namespace(), make_namespace()
    subnet = 100 + next(_counter) % 100
    pair = NsPair(a, b, f"10.250.{subnet}.1", f"10.250.{subnet}.2")
    try:
        sh("ip", "link", "add", "veth0", "netns", a, "type", "veth", "peer", "name", "veth0", "netns", b)
        for ns, ip in ((a, pair.ip_a), (b, pair.ip_b)):
            ns_exec(ns, "ip", "addr", "add", f"{ip}/24", "dev", "veth0")
            ns_exec(ns, "ip", "link", "set", "veth0", "up")
        yield pair
    finally:
        delete_namespace(a)
        delete_namespace(b)
