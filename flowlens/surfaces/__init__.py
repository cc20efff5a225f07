"""What users touch: the command line (and, later, the API and console)."""
