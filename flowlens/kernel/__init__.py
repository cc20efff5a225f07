"""Kernel sources: netlink, sock_diag, network namespaces and node counters.

Kernel field names (``tcpi_*``, ``IFLA_*``) stay inside this package; what leaves it are the
typed records of :mod:`flowlens.model`.
"""
