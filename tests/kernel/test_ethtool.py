"""EthtoolStats against ``ethtool -S`` / ``ethtool -i`` in real namespaces."""

from __future__ import annotations

import errno
import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from flowlens.kernel.ethtool import ENA_ALLOWANCE_STATS, EthtoolStats, allowance_exceeded
from flowlens.kernel.netns import entered
from flowlens.model.errors import FlowlensError
from tests.conftest import NsPair, ns_exec

pytestmark = pytest.mark.kernel


@contextmanager
def ethtool_in(ns: str) -> Iterator[EthtoolStats]:
    with entered(f"/run/netns/{ns}"):
        reader = EthtoolStats()
    try:
        yield reader
    finally:
        reader.close()


def ethtool_s(ns: str, ifname: str) -> dict[str, int]:
    lines = ns_exec(ns, "ethtool", "-S", ifname).stdout.splitlines()
    assert lines[0].strip() == "NIC statistics:"
    stats = {}
    for line in lines[1:]:
        name, value = line.strip().rsplit(": ", 1)
        stats[name] = int(value)
    return stats


def test_veth_stats_match_ethtool(ns_pair: NsPair) -> None:
    # Quiet the link: XDP-less veth counters only move on drops, but keep IPv6 chatter out anyway.
    for ns in (ns_pair.a, ns_pair.b):
        ns_exec(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
    with ethtool_in(ns_pair.a) as reader:
        for _ in range(10):
            ours, theirs, again = reader.stats("veth0"), ethtool_s(ns_pair.a, "veth0"), reader.stats("veth0")
            if ours == again:
                break
        assert ours == theirs
    assert len(ours) > 1 and list(ours) == list(theirs)  # same names, same order
    (peer,) = json.loads(ns_exec(ns_pair.b, "ip", "-j", "link", "show", "veth0").stdout)
    assert ours["peer_ifindex"] == peer["ifindex"]


def test_driver_names_match_ethtool(ns_pair: NsPair) -> None:
    info = dict(
        line.split(": ", 1) for line in ns_exec(ns_pair.a, "ethtool", "-i", "veth0").stdout.splitlines()
        if ": " in line
    )
    with ethtool_in(ns_pair.a) as reader:
        assert reader.driver("veth0") == info["driver"] == "veth"


def test_loopback_has_no_stats(netns: str) -> None:
    # The tool agrees there is nothing to show.
    assert ns_exec(netns, "ethtool", "-S", "lo", check=False).returncode != 0
    with ethtool_in(netns) as reader:
        assert reader.stats("lo") == {}
        assert reader.driver("lo") == ""


def test_missing_and_vanished_interfaces_give_nothing(ns_pair: NsPair) -> None:
    with ethtool_in(ns_pair.a) as reader:
        assert reader.stats("veth0")
        ns_exec(ns_pair.a, "ip", "link", "del", "veth0")
        assert reader.stats("veth0") == {}
        assert reader.driver("veth0") == ""
        assert reader.stats("no-such-if") == {}
        assert reader.stats("x" * 40) == {}  # longer than IFNAMSIZ: no interface can have it


def test_reader_answers_for_its_own_namespace(ns_pair: NsPair, netns: str) -> None:
    with ethtool_in(ns_pair.a) as in_pair, ethtool_in(netns) as elsewhere:
        assert in_pair.driver("veth0") == "veth"
        assert elsewhere.stats("veth0") == {}  # the lone namespace has no veth0
        assert elsewhere.driver("veth0") == ""


def test_allowance_exceeded_picks_the_ena_counters() -> None:
    ena = {"tx_timeout": 0, "bw_in_allowance_exceeded": 3, "pps_allowance_exceeded": 7,
           "conntrack_allowance_exceeded": 0, "queue_0_tx_cnt": 99}
    assert allowance_exceeded(ena) == {"bw_in_allowance_exceeded": 3, "pps_allowance_exceeded": 7,
                                       "conntrack_allowance_exceeded": 0}
    full = {name: i for i, name in enumerate(ENA_ALLOWANCE_STATS)}
    assert allowance_exceeded(full) == full
    assert allowance_exceeded({"peer_ifindex": 2, "rx_queue_0_drops": 0}) == {}
    assert allowance_exceeded({}) == {}


def test_ena_allowance_names() -> None:
    assert ENA_ALLOWANCE_STATS == (
        "bw_in_allowance_exceeded", "bw_out_allowance_exceeded", "pps_allowance_exceeded",
        "conntrack_allowance_exceeded", "linklocal_allowance_exceeded",
    )


def test_unexpected_errors_are_flowlens_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    reader = EthtoolStats()
    try:
        monkeypatch.setattr(fcntl, "ioctl", broken)
        with pytest.raises(FlowlensError, match="lo"):
            reader.stats("lo")
    finally:
        reader.close()
