"""Argument checking, padding helpers and the T5 relative position bias.

Shared by every attention scheme. Nothing here knows about a particular scheme.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

# Softmax logits of keys that must get no weight. -inf keeps the algebra exact; every
# softmax in the package guards rows whose logits are all masked.
MASKED = -jnp.inf

IMPLEMENTATIONS = ('reference', 'xla', 'pallas')


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RelativePositionBias:
  """T5 relative position bias, evaluated from positions inside each scheme.

  `table[bucket, head]` is added to the logit of query i and key j, where the bucket
  is T5's bucketing of the signed distance `j - i`. Sparse schemes never build the
  `[q_len, kv_len]` bias: they look the bucket up per (query, attended entry).
  """
  table: jax.Array
  num_buckets: int = dataclasses.field(default=32, metadata=dict(static=True))
  max_distance: int = dataclasses.field(default=128, metadata=dict(static=True))
  bidirectional: bool = dataclasses.field(default=True, metadata=dict(static=True))

  def __post_init__(self):
    shape = getattr(self.table, 'shape', None)
    if shape is not None and (len(shape) != 2 or shape[0] != self.num_buckets):
      raise ValueError(
          f'position_bias.table must be [num_buckets={self.num_buckets}, heads], '
          f'got shape {shape}.')

  def bucket_lookup_table(self) -> np.ndarray:
    return _bucket_lookup_table(self.bidirectional, self.num_buckets,
                                self.max_distance)

  def bias(self, relative_position: jax.Array) -> jax.Array:
    """`[..., heads]` float32 bias for integer `key_pos - query_pos`."""
    lut = jnp.asarray(self.bucket_lookup_table())
    clipped = jnp.clip(relative_position, -self.max_distance, self.max_distance)
    buckets = lut[clipped + self.max_distance]
    return self.table.astype(jnp.float32)[buckets]


def relative_position_bucket(relative_position, *, bidirectional=True,
                             num_buckets=32, max_distance=128):
  """T5's bucket of `key_pos - query_pos` (numpy or jax integer arrays).

  Mirrors the float32 arithmetic of Hugging Face's LongT5/T5 so that imported
  checkpoints give identical biases.
  """
  xp = jnp if isinstance(relative_position, jax.Array) else np
  relative_position = xp.asarray(relative_position)
  buckets = xp.zeros(relative_position.shape, dtype=np.int32)
  if bidirectional:
    num_buckets //= 2
    buckets = buckets + (relative_position > 0).astype(np.int32) * num_buckets
    distance = xp.abs(relative_position)
  else:
    distance = -xp.minimum(relative_position, 0)
  max_exact = num_buckets // 2
  if max_distance <= max_exact:
    raise ValueError(
        f'max_distance ({max_distance}) must exceed the exact range {max_exact} of '
        f'{"bidirectional " if bidirectional else ""}T5 buckets with num_buckets='
        f'{num_buckets * (2 if bidirectional else 1)}: raise max_distance or lower '
        'num_buckets.')
  is_small = distance < max_exact
  safe = xp.maximum(distance, 1).astype(np.float32)
  log_ratio = xp.log(safe / np.float32(max_exact)) / np.float32(
      math.log(max_distance / max_exact))
  if_large = max_exact + (log_ratio * np.float32(num_buckets - max_exact)).astype(
      np.int32)
  if_large = xp.minimum(if_large, num_buckets - 1)
  return buckets + xp.where(is_small, distance, if_large).astype(np.int32)


@functools.lru_cache(maxsize=None)
def _bucket_lookup_table(bidirectional, num_buckets, max_distance):
  # Buckets saturate beyond max_distance, so a table over [-max, max] covers every
  # distance; computing it once on the host keeps kernels free of logarithms.
  distances = np.arange(-max_distance, max_distance + 1, dtype=np.int32)
  return relative_position_bucket(distances, bidirectional=bidirectional,
                                  num_buckets=num_buckets,
                                  max_distance=max_distance).astype(np.int32)


def default_scale(scale, head_dim):
  return 1.0 / math.sqrt(head_dim) if scale is None else scale


def check_qkv(q, k, v, *, same_length=False):
  """Validates `[batch, length, heads, head_dim]` inputs; returns kv-head groups."""
  for name, x in (('q', q), ('k', k), ('v', v)):
    if x.ndim != 4:
      raise ValueError(f'{name} must be [batch, length, heads, head_dim], got shape '
                       f'{x.shape}.')
  if k.shape != v.shape:
    raise ValueError(f'k and v must have the same shape, got k {k.shape} and v '
                     f'{v.shape}.')
  if q.shape[0] != k.shape[0]:
    raise ValueError(f'q and k batch sizes differ: {q.shape[0]} vs {k.shape[0]}.')
  if q.shape[3] != k.shape[3]:
    raise ValueError(f'q and k head_dim differ: {q.shape[3]} vs {k.shape[3]}.')
  heads, kv_heads = q.shape[2], k.shape[2]
  if heads % kv_heads:
    raise ValueError(f'q heads ({heads}) must be a multiple of k/v heads '
                     f'({kv_heads}).')
  if same_length and q.shape[1] != k.shape[1]:
    raise ValueError(f'this scheme is self-attention: q length {q.shape[1]} must '
                     f'equal k length {k.shape[1]}.')
  return heads // kv_heads


def check_key_mask(key_mask, k):
  if key_mask is None:
    return None
  if key_mask.shape != k.shape[:2]:
    raise ValueError(f'key_mask must be [batch, kv_len] = {k.shape[:2]}, got '
                     f'{key_mask.shape}.')
  return key_mask.astype(bool)


def check_position_bias(position_bias, heads):
  if position_bias is None:
    return None
  if not isinstance(position_bias, RelativePositionBias):
    raise ValueError('position_bias must be an attention.RelativePositionBias, got '
                     f'{type(position_bias).__name__}.')
  if position_bias.table.shape[1] != heads:
    raise ValueError(f'position_bias.table has {position_bias.table.shape[1]} heads, '
                     f'q has {heads}.')
  return position_bias


def check_positive_int(name, value):
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
    raise ValueError(f'{name} must be an integer >= 1, got {value!r}.')
  return int(value)


def check_choice(name, value, choices):
  if value not in choices:
    raise ValueError(f'{name} must be one of {choices}, got {value!r}.')
  return value


def pad_length(x, length, axis=1):
  """Zero-pads `x` along `axis` up to `length`."""
  extra = length - x.shape[axis]
  if extra == 0:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, extra)
  return jnp.pad(x, widths)


def pad_segment_ids(segment_ids, length):
  """`[batch, length]` int32: packed-example ids padded by repeating the last
  one, so positions past the sequence never split a run (their k, v are 0)."""
  extra = length - segment_ids.shape[1]
  ids = segment_ids.astype(jnp.int32)
  return jnp.pad(ids, [(0, 0), (0, extra)], mode='edge') if extra else ids


def valid_keys(key_mask, batch, length, padded_length):
  """`[batch, padded_length]` bool: real, unmasked key positions."""
  valid = (jnp.ones((batch, length), bool) if key_mask is None else key_mask)
  return pad_length(valid, padded_length)


def positions_in_segment(segment_ids):
  """`[batch, n]` position of every token within its run of equal segment ids
  (packed examples: each example's positions restart at 0)."""
  n = segment_ids.shape[-1]
  index = jnp.arange(n, dtype=jnp.int32)
  starts = jnp.concatenate(
      [jnp.ones(segment_ids.shape[:-1] + (1,), bool),
       segment_ids[..., 1:] != segment_ids[..., :-1]], axis=-1)
  first = jax.lax.cummax(jnp.where(starts, index, 0), axis=segment_ids.ndim - 1)
  return index - first


def block_segment_ids(segment_ids, block_len):
  """Ids that are equal exactly for tokens of one segment and one block of
  `block_len` tokens counted from the segment's start (block-local attention
  over packed examples sees what each example sees alone)."""
  new_run = positions_in_segment(segment_ids) % block_len == 0
  return jnp.cumsum(new_run.astype(jnp.int32), axis=-1)


def safe_softmax_weights(logits):
  """Softmax over the last axis in float32; all-masked rows give zero weights."""
  logits = logits.astype(jnp.float32)
  row_max = jnp.max(logits, axis=-1, keepdims=True)
  row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
  unnormalized = jnp.exp(logits - row_max)
  total = jnp.sum(unnormalized, axis=-1, keepdims=True)
  return unnormalized / jnp.where(total > 0, total, 1.0)


def masked_dense_attention(q, k, v, logit_bias, scale):
  """Dense softmax attention with an additive `[batch|1, heads|1, q, k]` bias.

  The readable core of every dense oracle: `logit_bias` carries masks (-inf),
  position biases and pooling corrections. GQA is handled by repeating k/v heads.
  """
  groups = q.shape[2] // k.shape[2]
  k = jnp.repeat(k, groups, axis=2)
  v = jnp.repeat(v, groups, axis=2)
  logits = jnp.einsum('bqhd,bkhd->bhqk', q.astype(jnp.float32),
                      k.astype(jnp.float32)) * scale
  weights = safe_softmax_weights(logits + logit_bias)
  out = jnp.einsum('bhqk,bkhd->bqhd', weights, v.astype(jnp.float32))
  return out.astype(v.dtype)
