"""Inference signals: what users feel (TTFT, latency, tokens/s, model loads), measured or scraped."""
