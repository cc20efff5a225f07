"""The per-node agent: exact per-flow accounting, node counters, export."""
