"""HTTP serving for the agent's and the collector's endpoints, hardened for an open network.

One place for what both servers must do the same way: timeouts on every connection, bounded
concurrency, bounded and timed request bodies, bearer tokens from files or the environment,
optional TLS, no version banners, a clean stop.
"""
