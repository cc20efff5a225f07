"""Collector: receives agent reports, enriches them and keeps them in a flow store."""
