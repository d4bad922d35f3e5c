"""LongT5 transient-global attention as a scheme module.

Owns `global_input_layer_norm` (T5 RMSNorm of the per-group sums, as in LongT5);
the global tokens are projected with the layer's own key/value projections
(`AttentionInputs.project_kv`), so a LongT5 checkpoint maps onto it weight for
weight. Its stack shares a second relative-position table, over group positions
(`side_relpos_bias` under layer 0, as in LongT5; `stack_tables`). Decoding
(causal variant) keeps the running group sums and the projected global tokens
in the cache.
"""
import gin
import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import partitioning as nn_partitioning

from fovea_jax import attention
from fovea_jax.attention import longt5
from fovea_jax.layers.normalization import RMSNorm
from fovea_jax.layers.schemes import base
from fovea_jax.sharding import axis_names as ax

# The stack table of the group-position bias (AttentionInputs.stack_tables).
_SIDE_BIAS = 'side_position_bias'


@gin.configurable
class LongT5TransientGlobal(base.Scheme):
  """LongT5 TGlobal: local window plus one global token per 16-token group."""
  scheme_name = 'longt5_tglobal'
  local_radius: int = 127
  global_block_size: int = 16

  @nn.nowrap
  def stack_tables(self, relative_position_table):
    # LongT5's parameter name, so its checkpoints map onto ours.
    return {_SIDE_BIAS: relative_position_table('side_relpos_bias')}

  @nn.nowrap
  def attended_pairs(self, length, causal):
    """The local window as its XLA path runs it (the local layout's tiles)
    plus every query's scores against all `length // global_block_size`
    global tokens (computed for every query, causal or not, then masked)."""
    local = attention.local_layout(length, window=self.local_radius,
                                   causal=causal)
    globals_per_query = length // self.global_block_size
    return (local.attended_fraction() * length * length +
            length * globals_per_query)

  @nn.compact
  def __call__(self, query, key, value, inputs: base.AttentionInputs):
    segment_ids = base.self_attention_segment_ids(self.scheme_name, inputs)
    if inputs.inputs is None or inputs.project_kv is None:
      raise ValueError('transient-global attention needs the hidden states and '
                       'the K/V projections (AttentionInputs.inputs/project_kv).')
    norm = RMSNorm(name='global_input_layer_norm')
    if inputs.decode:
      cache = base.kv_cache_step(self, key, value)
      group_cache = self._group_cache(inputs.inputs.shape[-1])
      if cache is not None:
        return self._step(query, cache, group_cache, inputs, norm)
    batch, length = query.shape[:2]
    key_mask = (jnp.ones((batch, length), bool) if inputs.key_mask is None
                else inputs.key_mask)
    packed = None
    if segment_ids is None:
      block_ids, global_valid = longt5.global_block_ids(
          key_mask, self.global_block_size, causal=self.causal)
    else:  # each example's groups, as if it ran alone
      block_ids, global_valid, packed = longt5.packed_global_block_ids(
          segment_ids, key_mask, self.global_block_size, causal=self.causal)
    sums = longt5.global_aggregates(inputs.inputs, block_ids,
                                    length // self.global_block_size)
    side_k, side_v = inputs.project_kv(norm(sums))
    return longt5.transient_global_attention(
        query, key, value, side_k, side_v, block_ids=block_ids,
        global_valid=global_valid, local_radius=self.local_radius,
        global_block_size=self.global_block_size, causal=self.causal,
        key_mask=inputs.key_mask, position_bias=inputs.position_bias,
        side_position_bias=inputs.stack_tables.get(_SIDE_BIAS), packed=packed,
        implementation=inputs.implementation)

  def _group_cache(self, emb_dim):
    """Running group sums and projected global tokens (declared at cache init)."""
    cached_key = self.get_variable('cache', 'cached_key')
    batch, max_len = cached_key.shape[:2]
    num_globals = max_len // self.global_block_size
    sums = nn_partitioning.variable_with_axes(
        'cache', 'global_sums', jnp.zeros, (batch, num_globals, emb_dim),
        jnp.float32, axes=(ax.CACHE_BATCH, ax.CACHE_LENGTH, ax.EMBED))
    kv_shape = (batch, num_globals) + cached_key.shape[2:]
    side_k, side_v = (nn_partitioning.variable_with_axes(
        'cache', name, jnp.zeros, kv_shape, cached_key.dtype,
        axes=base.CACHE_KV_AXES)
                      for name in ('cached_global_key', 'cached_global_value'))
    return sums, side_k, side_v

  def _step(self, query, cache, group_cache, inputs, norm):
    """One causal token: add it to its group's sum, refresh that global token."""
    if not self.causal:
      raise ValueError('incremental decoding of transient-global attention is '
                       'causal only (decoder self-attention).')
    sums, side_k, side_v = group_cache
    num_globals = sums.value.shape[1]
    hidden = inputs.inputs  # [batch, 1, emb]
    if num_globals:
      group = cache.index // self.global_block_size
      inside = group < num_globals
      slot = jnp.minimum(group, num_globals - 1)
      old = jax.lax.dynamic_slice_in_dim(sums.value, slot, 1, axis=1)
      new = jnp.where(inside, old + hidden.astype(jnp.float32), old)
      sums.value = jax.lax.dynamic_update_slice_in_dim(sums.value, new, slot, 1)
      k_g, v_g = inputs.project_kv(norm(new))
      old_k = jax.lax.dynamic_slice_in_dim(side_k.value, slot, 1, axis=1)
      old_v = jax.lax.dynamic_slice_in_dim(side_v.value, slot, 1, axis=1)
      side_k.value = jax.lax.dynamic_update_slice_in_dim(
          side_k.value, jnp.where(inside, k_g, old_k).astype(old_k.dtype), slot, 1)
      side_v.value = jax.lax.dynamic_update_slice_in_dim(
          side_v.value, jnp.where(inside, v_g, old_v).astype(old_v.dtype), slot, 1)
    return longt5.transient_global_step(
        query, cache.key, cache.value, side_k.value, side_v.value,
        index=cache.index, local_radius=self.local_radius,
        global_block_size=self.global_block_size,
        position_bias=inputs.position_bias,
        side_position_bias=inputs.stack_tables.get(_SIDE_BIAS))
