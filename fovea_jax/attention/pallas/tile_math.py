"""The per-tile math of the tree-attention kernels, shared by both lowerings.

The GPU (Triton) kernels loop over a query tile's key tiles inside one program;
the TPU (Mosaic) kernels get one key tile per grid step, streamed from HBM. Both
call these functions on one (query tile, key tile) pair, so the two families do
the same arithmetic. Query-side values are columns `[tq, 1]`, entry-side values
rows `[1, tk]`.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import jax
from jax import lax
import jax.numpy as jnp

from fovea_jax.attention import common
from fovea_jax.attention.layout import TreeLayout
from fovea_jax.attention.layout import relative_position_to_window
from fovea_jax.attention.layout import static_entry_mask
from fovea_jax.attention.pallas import tile_tables as tables_lib


@dataclasses.dataclass(frozen=True)
class BlockSizes:
  """Tile sizes of the kernels.

  block_q: query rows per program (capped at the layout's query block, rounded
    up to a power of two). block_k: flat entries per key tile of the forward and
    dq loops. block_k_dkv: entries per dk/dv program. num_warps / num_stages:
    Triton launch parameters (GPU only).
  """
  block_q: int = 64
  block_k: int = 64
  block_k_dkv: int = 64
  num_warps: Optional[int] = None
  num_stages: int = 2

  def __post_init__(self):
    for name in ('block_q', 'block_k', 'block_k_dkv'):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 8 or value & (value - 1):
        raise ValueError(f'BlockSizes.{name} must be a power of two >= 8, got '
                         f'{value!r}.')

  @classmethod
  def get_default(cls, backend: Optional[str] = None) -> 'BlockSizes':
    backend = backend or jax.default_backend()
    if backend == 'tpu':  # MXU-sized tiles
      return cls(block_q=128, block_k=128, block_k_dkv=128)
    if backend == 'gpu':
      return cls(block_q=64, block_k=64, block_k_dkv=64)
    # Interpret mode on CPU: small tiles waste the least work on padding.
    return cls(block_q=32, block_k=32, block_k_dkv=32)


@dataclasses.dataclass(frozen=True, eq=False)
class KernelConfig:
  """Everything static about one call (hashed by identity, built once)."""
  layout: TreeLayout
  tables: tables_lib.TileTables
  scale: float
  groups: int
  head_dim: int
  padded_head_dim: int
  bias_pieces: Optional[tuple]
  num_buckets_padded: int
  block_sizes: BlockSizes
  backend: str
  interpret: object  # bool, or pltpu.InterpretParams (TPU interpreter on CPU)
  vmem_limit_bytes: Optional[int] = None  # TPU: raised when a call needs it
  # Packed examples: every kernel also reads query and entry segment ids (as
  # float32, exact below 2^24) and masks pairs of different segments.
  segmented: bool = False


def query_positions(row, config):
  """Token positions `[tile, 1]` and validity of kernel query tile `row`."""
  tiling = config.tables.tiling
  block = lax.div(row, tiling.sub_tiles)
  offset = (lax.rem(row, tiling.sub_tiles) * tiling.tile +
            lax.broadcasted_iota(jnp.int32, (tiling.tile, 1), 0))
  position = block * tiling.query_block + offset
  valid = (offset < tiling.query_block) & (position < config.layout.length)
  return position, valid


def _position_bias(rel, table_ref, head, pieces):
  """T5 bias of relative positions `rel` as a chain of range selects."""
  value = jnp.full(rel.shape, table_ref[head, pieces[-1][2]], jnp.float32)
  for _, rel_hi, bucket in reversed(pieces[:-1]):
    value = jnp.where(rel <= rel_hi, table_ref[head, bucket], value)
  return value


def masked_logits(q, k, entry_bias, lo, hi, entry_ok, position, query_ok, head,
                  table_ref, config, segments=None):
  """Scores `[tq, tk]` float32 of one tile; -inf where a pair may not attend.

  segments: `(query ids [tq, 1], entry ids [1, tk])` of packed examples.
  """
  logits = lax.dot_general(q, k, (((1,), (1,)), ((), ())),
                           preferred_element_type=jnp.float32) * config.scale
  logits = logits + entry_bias
  allowed = static_entry_mask(position, lo, hi, config.layout) & query_ok
  if entry_ok is not None:
    allowed &= entry_ok
  if segments is not None:
    allowed &= segments[0] == segments[1]
  rel = None
  if config.bias_pieces is not None:
    rel = relative_position_to_window(position, lo, hi)
    logits = logits + _position_bias(rel, table_ref, head, config.bias_pieces)
  return jnp.where(allowed, logits, common.MASKED), rel


def forward_init(config):
  """Online-softmax state of one query tile: `(acc, row_max, total)`."""
  tile = config.tables.tiling.tile
  return (jnp.zeros((tile, config.padded_head_dim), jnp.float32),
          jnp.full((tile, 1), common.MASKED, jnp.float32),
          jnp.zeros((tile, 1), jnp.float32))


def forward_step(state, q, k, v, entry_bias, lo, hi, position, query_ok, head,
                 table_ref, config, segments=None):
  """The online-softmax state after one more key tile."""
  acc, row_max, total = state
  logits, _ = masked_logits(q, k, entry_bias, lo, hi, None, position, query_ok,
                            head, table_ref, config, segments)
  new_max = jnp.maximum(row_max, jnp.max(logits, axis=1, keepdims=True))
  safe_max = jnp.where(new_max == common.MASKED, 0.0, new_max)
  weights = jnp.exp(logits - safe_max)
  correction = jnp.exp(row_max - safe_max)
  total = correction * total + jnp.sum(weights, axis=1, keepdims=True)
  acc = correction * acc + jnp.dot(weights.astype(v.dtype), v,
                                   preferred_element_type=jnp.float32)
  return acc, new_max, total


def forward_result(state):
  """`(out float32, lse)`; lse is +inf on rows with nothing to attend, which the
  backward then gives zero weight."""
  acc, row_max, total = state
  nonempty = total > 0
  norm = jnp.where(nonempty, total, 1.0)
  return acc / norm, jnp.where(nonempty, row_max + jnp.log(norm), jnp.inf)


def dq_step(state, q, k, v, entry_bias, lo, hi, d_out, lse, delta, position,
            query_ok, head, table_ref, config, segments=None):
  """`(dq, d_table)` after one more key tile (dq unscaled, d_table `[1, nbp]`)."""
  dq, d_table = state
  logits, rel = masked_logits(q, k, entry_bias, lo, hi, None, position, query_ok,
                              head, table_ref, config, segments)
  weights = jnp.exp(logits - lse)
  d_weights = lax.dot_general(d_out, v, (((1,), (1,)), ((), ())),
                              preferred_element_type=jnp.float32)
  d_logits = weights * (d_weights - delta)
  dq = dq + jnp.dot(d_logits.astype(k.dtype), k, preferred_element_type=jnp.float32)
  if config.bias_pieces is not None:
    bucket_ids = lax.broadcasted_iota(jnp.int32, (1, config.num_buckets_padded), 1)
    for rel_lo, rel_hi, bucket in config.bias_pieces:
      inside = jnp.ones(rel.shape, bool)
      if rel_lo is not None:
        inside &= rel >= rel_lo
      if rel_hi is not None:
        inside &= rel <= rel_hi
      piece_sum = jnp.sum(jnp.where(inside, d_logits, 0.0))
      d_table = d_table + jnp.where(bucket_ids == bucket, piece_sum, 0.0)
  return dq, d_table


def dkv_step(state, q, d_out, lse, delta, k, v, entry_bias, lo, hi, entry_ok,
             position, query_ok, head, table_ref, config, segments=None):
  """`(dk unscaled, dv)` of a key tile after one more query tile of one head."""
  dk, dv = state
  logits, _ = masked_logits(q, k, entry_bias, lo, hi, entry_ok, position, query_ok,
                            head, table_ref, config, segments)
  weights = jnp.exp(logits - lse)
  dv = dv + lax.dot_general(weights.astype(d_out.dtype), d_out,
                            (((0,), (0,)), ((), ())),
                            preferred_element_type=jnp.float32)
  d_weights = lax.dot_general(d_out, v, (((1,), (1,)), ((), ())),
                              preferred_element_type=jnp.float32)
  d_logits = weights * (d_weights - delta)
  dk = dk + lax.dot_general(d_logits.astype(q.dtype), q, (((0,), (0,)), ((), ())),
                            preferred_element_type=jnp.float32)
  return dk, dv
