"""What the agent makes of its readings: Prometheus families and series, the /flows rows,
reports to the collector."""
