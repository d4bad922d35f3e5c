"""Attention-scheme modules that `MultiHeadAttention` runs between its projections.

One module per scheme (dense, local, fovea, FMA, LongT5 transient-global), each
owning its decode-time cache; `fovea_jax.networks.schemes` maps names to them.
"""
