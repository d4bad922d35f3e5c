"""The base of every attention-scheme module, what each receives, and the KV cache.

A scheme module (dense, local, fovea, ...) subclasses `Scheme`; its dataclass
fields are the scheme's options, declared there once, so the module itself is
what gin configures (`schemes.Fovea.block_len = 64`). `MultiHeadAttention` calls
it as `scheme(query, key, value, inputs)` with projected `[batch, length, heads,
head_dim]` arrays and an `AttentionInputs` bundle. In decode mode it owns its
cache: the common `cached_key`, `cached_value`, `cache_index` (made here) plus any
pooled pyramid it keeps. Every cache leaf except `cache_index` is batch-major so
beam search can expand it.

A scheme also answers, without running, what it costs (`layout`,
`attended_pairs`, `stack_pairs`): the benchmarks and the studies read the
attended fraction and the attention FLOPs from these methods alone, and declares
the tables its stack shares (`stack_tables`).
"""
import dataclasses
import functools
from typing import Any, Callable, ClassVar, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen import partitioning as nn_partitioning

from fovea_jax import attention
from fovea_jax.attention import common as attention_common
from fovea_jax.sharding import axis_names as ax

# [batch, length, kv_heads, head_dim] cached keys and values.
CACHE_KV_AXES = (ax.CACHE_BATCH, ax.CACHE_LENGTH, ax.CACHE_HEADS, ax.CACHE_KV)
MASKED = attention_common.MASKED


class Scheme(nn.Module):
  """An attention scheme: options as fields, `causal` set by the stack.

  A network holds one configured instance (unbound, never called itself) and asks
  it per layer for the module factory to run there, so a schedule such as
  MASFormer can give different layers different modules.
  """
  causal: bool = False
  # The name `network.Config.attention` accepts for this scheme's defaults.
  scheme_name: ClassVar[str] = 'abstract'
  # A layer of this scheme costs length^2 (benchmarks cap such rows' length).
  quadratic: ClassVar[bool] = False
  # A schedule only hands its layers other schemes' modules (`for_layer`); it
  # is never called as a layer itself.
  schedule: ClassVar[bool] = False

  @classmethod
  def gin_name(cls) -> str:
    """How gin files and --gin. overrides name this scheme: module.Class."""
    return f'{cls.__module__.rsplit(".", 1)[-1]}.{cls.__name__}'

  # nowrap: called on the unbound, configured instance (no Flax scope).
  @nn.nowrap
  def options(self) -> dict:
    """The configured fields (everything but Flax's parent/name)."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
            if f.init and f.name not in ('parent', 'name')}

  @nn.nowrap
  def for_layer(self, layer_index: int, num_layers: int,
                causal: bool) -> Callable[..., nn.Module]:
    """Factory (called with `name=`) of the module layer `layer_index` runs."""
    del layer_index, num_layers
    return functools.partial(type(self), **{**self.options(), 'causal': causal})

  @nn.nowrap
  def layer_modules(self, num_layers: int, causal: bool) -> list:
    """The (unbound) module every layer of a stack of `num_layers` runs."""
    return [self.for_layer(i, num_layers, causal)() for i in range(num_layers)]

  # ------------------------------------------------------------------ cost

  @nn.nowrap
  def layout(self, length: int,
             causal: bool) -> Optional[attention.TreeLayout]:
    """The TreeLayout the XLA path runs at `length`, None if the scheme has
    none (dense attention's materialised scores, transient-global, ...)."""
    del length, causal
    return None

  @nn.nowrap
  def attended_pairs(self, length: int, causal: bool) -> float:
    """(query, key) pairs one layer of this module computes at `length`
    tokens: its layout's entries (whole key tiles, pooled entries counted
    once); a scheme without a layout defines its own count."""
    layout = self.layout(length, causal)
    if layout is None:
      raise NotImplementedError(
          f'{type(self).__name__} has no TreeLayout, so it must define '
          'attended_pairs(length, causal) itself.')
    return layout.attended_fraction() * length * length

  @nn.nowrap
  def stack_pairs(self, num_layers: int, length: int, causal: bool) -> float:
    """Mean over a stack's layers of their modules' `attended_pairs`."""
    return float(np.mean([layer.attended_pairs(length, causal)
                          for layer in self.layer_modules(num_layers, causal)]))

  @nn.nowrap
  def stack_is_quadratic(self, num_layers: int, causal: bool) -> bool:
    """Whether some layer of the stack costs length^2."""
    return any(layer.quadratic
               for layer in self.layer_modules(num_layers, causal))

  # ---------------------------------------------------------- stack tables

  @nn.nowrap
  def stack_tables(self, relative_position_table: Callable[[str], Any]
                   ) -> Mapping[str, Any]:
    """Tables made once per stack, by layer 0, and handed to every layer's
    scheme as `AttentionInputs.stack_tables` (name -> value).

    Runs inside layer 0, so any module it creates is a child of layer 0 (its
    parameters live under `layers_0/`). `relative_position_table(param_name)`
    makes a T5 relative-position table like the stack's own `relpos_bias`
    (same heads, buckets and direction) and returns its
    `attention.RelativePositionBias`. The default: no tables.
    """
    del relative_position_table
    return {}


@dataclasses.dataclass(frozen=True)
class AttentionInputs:
  """Everything besides q, k, v that a scheme may need.

  key_mask: [batch, kv_len] bool, True = real token.
  position_bias: the stack's shared T5 bias (None: no bias, e.g. cross-attention).
  stack_tables: what the stack's scheme made in `Scheme.stack_tables` (empty
    for cross-attention and outside a stack).
  inputs: the hidden states k and v were projected from (transient-global sums
    them into global tokens); project_kv maps such states to (key, value) with the
    layer's own projections.
  decode: one-token incremental decoding against the cache (self-attention only).
  bidirectional_prefix: [batch, length] bool, prefix-LM inputs (T5X's
    decoder_causal_attention): positions marked True also see each other.
  """
  key_mask: Optional[jax.Array] = None
  position_bias: Optional[attention.RelativePositionBias] = None
  stack_tables: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  q_segment_ids: Optional[jax.Array] = None
  kv_segment_ids: Optional[jax.Array] = None
  inputs: Optional[jax.Array] = None
  project_kv: Optional[Callable[[jax.Array], tuple]] = None
  decode: bool = False
  implementation: Optional[str] = None
  bidirectional_prefix: Optional[jax.Array] = None


def reject_packing(scheme_name: str, inputs: AttentionInputs):
  """For schemes that cannot separate packed examples: say so, naming the
  scheme and the option, instead of leaking across examples."""
  if inputs.q_segment_ids is not None or inputs.kv_segment_ids is not None:
    raise ValueError(
        f'attention scheme {scheme_name!r} does not support packed examples '
        '(segment ids); use another scheme or turn packing off '
        '(DatasetConfig.pack = False).')
  reject_prefix(scheme_name, inputs)


def reject_prefix(scheme_name: str, inputs: AttentionInputs):
  """Sparse schemes cannot open a bidirectional prefix; say so instead of
  silently ignoring it."""
  if inputs.bidirectional_prefix is not None:
    raise ValueError(
        f'attention scheme {scheme_name!r} does not support prefix-LM inputs '
        '(decoder_causal_attention); use the dense scheme or set '
        'DecoderOnlyModel.inputs_bidirectional_attention = False.')


def self_attention_segment_ids(scheme_name: str, inputs: AttentionInputs):
  """The `[batch, length]` segment ids of packed self-attention inputs, or
  None. Queries and keys are the same tokens, so they share one array;
  decoding runs unpacked."""
  reject_prefix(scheme_name, inputs)
  q_ids, kv_ids = inputs.q_segment_ids, inputs.kv_segment_ids
  if q_ids is None and kv_ids is None:
    return None
  if q_ids is None or kv_ids is None or q_ids.shape != kv_ids.shape:
    raise ValueError(
        f'attention scheme {scheme_name!r} is self-attention: pass the same '
        '[batch, length] segment ids for queries and keys.')
  if inputs.decode:
    raise ValueError(f'attention scheme {scheme_name!r}: decoding runs on '
                     'unpacked inputs; pass no segment ids when decoding.')
  return q_ids


@dataclasses.dataclass
class KVCache:
  """The common cache of one self-attention layer, after this step's update."""
  key: jax.Array    # [batch, max_length, kv_heads, head_dim]
  value: jax.Array
  index: jax.Array  # int32 scalar: position of the token being decoded


def kv_cache_step(module: nn.Module, key, value) -> Optional[KVCache]:
  """Declares the cache; on later calls writes this token's key/value into it.

  Returns None on the first (shape-setting) call, when `key` spans the whole
  decode length, and the updated cache on every one-token call after that.
  """
  initialized = module.has_variable('cache', 'cached_key')
  cached_key = nn_partitioning.variable_with_axes(
      'cache', 'cached_key', jnp.zeros, key.shape, key.dtype, axes=CACHE_KV_AXES)
  cached_value = nn_partitioning.variable_with_axes(
      'cache', 'cached_value', jnp.zeros, value.shape, value.dtype,
      axes=CACHE_KV_AXES)
  cache_index = nn_partitioning.variable_with_axes(
      'cache', 'cache_index', lambda: jnp.array(0, jnp.int32), axes=())
  if not initialized:
    return None
  if key.shape[1] != 1:
    raise ValueError(f'decode=True expects one token per row after the cache is '
                     f'initialised, got length {key.shape[1]}.')
  index = cache_index.value
  cached_key.value = jax.lax.dynamic_update_slice(
      cached_key.value, key.astype(cached_key.value.dtype), (0, index, 0, 0))
  cached_value.value = jax.lax.dynamic_update_slice(
      cached_value.value, value.astype(cached_value.value.dtype), (0, index, 0, 0))
  cache_index.value = index + 1
  return KVCache(cached_key.value, cached_value.value, index)


def gather_positions(x, positions):
  """x[:, positions] for a traced index vector, clipped (mask separately)."""
  safe = jnp.clip(positions, 0, x.shape[1] - 1)
  return jnp.take(x, safe, axis=1)


def step_attention(query, keys, values, *, allowed, entry_bias=None,
                   relative_position=None, position_bias=None):
  """One query `[batch, 1, heads, head_dim]` against `keys [batch, K, kv_heads, d]`.

  allowed: [K] or [batch, K] bool; entry_bias: optional [K] or [batch, K] extra
  logit (pooling corrections); relative_position: [K] ints for the T5 bias.
  scale is 1 (T5 folds 1/sqrt(d) into the query projection).
  """
  logit = jnp.where(allowed, 0.0, MASKED)
  if entry_bias is not None:
    logit = logit + entry_bias
  logit = jnp.broadcast_to(logit, (query.shape[0], keys.shape[1]))
  logit = logit[:, None, None, :]  # [batch, 1, 1, K]
  if position_bias is not None:
    values_kh = position_bias.bias(relative_position)  # [K, heads]
    logit = logit + jnp.transpose(values_kh)[None, :, None, :]
  return attention_common.masked_dense_attention(query, keys, values, logit, 1.0)
