"""Namespaces that come and go while the agent runs are attached, counted and released."""

from __future__ import annotations

import os
import time
import uuid

from flowlens.agent.sampling.sampler import Sampler
from flowlens.model.flows import CLIENT, SERVER
from tests.agent.flowsum import total
from tests.conftest import delete_namespace, make_namespace, ns_exec, sh
from tests.traffic import Server, request


def host_link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def test_new_namespace_is_picked_up_counted_from_zero_and_released():
    sampler = Sampler()
    sampler.start()
    name = make_namespace()
    host_end = f"flt{uuid.uuid4().hex[:8]}"
    try:
        # A veth whose other end lives in the namespace: it exists exactly as long as the namespace.
        sh("ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", name)
        sampler.cycle()
        labels = {w.ns.label for w in sampler.watches.values()}
        assert name in labels

        server = Server(name, "127.0.0.1", 8080, reply=7).start()
        assert request(name, "127.0.0.1", 8080, 999) == 7
        server.stop()
        time.sleep(0.05)
        result = sampler.cycle()
        assert total([result], name, CLIENT, 8080).sent_bytes == 999
        assert total([result], name, SERVER, 8080).received_bytes == 999

        delete_namespace(name)
        # The agent's sockets keep the namespace (and so the veth) alive until it lets go.
        assert host_link_exists(host_end)
        sampler.cycle()
        assert name not in {w.ns.label for w in sampler.watches.values()}
        deadline = time.time() + 5
        while host_link_exists(host_end) and time.time() < deadline:
            time.sleep(0.05)
        assert not host_link_exists(host_end), "the released namespace should be destroyed"
    finally:
        sampler.close()
        delete_namespace(name)
        sh("ip", "link", "del", host_end, check=False)


def test_sockets_closing_as_their_namespace_vanishes_are_still_counted():
    sampler = Sampler()
    sampler.start()
    name = make_namespace()
    try:
        sampler.cycle()
        server = Server(name, "127.0.0.1", 8081).start()
        ns_exec(name, "true")
        assert request(name, "127.0.0.1", 8081, 4096) == 0
        server.stop()
        delete_namespace(name)
        result = sampler.cycle()  # released in this cycle; its last events still count
        assert total([result], name, CLIENT, 8081).sent_bytes == 4096
    finally:
        sampler.close()
        delete_namespace(name)


def test_an_unreadable_namespace_is_skipped_and_the_others_carry_on(tmp_path):
    # A /run/netns entry that is not a namespace (a stale file) is ignored, not fatal.
    run_netns = tmp_path / "netns"
    run_netns.mkdir()
    (run_netns / "stale").write_text("")
    sampler = Sampler(run_netns=str(run_netns))
    sampler.start()
    try:
        result = sampler.cycle()
        assert "stale" not in {w.ns.label for w in sampler.watches.values()}
        assert result.namespaces >= 1
    finally:
        sampler.close()
