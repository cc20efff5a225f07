"""What the agent reads from the kernel each cycle: flows (sock_diag, destroy events), node
counters, ClusterIP backends. Never imports the export side or prometheus_client."""
