"""Lost destroy events (ENOBUFS) are counted, never double counted, and the agent recovers."""

from __future__ import annotations

import time

from flowlens.agent.sampling.accounting import MISSING_CYCLES_BEFORE_LOST
from flowlens.agent.sampling.sampler import Sampler
from flowlens.model.flows import CLIENT
from tests.agent.flowsum import total
from tests.traffic import Server, open_socket, request


def test_overflowing_the_event_socket_is_counted_and_recovered(netns: str):
    sampler = Sampler(event_buffer=4096)  # a few notifications' worth: it must overflow
    sampler.start()
    server = Server(netns, "127.0.0.1", 8443).start()
    try:
        socks = []
        for _ in range(300):
            sock = open_socket(netns)
            sock.connect(("127.0.0.1", 8443))
            sock.sendall(b"z" * 10)
            socks.append(sock)
        time.sleep(0.2)
        results = [sampler.cycle()]  # every connection is tracked now
        for sock in socks:
            sock.close()
        time.sleep(0.3)
        results += [sampler.cycle() for _ in range(MISSING_CYCLES_BEFORE_LOST + 1)]
        assert sampler.overflows > 0
        counted = total(results, netns, CLIENT, 8443)
        assert counted.sent_bytes == 3000, "bytes were acknowledged before the closes: nothing lost"
        # A destroy event brings a socket's last counters; each socket whose event was lost is
        # counted as lost exactly once, and none is counted twice.
        assert 0 < sampler.lost_events <= 600
        assert counted.connections_established == 300

        # Recovered: new connections after the overflow are counted exactly.
        assert request(netns, "127.0.0.1", 8443, 777) == 0
        time.sleep(0.1)
        after = sampler.cycle()
        assert total([after], netns, CLIENT, 8443).sent_bytes == 777
    finally:
        server.stop()
        sampler.close()
