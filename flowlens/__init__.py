"""flowlens: Kubernetes-aware network flow observability for ML inference.

Data flows one way through the package: ``kernel`` (netlink, namespaces, counters) →
``agent`` (accounting, export) → ``surfaces`` (CLI). ``model`` holds the typed records that
cross those layers.
"""

__version__ = "0.1.0"
