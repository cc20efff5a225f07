"""One module per finding rule; each takes a :class:`~flowlens.analysis.context.Context`."""
