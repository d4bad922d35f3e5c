"""The network configuration: one frozen dataclass, configured from gin.

Gin (files import `from fovea_jax.networks import network` and
`from fovea_jax.layers.schemes import fovea`), e.g.
```
network.Config.vocab_size = 32128
network.Config.emb_dim = 768
network.Config.attention = @fovea.Fovea()
fovea.Fovea.block_len = 128
```
`attention` is the long-context scheme: encoder self-attention of the
encoder-decoder (decoder self- and cross-attention stay dense there), or the
self-attention of every layer of the decoder-only LM (its causal variant).
"""
import dataclasses
from typing import Any, Optional, Sequence

import gin
import jax.numpy as jnp

from fovea_jax.layers import schemes

_DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16,
           'float16': jnp.float16}


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Config:
  """T5.1.1 / LongT5 dimensions plus the attention scheme."""
  vocab_size: int = 32128
  # Activation/compute dtype ('float32', 'bfloat16' or a jnp dtype); params f32.
  dtype: Any = 'float32'
  emb_dim: int = 512
  num_heads: int = 8
  # Fewer key/value heads than query heads gives grouped-query attention.
  num_kv_heads: Optional[int] = None
  num_encoder_layers: int = 6
  num_decoder_layers: int = 6
  head_dim: int = 64
  mlp_dim: int = 2048
  mlp_activations: Sequence[str] = ('gelu', 'linear')
  dropout_rate: float = 0.1
  # T5.1.1 / LongT5 use separate output logits; True ties them to the embedding
  # (original T5) and rescales by 1/sqrt(emb_dim).
  logits_via_embedding: bool = False
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  attention: Any = 'dense'
  # Self-attention keys mixed with the previous token's key, per kv head
  # (Olsson et al. 2022's smeared keys): a lookup of "the token after this
  # one" then needs one layer instead of two, and forms early in training.
  smeared_keys: bool = False
  # Attention backend: None (best for the device), 'reference', 'xla', 'pallas'.
  implementation: Optional[str] = None

  def __post_init__(self):
    for name in ('vocab_size', 'emb_dim', 'num_heads', 'head_dim', 'mlp_dim'):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f'network.Config.{name} must be a positive integer, got '
                         f'{value!r}.')
    for name in ('num_encoder_layers', 'num_decoder_layers'):
      if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
        raise ValueError(f'network.Config.{name} must be an integer >= 0.')
    if not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f'network.Config.dropout_rate must be in [0, 1), got '
                       f'{self.dropout_rate}.')
    if isinstance(self.dtype, str) and self.dtype not in _DTYPES:
      raise ValueError(f'network.Config.dtype {self.dtype!r} is not one of '
                       f'{sorted(_DTYPES)}.')
    kv_heads = self.num_kv_heads or self.num_heads
    if self.num_heads % kv_heads:
      raise ValueError(f'network.Config.num_heads ({self.num_heads}) must be a '
                       f'multiple of num_kv_heads ({kv_heads}).')
    object.__setattr__(self, 'mlp_activations', tuple(self.mlp_activations))
    schemes.get_scheme(self.attention)  # fail early on an unknown name

  @property
  def activation_dtype(self):
    return _DTYPES[self.dtype] if isinstance(self.dtype, str) else self.dtype

  @property
  def scheme(self) -> schemes.Scheme:
    return schemes.get_scheme(self.attention)
