"""Multi-head attention in the T5 layout with a pluggable attention scheme.

Projections (query, key, value, out) live here; what happens between them (dense,
local, fovea, ...) is the `scheme` module, built from `scheme_factory` so that
adding a scheme never adds a flag to this class. T5 folds
1/sqrt(head_dim) into the query init, so schemes are called with scale 1.
"""
import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from flax.linen import partitioning as nn_partitioning

from fovea_jax.attention import common as attention_common
from fovea_jax.layers import initializers
from fovea_jax.layers.dense import DenseGeneral
from fovea_jax.layers.schemes.base import AttentionInputs
from fovea_jax.layers.sharding import HEADS_AXES, constrain_activations
from fovea_jax.sharding import axis_names as ax


# The decode-time cross-attention cache is head-major: keys `[examples,
# kv_heads, length, head_dim]`, values `[examples, kv_heads, head_dim, length]`.
# These are the layouts XLA's CPU products read in place for one query row (the
# scores contract head_dim, the output contracts length); in the token-major
# layout of the other caches, or with length-major values, XLA transposes all of
# them at every step (at 16k keys: keys 5x, values 4x slower).
STATIC_KEY_AXES = (ax.CACHE_BATCH, ax.CACHE_HEADS, ax.CACHE_LENGTH, ax.CACHE_KV)
STATIC_VALUE_AXES = (ax.CACHE_BATCH, ax.CACHE_HEADS, ax.CACHE_KV,
                     ax.CACHE_LENGTH)


def static_kv_layout(key, value):
  """`[examples, length, kv_heads, d]` keys and values -> the cache layouts."""
  return jnp.einsum('enkd->eknd', key), jnp.einsum('enkd->ekdn', value)


def _static_attention(query, key, value, key_mask):
  """Softmax attention of `query [examples, decodes, heads, d]` over `key
  [examples, kv_heads, length, d]` and `value [examples, kv_heads, d, length]`
  (kv_heads divides heads); rows with no valid key give zeros, as
  `dot_product_attention`."""
  examples, decodes, heads, head_dim = query.shape
  kv_heads = key.shape[1]
  grouped = query.reshape(examples, decodes, kv_heads, heads // kv_heads,
                          head_dim)
  scores = jnp.einsum('erkgd,eknd->ekgrn', grouped, key,
                      preferred_element_type=jnp.float32)
  if key_mask is not None:
    scores = jnp.where(key_mask[:, None, None, None, :], scores,
                       attention_common.MASKED)
  weights = attention_common.safe_softmax_weights(scores)
  out = jnp.einsum('ekgrn,ekdn->erkgd', weights.astype(value.dtype), value,
                   preferred_element_type=jnp.float32)
  return out.reshape(examples, decodes, heads, head_dim).astype(query.dtype)


class MultiHeadAttention(nn.Module):
  """q from `inputs_q`, k/v from `inputs_kv`, `scheme_factory(name=...)` between.

  num_kv_heads (default num_heads) < num_heads gives grouped-query attention.
  static_kv: `inputs_kv` do not change while decoding (cross-attention over the
  encoder): with `decode=True` their keys and values are projected once, at the
  first step, into the cache, one copy per example, and every later step reads
  them from there for all of its example's decodes (beams, samples).
  smeared_keys (self-attention): key t becomes `s k_t + (1 - s) k_{t-1}`,
  `s = sigmoid(key_smear)` per kv head, learned (0.5 at init); no previous
  key at a segment's first token. Decoding keeps the last raw key in the
  cache.
  """
  num_heads: int
  head_dim: int
  scheme_factory: Callable[..., nn.Module]
  num_kv_heads: Optional[int] = None
  dtype: Any = jnp.float32
  implementation: Optional[str] = None
  static_kv: bool = False
  smeared_keys: bool = False

  @nn.compact
  def __call__(self, inputs_q, inputs_kv, *, key_mask=None, position_bias=None,
               stack_tables=None, q_segment_ids=None, kv_segment_ids=None,
               bidirectional_prefix=None, decode: bool = False):
    kv_heads = self.num_kv_heads or self.num_heads
    if self.num_heads % kv_heads:
      raise ValueError(f'num_heads ({self.num_heads}) must be a multiple of '
                       f'num_kv_heads ({kv_heads}).')
    kernel_axes = (ax.EMBED, ax.HEADS, ax.KV)
    # T5: variance 1/(embed * head_dim) for the query, i.e. the usual fan-in
    # init with attention's 1/sqrt(head_dim) folded in; schemes use scale 1.
    query_init = initializers.t5_kernel_init(1.0 / self.head_dim, (0,))
    projection = functools.partial(DenseGeneral, axis=-1, kernel_axes=kernel_axes,
                                   dtype=self.dtype)
    query = projection((self.num_heads, self.head_dim), kernel_init=query_init,
                       name='query')(inputs_q)
    query = constrain_activations(query, HEADS_AXES)
    out_proj = DenseGeneral(inputs_q.shape[-1], axis=(-2, -1),
                            kernel_axes=(ax.HEADS, ax.KV, ax.EMBED),
                            dtype=self.dtype, name='out')
    kv_features = (kv_heads, self.head_dim)
    if (decode and self.static_kv and
        self.has_variable('cache', 'cached_static_key')):
      return out_proj(self._static_kv_step(query, inputs_kv, projection,
                                           kv_features, key_mask))
    key_proj = projection(kv_features, name='key')
    value_proj = projection(kv_features, name='value')
    key, value = key_proj(inputs_kv), value_proj(inputs_kv)
    if self.smeared_keys:
      key = self._smear(key, kv_segment_ids, decode)
    if decode and self.static_kv:  # the call that creates the cache
      cached = static_kv_layout(key, value)
      for part, array, axes in zip(('key', 'value'), cached,
                                   (STATIC_KEY_AXES, STATIC_VALUE_AXES)):
        nn_partitioning.variable_with_axes(
            'cache', f'cached_static_{part}', lambda array=array: array,
            axes=axes)
      self.variable('cache', 'static_kv_ready', lambda: jnp.array(False))
    key = constrain_activations(key, HEADS_AXES)
    value = constrain_activations(value, HEADS_AXES)

    scheme_inputs = AttentionInputs(
        key_mask=key_mask, position_bias=position_bias,
        stack_tables=stack_tables or {}, q_segment_ids=q_segment_ids,
        kv_segment_ids=kv_segment_ids, inputs=inputs_kv,
        project_kv=lambda x: (key_proj(x), value_proj(x)), decode=decode,
        implementation=self.implementation,
        bidirectional_prefix=bidirectional_prefix)
    out = self.scheme_factory(name='scheme')(query, key, value, scheme_inputs)
    return out_proj(out)

  def _smear(self, key, segment_ids, decode):
    mix = nn_partitioning.param_with_axes(
        'key_smear', nn.initializers.zeros, (key.shape[2],), jnp.float32,
        axes=(ax.HEADS,))
    keep = jax.nn.sigmoid(mix).astype(key.dtype)[:, None]   # [kv_heads, 1]
    stepping = decode and self.has_variable('cache', 'previous_key')
    if stepping:  # one token: the previous one's raw key is in the cache
      last = self.variable('cache', 'previous_key', jnp.zeros_like, key)
      previous = last.value
      last.value = key
    else:
      previous = jnp.pad(key[:, :-1], ((0, 0), (1, 0), (0, 0), (0, 0)))
      if segment_ids is not None:  # a segment's first token has none
        same = jnp.pad(segment_ids[:, 1:] == segment_ids[:, :-1],
                       ((0, 0), (1, 0)))
        previous = jnp.where(same[:, :, None, None], previous, 0)
      if decode:  # the call that creates the cache (decoding starts at 0)
        self.variable('cache', 'previous_key', jnp.zeros_like, key[:, :1])
    return keep * key + (1 - keep) * previous

  def _static_kv_step(self, query, inputs_kv, projection, kv_features,
                      key_mask):
    """Dense attention of `[rows, 1]` queries over their example's K/V.

    The call that creates the cache stores the projection of its `inputs_kv`
    (`static_kv_layout`, one copy per example) with `static_kv_ready` False: callers
    that create the cache from placeholder inputs (T5X's decoding) get the
    projection at the first step instead (`nn.cond`; projecting 16k encoder
    tokens costs about 13 GFLOP per layer, so later steps skip it). A cache
    created from the real encoding needs no flag (`decoding.
    mark_static_kv_filled` drops it); its steps only read the keys and values,
    which the decode loop then carries unchanged (a flag-guarded read returns
    a fresh copy of them at every step). Rows are example-major (`[e0, e0,
    e0, e1, ...]`, as decoding expands them), so the decodes of an example are
    that example's queries: one `[examples, decodes]` product. A cache
    expanded per row (T5X's decoding) has one example per row.
    """
    def read(module, _):
      return (module.get_variable('cache', 'cached_static_key'),
              module.get_variable('cache', 'cached_static_value'))

    def fill(module, inputs_kv):
      key = projection(kv_features, name='key', parent=module)(inputs_kv)
      value = projection(kv_features, name='value', parent=module)(inputs_kv)
      key, value = static_kv_layout(key, value)
      module.put_variable('cache', 'cached_static_key', key)
      module.put_variable('cache', 'cached_static_value', value)
      return key, value

    if self.has_variable('cache', 'static_kv_ready'):
      ready = self.get_variable('cache', 'static_kv_ready')
      key, value = nn.cond(ready, read, fill, self, inputs_kv)
      self.put_variable('cache', 'static_kv_ready', jnp.array(True))
    else:
      key, value = read(self, inputs_kv)
    examples = key.shape[0]
    rows = query.shape[0]
    if key_mask is not None and key_mask.shape[0] != examples:
      key_mask = key_mask[::rows // examples]  # one row per example
    query = query.reshape(examples, rows // examples, *query.shape[2:])
    out = _static_attention(query, key, value, key_mask)
    return out.reshape(rows, 1, *out.shape[2:])
