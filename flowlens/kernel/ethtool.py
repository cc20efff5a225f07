"""NIC driver statistics through the SIOCETHTOOL ioctl (what ``ethtool -i`` and ``ethtool -S`` show).

On AWS the ENA driver counts the packets the hypervisor dropped because an instance exceeded
its bandwidth, packet-rate or conntrack allowance; nothing else on the node reports those, so
they are read here. Like every ioctl on a socket, the answer comes from the namespace the
socket was opened in. Command buffers are ctypes arrays whose address travels in ``ifr_data``.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import socket
import struct

from flowlens.model.errors import FlowlensError, PrivilegeError
from flowlens.model.vocabulary import ALLOWANCE_STATS

SIOCETHTOOL = 0x8946
IFNAMSIZ = 16

ETHTOOL_GDRVINFO = 0x00000003
ETHTOOL_GSTRINGS = 0x0000001B
ETHTOOL_GSTATS = 0x0000001D
ETHTOOL_GSSET_INFO = 0x00000037
ETH_SS_STATS = 1
ETH_GSTRING_LEN = 32

# struct ifreq: the name, then a union whose largest member (struct ifmap) makes it 24 bytes
# on 64-bit; only ifr_data, the first pointer of the union, is used.
IFREQ = struct.Struct(
    "@"
    "16s"  # ifr_name
    "P"  # ifr_data
)
IFREQ_SIZE = 40

# struct ethtool_drvinfo
ETHTOOL_DRVINFO = struct.Struct(
    "="
    "I"  # cmd
    "32s"  # driver
    "32s"  # version
    "32s"  # fw_version
    "32s"  # bus_info
    "32s"  # erom_version
    "12s"  # reserved2
    "I"  # n_priv_flags
    "I"  # n_stats
    "I"  # testinfo_len
    "I"  # eedump_len
    "I"  # regdump_len
)
# struct ethtool_sset_info, with room for the one data[] entry a single-bit mask asks for
ETHTOOL_SSET_INFO = struct.Struct(
    "="
    "I"  # cmd
    "I"  # reserved
    "Q"  # sset_mask
    "I"  # data[0]
)
# struct ethtool_gstrings header; data[len * ETH_GSTRING_LEN] follows
ETHTOOL_GSTRINGS_HDR = struct.Struct(
    "="
    "I"  # cmd
    "I"  # string_set
    "I"  # len
)
# struct ethtool_stats header; u64 data[n_stats] follows
ETHTOOL_STATS_HDR = struct.Struct(
    "="
    "I"  # cmd
    "I"  # n_stats
)

# The kernel ignores the length we pass to GSTRINGS/GSTATS and writes as many entries as the
# driver counts at that moment, which can grow between our calls (e.g. ethtool -L adds queues).
# Spare room keeps such a race from writing past our buffer; the count mismatch is then retried.
_SPARE_ENTRIES = 256
_ATTEMPTS = 3

# Statistics the AWS ENA driver exposes for packets shaped or dropped by instance allowances.
ENA_ALLOWANCE_STATS = ALLOWANCE_STATS

# Errors that mean "this interface has nothing to report" rather than a fault of ours.
_NO_STATS = (errno.EOPNOTSUPP, errno.ENODEV, errno.ENXIO)


class EthtoolError(FlowlensError):
    """The kernel refused or garbled an ethtool request."""


def allowance_exceeded(stats: dict[str, int]) -> dict[str, int]:
    """The ENA allowance counters present in ``stats`` (empty for every other driver)."""
    return {name: stats[name] for name in ENA_ALLOWANCE_STATS if name in stats}


class EthtoolStats:
    """ethtool queries against the interfaces of the namespace this object was created in.

    Like any socket, it keeps that namespace alive until closed.
    """

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def close(self) -> None:
        self._sock.close()

    def driver(self, ifname: str) -> str:
        """The driver name ("veth", "ena"); "" when the interface has none or is gone."""
        buf = ctypes.create_string_buffer(ETHTOOL_DRVINFO.size)
        ETHTOOL_DRVINFO.pack_into(buf, 0, ETHTOOL_GDRVINFO, b"", b"", b"", b"", b"", b"", 0, 0, 0, 0, 0)
        if not self._ioctl(ifname, buf):
            return ""
        return _cstring(ETHTOOL_DRVINFO.unpack_from(buf, 0)[1])

    def stats(self, ifname: str) -> dict[str, int]:
        """Every ``ethtool -S`` counter by name; {} when the driver has none or the interface is gone."""
        for _ in range(_ATTEMPTS):
            count = self._stats_count(ifname)
            if not count:
                return {}
            names = self._stat_names(ifname, count)
            values = self._stat_values(ifname, count)
            if names is None or values is None:
                return {}
            if len(names) == count and len(values) == count:
                return dict(zip(names, values, strict=True))
        raise EthtoolError(f"the statistics of {ifname} kept changing shape while being read; try again")

    def _stats_count(self, ifname: str) -> int:
        buf = ctypes.create_string_buffer(ETHTOOL_SSET_INFO.size)
        ETHTOOL_SSET_INFO.pack_into(buf, 0, ETHTOOL_GSSET_INFO, 0, 1 << ETH_SS_STATS, 0)
        if not self._ioctl(ifname, buf):
            return 0
        _cmd, _reserved, mask, count = ETHTOOL_SSET_INFO.unpack_from(buf, 0)
        # Drivers without get_sset_count (loopback) succeed with the bit cleared.
        return count if mask & (1 << ETH_SS_STATS) else 0

    def _stat_names(self, ifname: str, count: int) -> list[str] | None:
        capacity = count + _SPARE_ENTRIES
        buf = ctypes.create_string_buffer(ETHTOOL_GSTRINGS_HDR.size + capacity * ETH_GSTRING_LEN)
        ETHTOOL_GSTRINGS_HDR.pack_into(buf, 0, ETHTOOL_GSTRINGS, ETH_SS_STATS, count)
        if not self._ioctl(ifname, buf):
            return None
        (_cmd, _set, n) = ETHTOOL_GSTRINGS_HDR.unpack_from(buf, 0)
        n = min(n, capacity)
        raw = buf.raw
        base = ETHTOOL_GSTRINGS_HDR.size
        return [_cstring(raw[base + i * ETH_GSTRING_LEN:base + (i + 1) * ETH_GSTRING_LEN]) for i in range(n)]

    def _stat_values(self, ifname: str, count: int) -> list[int] | None:
        capacity = count + _SPARE_ENTRIES
        buf = ctypes.create_string_buffer(ETHTOOL_STATS_HDR.size + capacity * 8)
        ETHTOOL_STATS_HDR.pack_into(buf, 0, ETHTOOL_GSTATS, count)
        if not self._ioctl(ifname, buf):
            return None
        (_cmd, n) = ETHTOOL_STATS_HDR.unpack_from(buf, 0)
        n = min(n, capacity)
        return list(struct.unpack_from(f"={n}Q", buf, ETHTOOL_STATS_HDR.size))

    def _ioctl(self, ifname: str, buf: ctypes.Array[ctypes.c_char]) -> bool:
        """Run one ethtool command in place on ``buf``; False when the interface has no answer."""
        name = ifname.encode()
        if not name or len(name) >= IFNAMSIZ or b"\0" in name:
            return False  # no interface can have this name, so it is as absent as a vanished one
        ifreq = bytearray(IFREQ_SIZE)
        IFREQ.pack_into(ifreq, 0, name, ctypes.addressof(buf))
        try:
            fcntl.ioctl(self._sock.fileno(), SIOCETHTOOL, ifreq)
        except OSError as err:
            if err.errno in _NO_STATS:
                return False
            if err.errno in (errno.EPERM, errno.EACCES):
                raise PrivilegeError(f"the kernel refused ethtool on {ifname}: run as root") from err
            raise EthtoolError(f"ethtool request on {ifname} failed: {err.strerror}") from err
        return True


def _cstring(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
