"""How much of the dense score matrix a network's attention computes.

The network's scheme (`network.Config.attention`) counts the (query, key) pairs
its stack computes (`Scheme.stack_pairs`: the mean over layers of each layer's
module's `attended_pairs`, as tools/benchmark_attention.py reads them). The
result is relative to the dense score matrix of the same masking: n*n pairs, or
for a causal stack the n*(n+1)/2 pairs on and below the diagonal, so dense is
1.0 either way. Layouts count whole key tiles, so a local scheme's fraction
includes the masked corners of its edge tiles.
"""
from fovea_jax.layers import schemes


def stack_fraction(scheme, num_layers: int, length: int,
                   causal: bool) -> float:
  """Mean over the stack's layers of computed pairs / dense pairs."""
  scheme = schemes.get_scheme(scheme)
  dense = schemes.Dense().attended_pairs(length, causal)
  return float(min(1.0, scheme.stack_pairs(num_layers, length, causal) / dense))
