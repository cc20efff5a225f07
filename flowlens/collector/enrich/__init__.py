"""Enrichment: who is behind an address at a time (Kubernetes inventory, cloud IP ranges)."""
