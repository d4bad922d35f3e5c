"""How much of the dense score matrix a network's attention computes.

For each self-attention layer of a stack, the module the network's scheme
(`network.Config.attention`) runs there (`Scheme.for_layer`) is mapped to the
TreeLayout the XLA path runs, and the layout's computed (query, key) pairs are
counted, as tools/benchmark_attention.py does; layers are averaged. The result is
relative to the dense score matrix of the same masking: n*n pairs, or for a causal
stack the n*(n+1)/2 pairs on and below the diagonal, so dense is 1.0 either way.
Layouts count whole key tiles, so a local scheme's fraction includes the masked
corners of its edge tiles.
"""
import numpy as np

from fovea_jax import attention


def _transient_global_pairs(length, radius, group, causal):
  """Local window pairs plus, per query, the global (group-sum) tokens it sees."""
  i = np.arange(length)
  if causal:
    local = np.minimum(i, radius) + 1
    globals_seen = i // group + 1
  else:
    local = np.minimum(i, radius) + np.minimum(length - 1 - i, radius) + 1
    globals_seen = np.full(length, -(-length // group))
  return float((local + globals_seen).sum())


def layer_pairs(module, length: int, causal: bool) -> float:
  """Computed (query, key) pairs of one scheme module at `length` tokens."""
  name = module.scheme_name
  if name == 'dense':
    return length * (length + 1) / 2 if causal else float(length * length)
  if name == 'local':
    layout = attention.local_layout(length, window=module.window,
                                    block_len=module.block_len, causal=causal)
  elif name == 'fovea':
    layout = attention.fovea_layout(
        length, block_len=module.block_len, wing=module.wing, edge=module.edge,
        coarse_weight=module.coarse_weight, max_level=module.max_level,
        causal=causal)
  elif name == 'fma':
    layout = attention.fma_layout(length, fine_len=module.fine_len,
                                  rank=module.rank, downsample=module.downsample,
                                  causal=causal)
  elif name == 'longt5_tglobal':
    return _transient_global_pairs(length, module.local_radius,
                                   module.global_block_size, causal)
  else:
    raise ValueError(f'No attended-fraction rule for scheme {name!r}; add '
                     'one to experiments/attended_fraction.py.')
  return layout.attended_fraction() * length * length


def stack_fraction(scheme, num_layers: int, length: int,
                   causal: bool) -> float:
  """Mean over the stack's layers of computed pairs / dense pairs."""
  dense = length * (length + 1) / 2 if causal else float(length * length)
  pairs = [layer_pairs(scheme.for_layer(i, num_layers, causal)(),
                       length, causal) for i in range(num_layers)]
  return float(min(1.0, np.mean(pairs) / dense))
