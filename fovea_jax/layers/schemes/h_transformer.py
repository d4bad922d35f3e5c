"""H-Transformer-1D hierarchical attention (Zhu & Soricut 2021) as a scheme module.

Everything of the scheme lives here: the plan of levels (`hierarchy_blocks`), the
XLA path (`h_transformer_attention`: pure jnp, O(n) memory and time), its dense
oracle (`h_transformer_reference`) and the module `HTransformer1D`, which owns the
hierarchical relative position bias. The definition is docs/attention.md's
H-Transformer-1D section. It coarsens queries as well as keys, so it does not run
on the tree engine (`layout` is None).

Level 0 cuts the sequence into blocks of `num_clusters` (nc) tokens; a level-l
entry is a group of 2^l tokens and a level-l block holds nc entries. Query block b
of level l scores its own block (level 0 only) and its neighbour blocks b-1, b+1,
minus the pairs already neighbours one level finer; every (query, key) pair is
scored at exactly one level. The partial softmaxes of the levels are joined by
constant interpolation (a coarse row is every token of its group) into one
normalisation per token.
"""
import functools
from typing import Optional

import gin
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen import partitioning as nn_partitioning

from fovea_jax.attention import common as attention_common
from fovea_jax.layers.schemes import base
from fovea_jax.sharding import axis_names as ax

# flaxformer's initialiser of the hierarchical bias.
BIAS_INIT_STDDEV = 0.1


def check_num_clusters(num_clusters):
  attention_common.check_positive_int('num_clusters', num_clusters)
  if num_clusters % 2:
    raise ValueError(
        f'h_transformer.HTransformer1D.num_clusters must be even (a level-l block '
        f'splits into two halves one level finer), got {num_clusters}.')
  return int(num_clusters)


def num_bias_positions(num_clusters):
  """Relative positions (in entries of one level) a neighbour block can have."""
  return 4 * num_clusters - 1


@functools.lru_cache(maxsize=64)
def hierarchy_blocks(length, num_clusters):
  """Blocks per level, finest first: `ceil(length / nc)`, then halving (rounded
  up) until a level has at most 2 blocks, whose neighbours cover everything."""
  blocks = [max(1, -(-length // num_clusters))]
  while blocks[-1] > 2:
    blocks.append(-(-blocks[-1] // 2))
  return tuple(blocks)


@functools.lru_cache(maxsize=64)
def _block_pattern(num_clusters, level, causal):
  """Per level: key offsets (in entries, from the query block's first entry) of the
  scored blocks, `[nc, width]` statically allowed pairs and bias indices."""
  nc = num_clusters
  if level == 0:
    offsets = np.arange(-nc, nc if causal else 2 * nc)
  else:
    offsets = np.arange(-nc, 0) if causal else np.concatenate(
        [np.arange(-nc, 0), np.arange(nc, 2 * nc)])
  rows = np.arange(nc)[:, None]
  if level == 0:
    allowed = (offsets[None] <= rows) if causal else np.ones((nc, offsets.size),
                                                             bool)
  else:
    # One level finer, query row r sits in half-block (r >= nc/2) of block 2b and
    # key offset p in half-block floor(p / (nc/2)); neighbours there were scored
    # at that level already.
    finer_gap = np.abs(np.floor_divide(offsets, nc // 2)[None] - (rows >= nc // 2))
    allowed = finer_gap > 1
  bias_index = offsets[None] - rows + 2 * nc - 1
  return offsets, allowed, bias_index


def _pair_sum(x, blocks, num_clusters):
  """Level l+1 from level l: sums of consecutive pairs, padded to whole blocks."""
  summed = x.reshape(x.shape[0], x.shape[1] // 2, 2, *x.shape[2:]).sum(2)
  return attention_common.pad_length(summed, blocks * num_clusters)


def _shift_blocks(x, shift):
  """x[:, b - shift] at block b (axis 1), zeros where that block does not exist."""
  zeros = jnp.zeros_like(x[:, :abs(shift)])
  if shift > 0:
    return jnp.concatenate([zeros, x[:, :-shift]], axis=1)
  return jnp.concatenate([x[:, -shift:], zeros], axis=1)


def _level_partial(q_entries, k_entries, v_sums, counts, table, *, level,
                   num_clusters, causal):
  """One level's unnormalised softmax pieces per query entry.

  q_entries, k_entries: [batch, entries, heads, d] (coarse queries, key means);
  v_sums: value sums; counts: [batch, entries] valid tokens per entry. Returns
  (y [batch, entries, heads, d], z [batch, entries, heads], m): y and z are the
  weighted sums of values and counts, with weights exp(score - m).
  """
  nc = num_clusters
  batch, length, heads, head_dim = q_entries.shape
  blocks = length // nc
  offsets, allowed, bias_index = _block_pattern(nc, level, causal)
  split = lambda x: x.reshape(batch, blocks, nc, *x.shape[2:])
  q_b, k_b, v_b, c_b = map(split, (q_entries, k_entries, v_sums, counts))
  # Scored blocks in offset order: left (-1), own (0, level 0 only), right (+1).
  shifts = sorted({int(o) // nc for o in offsets})
  gather = lambda x: jnp.concatenate([_shift_blocks(x, -s) if s else x
                                      for s in shifts], axis=2)
  keys, values, key_counts = gather(k_b), gather(v_b), gather(c_b)
  scores = jnp.einsum('bnqhd,bnkhd->bnhqk', q_b, keys)
  bias = jnp.transpose(table[bias_index], (2, 0, 1))             # [heads, nc, W]
  ok = jnp.asarray(allowed)[None, None, None] & (key_counts > 0)[:, :, None, None]
  logits = jnp.where(ok, scores + bias, -jnp.inf)
  row_max = jax.lax.stop_gradient(jnp.max(logits, axis=-1))
  row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
  weights = jnp.exp(logits - row_max[..., None])
  z = jnp.einsum('bnhqk,bnk->bnhq', weights, key_counts)
  y = jnp.einsum('bnhqk,bnkhd->bnqhd', weights, values)
  to_entries = lambda x: jnp.swapaxes(x, 2, 3).reshape(batch, length, heads)
  return y.reshape(batch, length, heads, head_dim), to_entries(z), to_entries(
      row_max)


def _upsample(x, length):
  """Constant interpolation: each coarse entry becomes its two finer entries."""
  return jnp.repeat(x, 2, axis=1)[:, :length]


def h_transformer_attention(q, k, v, table, *, num_clusters, causal=False,
                            key_mask=None):
  """H-Transformer-1D attention (docs/attention.md#h-transformer-1d), scale 1.

  q: [batch, n, heads, d]; k, v: [batch, n, kv_heads, d] (self-attention);
  table: [4 * num_clusters - 1, heads] hierarchical bias; key_mask: [batch, n].
  """
  nc = check_num_clusters(num_clusters)
  groups = attention_common.check_qkv(q, k, v, same_length=True)
  key_mask = attention_common.check_key_mask(key_mask, k)
  _check_table(table, nc, q.shape[2])
  batch, length = q.shape[:2]
  blocks = hierarchy_blocks(length, nc)
  padded = blocks[0] * nc
  valid = attention_common.valid_keys(key_mask, batch, length, padded)
  count = valid.astype(jnp.float32)
  keep = count[:, :, None, None]
  as_heads = lambda x: attention_common.pad_length(
      jnp.repeat(x.astype(jnp.float32), groups, axis=2), padded) * keep
  k_sum, v_sum = as_heads(k), as_heads(v)
  # Bidirectional coarse queries average their valid tokens; causal ones are the
  # group's first token, which no later token of the group can influence.
  q_level = attention_common.pad_length(q.astype(jnp.float32), padded)
  q_sum, q_count = q_level * keep, count
  table = table.astype(jnp.float32)
  partials = []
  for level, level_blocks in enumerate(blocks):
    if level:
      k_sum, v_sum, count = (_pair_sum(x, level_blocks, nc)
                             for x in (k_sum, v_sum, count))
      if causal:
        q_level = attention_common.pad_length(q_level[:, ::2], level_blocks * nc)
      else:
        q_sum, q_count = (_pair_sum(x, level_blocks, nc) for x in (q_sum, q_count))
    divisor = jnp.maximum(count, 1.0)[:, :, None, None]
    q_entries = q_level if causal or not level else (
        q_sum / jnp.maximum(q_count, 1.0)[:, :, None, None])
    partials.append(_level_partial(
        q_entries, k_sum / divisor, v_sum, count, table, level=level,
        num_clusters=nc, causal=causal))
  y, z, m = partials[-1]
  for y_l, z_l, m_l in reversed(partials[:-1]):
    size = y_l.shape[1]
    y, z, m = _upsample(y, size), _upsample(z, size), _upsample(m, size)
    joint = jnp.maximum(m, m_l)
    old, new = jnp.exp(m - joint), jnp.exp(m_l - joint)
    y = y * old[..., None] + y_l * new[..., None]
    z = z * old + z_l * new
    m = joint
  out = y / jnp.where(z > 0, z, 1.0)[..., None]
  return out[:, :length].astype(v.dtype)


def _check_table(table, num_clusters, heads):
  expected = (num_bias_positions(num_clusters), heads)
  if tuple(table.shape) != expected:
    raise ValueError(f'the hierarchical bias table must be [4 * num_clusters - 1, '
                     f'heads] = {expected}, got {tuple(table.shape)}.')


def _group_means(x, valid, size):
  """Per token: the mean of the valid tokens of its aligned group of `size`."""
  batch, length = x.shape[:2]
  padded = -(-length // size) * size
  keep = attention_common.pad_length(valid.astype(jnp.float32), padded)
  x = attention_common.pad_length(x.astype(jnp.float32), padded) * keep[:, :, None,
                                                                       None]
  sums = x.reshape(batch, padded // size, size, *x.shape[2:]).sum(2)
  counts = keep.reshape(batch, padded // size, size).sum(2)
  means = sums / jnp.maximum(counts, 1.0)[:, :, None, None]
  return jnp.repeat(means, size, axis=1)[:, :length]


def pair_levels(length, num_clusters):
  """`[n, n]` level at which pair (i, j) is scored: the smallest l at which the
  level-l blocks of i and j (`x // (nc * 2^l)`) are equal or adjacent."""
  position = np.arange(length)
  levels = np.full((length, length), -1)
  level = 0
  while (levels < 0).any():
    block = position // (num_clusters << level)
    near = np.abs(block[:, None] - block[None, :]) <= 1
    levels[(levels < 0) & near] = level
    level += 1
  return levels


def h_transformer_reference(q, k, v, table, *, num_clusters, causal=False,
                            key_mask=None):
  """Dense oracle: one softmax over all keys, the pair (i, j) scored with the
  coarse query and coarse key of its level l(i, j) plus the bias of their
  level-l entry distance; values are the raw tokens (a level-l weight is shared
  by the tokens of the key's group, so this equals weighting group sums)."""
  nc = check_num_clusters(num_clusters)
  groups = attention_common.check_qkv(q, k, v, same_length=True)
  key_mask = attention_common.check_key_mask(key_mask, k)
  _check_table(table, nc, q.shape[2])
  batch, length = q.shape[:2]
  k = jnp.repeat(k, groups, axis=2)
  v = jnp.repeat(v, groups, axis=2)
  valid = (jnp.ones((batch, length), bool) if key_mask is None else key_mask)
  levels = pair_levels(length, nc)
  position = np.arange(length)
  logits = jnp.zeros((batch, q.shape[2], length, length), jnp.float32)
  for level in range(levels.max() + 1):
    size = 2 ** level
    if causal or not level:
      q_level = q.astype(jnp.float32)[:, position // size * size]
    else:
      q_level = _group_means(q, valid, size)
    scores = jnp.einsum('bqhd,bkhd->bhqk', q_level, _group_means(k, valid, size))
    distance = position[None] // size - position[:, None] // size
    bias = jnp.transpose(table.astype(jnp.float32)[
        np.clip(distance + 2 * nc - 1, 0, 4 * nc - 2)], (2, 0, 1))
    logits = jnp.where(jnp.asarray(levels == level), scores + bias, logits)
  allowed = valid[:, None, None, :]
  if causal:
    allowed = allowed & jnp.asarray(position[None] <= position[:, None])
  weights = attention_common.safe_softmax_weights(
      jnp.where(allowed, logits, attention_common.MASKED))
  out = jnp.einsum('bhqk,bkhd->bqhd', weights, v.astype(jnp.float32))
  return out.astype(v.dtype)


@gin.configurable
class HTransformer1D(base.Scheme):
  """H-Transformer-1D (Zhu & Soricut 2021, arXiv 2107.11906; flaxformer's
  `h_transformer`): hierarchical attention with its own relative position bias.

  num_clusters: entries per block at every level (level 0: the block of tokens
  attended exactly). Self-attention only; no cached decoding.
  """
  scheme_name = 'h_transformer'
  num_clusters: int = 16

  @nn.compact
  def __call__(self, query, key, value, inputs: base.AttentionInputs):
    base.reject_packing('h_transformer', inputs)
    if inputs.decode:
      raise ValueError(
          'attention scheme h_transformer has no incremental decoding '
          '(decode=True): its coarse queries and keys span groups of tokens, so a '
          'cache would have to keep every level of the hierarchy. Train and '
          'score with it; generate with a scheme that caches (e.g. dense, fovea).')
    nc = check_num_clusters(self.num_clusters)
    # The stack's T5 bias is not added: as in H-Transformer-1D, this layer's own
    # table (shared by the levels) is its position signal.
    table = nn_partitioning.param_with_axes(
        'hierarchical_position_bias',
        nn.initializers.normal(stddev=BIAS_INIT_STDDEV),
        (num_bias_positions(nc), query.shape[2]), jnp.float32,
        axes=(ax.RELPOS_BUCKETS, ax.HEADS))
    if inputs.implementation == 'pallas':
      raise ValueError(
          'attention scheme h_transformer has no Pallas kernel; use '
          "implementation=None or 'xla' (its jnp path) or 'reference'.")
    attend = (h_transformer_reference if inputs.implementation == 'reference'
              else h_transformer_attention)
    return attend(query, key, value, table, num_clusters=nc, causal=self.causal,
                  key_mask=inputs.key_mask)

  @nn.nowrap
  def layout(self, length: int, causal: bool) -> Optional[object]:
    """None: the queries are coarsened too, which the tree engine cannot run."""
    del length, causal
    return None

  @nn.nowrap
  def attended_pairs(self, length: int, causal: bool) -> float:
    """(query entry, key entry) scores one layer computes per batch row and head.

    As `h_transformer_attention` computes them: per level l, each of its blocks
    scores nc query entries against the blocks it gathers (level 0: left, own,
    right, or left and own when causal; coarser levels: left and right, or left),
    nc entries each, masked pairs included; a coarse pair counts once however
    many tokens it stands for.
    """
    nc = check_num_clusters(self.num_clusters)
    pairs = 0
    for level, blocks in enumerate(hierarchy_blocks(int(length), nc)):
      offsets, _, _ = _block_pattern(nc, level, bool(causal))
      pairs += blocks * nc * offsets.size
    return float(pairs)
