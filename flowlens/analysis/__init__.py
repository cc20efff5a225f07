"""Analysis: findings and diagnosis built on the flow store's answers. (What filters, views, rankings
and map identities mean lives in ``flowlens.model``, below the collector, so every engine shares it.)"""
