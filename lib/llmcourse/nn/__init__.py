"""The building blocks of a Transformer (chapters 01–03): attention, positions, normalisation,
the feed-forward network, the block, and the KV cache.
"""
