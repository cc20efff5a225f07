"""The TCP MIB of one namespace, from the ``Tcp:`` lines of ``/proc/net/snmp``.

The file is opened once, through ``/proc/thread-self``, while the calling thread is inside the
namespace: an open proc net file keeps answering for the namespace it was opened in, and
``pread`` at offset 0 makes the kernel render it afresh, so later reads need no ``setns``.
``/proc/self`` would be wrong here: from any thread but the main one it names the main
thread's namespace, not the caller's.
"""

from __future__ import annotations

import os

from flowlens.model.counters import TcpMib
from flowlens.model.errors import FlowlensError

SNMP_PATH = "/proc/thread-self/net/snmp"

# The /proc/net/snmp columns flowlens reads, in TcpMib field order.
TCP_COLUMNS = (
    "ActiveOpens",
    "PassiveOpens",
    "AttemptFails",
    "EstabResets",
    "InSegs",
    "OutSegs",
    "RetransSegs",
    "InErrs",
    "OutRsts",
)

# The file is about 1.5 KiB; one read of a buffer this large returns all of it rendered in one
# pass, so the numbers are one consistent snapshot.
_READ_SIZE = 64 * 1024


class MibParseError(FlowlensError):
    """A /proc/net/snmp text did not have the shape the kernel gives it."""


def parse_tcp_mib(text: str) -> TcpMib:
    """The TCP counters of a /proc/net/snmp text, looked up by column name."""
    rows = [line.split() for line in text.splitlines() if line.startswith("Tcp:")]
    if len(rows) != 2:
        raise MibParseError(
            f"/proc/net/snmp should have one Tcp: header line and one Tcp: value line, found {len(rows)} lines"
        )
    header, values = rows
    if len(header) != len(values):
        raise MibParseError(
            f"/proc/net/snmp Tcp: header has {len(header) - 1} columns but the values line has {len(values) - 1}"
        )
    table = dict(zip(header[1:], values[1:], strict=True))
    numbers: list[int] = []
    for column in TCP_COLUMNS:
        raw = table.get(column)
        if raw is None:
            raise MibParseError(f"/proc/net/snmp Tcp: lines lack the {column} column")
        try:
            numbers.append(int(raw))
        except ValueError:
            raise MibParseError(f"/proc/net/snmp Tcp: {column} is {raw!r}, not an integer") from None
    return TcpMib(*numbers)


class TcpMibReader:
    """Reads the TCP MIB of the namespace the calling thread was in when this was created.

    The open file holds a reference on that namespace, keeping it alive (and readable) after
    ``ip netns del`` until :meth:`close`.
    """

    def __init__(self, path: str = SNMP_PATH) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._size = _READ_SIZE

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def read(self) -> TcpMib:
        while True:
            data = os.pread(self._fd, self._size, 0)
            if len(data) < self._size:
                return parse_tcp_mib(data.decode("ascii", "replace"))
            # A longer text than expected: a second pread would render it again and could
            # splice two snapshots, so read it whole with a bigger buffer instead.
            self._size *= 2
