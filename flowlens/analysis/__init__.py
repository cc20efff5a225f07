"""Analysis: the meaning of filters, views, rankings and map identities, independent of any engine."""
