"""Tree-level block attention in plain XLA: gather each query block's spans.

The efficient path on CPU (and the fallback elsewhere). Query blocks are processed in
chunks by `lax.scan`, so memory is O(chunk * keys per block) for scores plus O(n) for
the flat buffer; there is never an `[n, n]` array. The backward pass is flash-style
(`jax.custom_vjp`): it saves only the output and the log-sum-exp and recomputes each
chunk's scores, scattering key/value gradients back into the flat buffer.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from fovea_jax.attention.common import MASKED
from fovea_jax.attention.common import RelativePositionBias
from fovea_jax.attention.layout import TreeLayout

# Scores of one scan step (logits, weights, bias; float32) stay under this budget.
DEFAULT_CHUNK_BYTES = 384 * 2**20


def relative_position_to_window(query_pos, lo, hi):
  """Signed distance from a query token to the nearest token of `[lo, hi]`."""
  return jnp.where(query_pos < lo, lo - query_pos,
                   jnp.where(query_pos > hi, hi - query_pos, 0))


def static_entry_mask(query_pos, lo, hi, layout: TreeLayout):
  """True where a (query, entry) pair may attend: causal and window rules."""
  allowed = lo <= hi
  if layout.causal:
    allowed &= hi <= query_pos
  if layout.window is not None:
    rel = relative_position_to_window(query_pos, lo, hi)
    allowed &= jnp.abs(rel) <= layout.window
  return allowed


class _Plan:
  """Chunked static tables for the scan (numpy, built once per layout/shape)."""

  def __init__(self, layout: TreeLayout, chunk: int, kv_heads: int):
    self.kv_heads = kv_heads
    index, valid = layout.gather_index
    lo, hi = layout.entry_lo_hi
    blocks = layout.num_query_blocks
    self.chunk = chunk
    self.num_chunks = -(-blocks // chunk)
    padded = self.num_chunks * chunk
    keys = index.shape[1]

    def chunked(x, fill):
      out = np.full((padded, keys), fill, x.dtype)
      out[:blocks] = x
      return out.reshape(self.num_chunks, chunk, keys)

    self.index = chunked(index, 0)
    self.valid = chunked(valid, False)
    self.lo = chunked(lo[index], 1)
    self.hi = chunked(hi[index], 0)
    self.first_block = np.arange(self.num_chunks, dtype=np.int32) * chunk
    self.keys = keys


def _choose_chunk(layout, batch, heads, chunk_bytes):
  keys = layout.gather_index[0].shape[1]
  per_block = 4 * 4 * batch * heads * layout.query_block * keys
  return int(max(1, min(layout.num_query_blocks, chunk_bytes // per_block)))


def _chunk_logits(q_c, k_g, entry_bias_g, table, xs, *, layout, scale, bias_spec):
  """Scores `[batch, kv_heads, groups, chunk, q_block, keys]` of one chunk."""
  _, valid, lo, hi, first_block = xs
  logits = jnp.einsum('bcqkgd,bcjkd->bkgcqj', q_c, k_g,
                      preferred_element_type=jnp.float32) * scale
  logits = logits + entry_bias_g[:, None, None, :, None, :]
  tq = layout.query_block
  chunk = q_c.shape[1]
  query_pos = ((first_block + jnp.arange(chunk))[:, None] * tq +
               jnp.arange(tq)[None, :])[:, :, None]  # [chunk, tq, 1]
  lo, hi = lo[:, None, :], hi[:, None, :]
  allowed = static_entry_mask(query_pos, lo, hi, layout) & valid[:, None, :]
  if table is not None:
    num_buckets, max_distance, bidirectional = bias_spec
    pb = RelativePositionBias(table, num_buckets, max_distance, bidirectional)
    bias = pb.bias(relative_position_to_window(query_pos, lo, hi))  # [c,q,j,H]
    kv_heads, groups = q_c.shape[3], q_c.shape[4]
    bias = bias.reshape(*bias.shape[:3], kv_heads, groups)
    logits = logits + jnp.transpose(bias, (3, 4, 0, 1, 2))[None]
  return jnp.where(allowed, logits, MASKED)


def _gather(flat, index):
  """`flat [batch, n, ...]`, `index [chunk, keys]` -> `[batch, chunk, keys, ...]`."""
  return jnp.take(flat, index, axis=1)


def _split_queries(q, layout, plan):
  b, _, heads, d = q.shape
  kv_heads = plan.kv_heads
  n_pad = plan.num_chunks * plan.chunk * layout.query_block
  q = jnp.pad(q, ((0, 0), (0, n_pad - q.shape[1]), (0, 0), (0, 0)))
  q = q.reshape(b, plan.num_chunks, plan.chunk, layout.query_block, kv_heads,
                heads // kv_heads, d)
  return jnp.moveaxis(q, 1, 0)  # [num_chunks, b, chunk, tq, kvh, g, d]


def _merge_queries(x, length):
  """Inverse of _split_queries for `[num_chunks, b, chunk, tq, kvh, g, d]`."""
  x = jnp.moveaxis(x, 0, 1)
  b = x.shape[0]
  x = x.reshape(b, -1, x.shape[-3] * x.shape[-2], x.shape[-1])
  return x[:, :length]


def _forward(q, k_flat, v_flat, entry_bias, table, layout, plan, scale, bias_spec):
  q_chunks = _split_queries(q, layout, plan)
  xs_static = (plan.index, plan.valid, plan.lo, plan.hi, plan.first_block)

  def step(_, inputs):
    q_c, xs = inputs
    k_g, v_g = _gather(k_flat, xs[0]), _gather(v_flat, xs[0])
    logits = _chunk_logits(q_c, k_g, _gather(entry_bias, xs[0]), table, xs,
                           layout=layout, scale=scale, bias_spec=bias_spec)
    row_max = jnp.max(logits, axis=-1, keepdims=True)
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    weights = jnp.exp(logits - row_max)
    total = jnp.sum(weights, axis=-1, keepdims=True)
    out = jnp.einsum('bkgcqj,bcjkd->bcqkgd', weights, v_g,
                     preferred_element_type=jnp.float32)
    norm = jnp.where(total > 0, total, 1.0)
    out = out / jnp.transpose(norm, (0, 3, 4, 1, 2, 5))
    lse = jnp.where(total > 0, row_max + jnp.log(norm), jnp.inf)
    return None, (out, lse)

  _, (out, lse) = jax.lax.scan(step, None, (q_chunks, xs_static))
  return out, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8))
def _attention(q, k_flat, v_flat, entry_bias, table, layout, plan, scale, bias_spec):
  result, _ = _attention_fwd(q, k_flat, v_flat, entry_bias, table, layout, plan,
                             scale, bias_spec)
  return result


def _attention_fwd(q, k_flat, v_flat, entry_bias, table, layout, plan, scale,
                   bias_spec):
  out, lse = _forward(q, k_flat, v_flat, entry_bias, table, layout, plan, scale,
                      bias_spec)
  result = _merge_queries(out, q.shape[1]).astype(v_flat.dtype)
  return result, (q, k_flat, v_flat, entry_bias, table, out, lse)


def _attention_bwd(layout, plan, scale, bias_spec, residuals, d_out):
  q, k_flat, v_flat, entry_bias, table, out, lse = residuals
  q_chunks = _split_queries(q, layout, plan)
  do_chunks = _split_queries(d_out.astype(jnp.float32), layout, plan)
  xs_static = (plan.index, plan.valid, plan.lo, plan.hi, plan.first_block)

  def step(carry, inputs):
    dk_flat, dv_flat, d_table = carry
    q_c, do_c, out_c, lse_c, xs = inputs
    index = xs[0]
    k_g, v_g = _gather(k_flat, index), _gather(v_flat, index)
    eb_g = _gather(entry_bias, index)

    def logits_of(q_c, k_g, table):
      return _chunk_logits(q_c, k_g, eb_g, table, xs, layout=layout, scale=scale,
                           bias_spec=bias_spec)

    logits, logits_vjp = jax.vjp(logits_of, q_c, k_g, table)
    weights = jnp.exp(logits - lse_c)  # lse = +inf on empty rows -> 0
    dv_g = jnp.einsum('bkgcqj,bcqkgd->bcjkd', weights, do_c)
    dp = jnp.einsum('bcqkgd,bcjkd->bkgcqj', do_c, v_g,
                    preferred_element_type=jnp.float32)
    delta = jnp.transpose(jnp.sum(do_c * out_c, axis=-1), (0, 3, 4, 1, 2))
    ds = weights * (dp - delta[..., None])
    dq_c, dk_g, dt = logits_vjp(ds)
    flat_index = index.reshape(-1)
    b = dk_g.shape[0]
    dk_flat = dk_flat.at[:, flat_index].add(
        dk_g.reshape(b, -1, *dk_g.shape[3:]).astype(jnp.float32))
    dv_flat = dv_flat.at[:, flat_index].add(
        dv_g.reshape(b, -1, *dv_g.shape[3:]))
    if d_table is not None:
      d_table = d_table + dt
    return (dk_flat, dv_flat, d_table), dq_c

  init = (jnp.zeros(k_flat.shape, jnp.float32), jnp.zeros(v_flat.shape, jnp.float32),
          None if table is None else jnp.zeros(table.shape, jnp.float32))
  (dk_flat, dv_flat, d_table), dq = jax.lax.scan(
      step, init, (q_chunks, do_chunks, out, lse, xs_static))
  dq = _merge_queries(dq, q.shape[1]).astype(q.dtype)
  d_table = None if table is None else d_table.astype(table.dtype)
  # entry_bias depends only on masks and counts: it carries no gradient.
  return (dq, dk_flat.astype(k_flat.dtype), dv_flat.astype(v_flat.dtype),
          jnp.zeros_like(entry_bias), d_table)


_attention.defvjp(_attention_fwd, _attention_bwd)


@functools.lru_cache(maxsize=64)
def _plan_for(layout, chunk, kv_heads):
  return _Plan(layout, chunk, kv_heads)


def tree_level_attention_xla(q, k_flat, v_flat, entry_bias, layout: TreeLayout, *,
                             scale, position_bias=None,
                             chunk_bytes=DEFAULT_CHUNK_BYTES):
  """Attention of `q [b, n, heads, d]` over the flat buffer of `layout`."""
  batch, _, heads, _ = q.shape
  chunk = _choose_chunk(layout, batch, heads, chunk_bytes)
  plan = _plan_for(layout, chunk, k_flat.shape[2])
  table, bias_spec = None, None
  if position_bias is not None:
    table = position_bias.table
    bias_spec = (position_bias.num_buckets, position_bias.max_distance,
                 position_bias.bidirectional)
  entry_bias = jax.lax.stop_gradient(entry_bias)
  return _attention(q, k_flat, v_flat, entry_bias, table, layout, plan,
                    float(scale), bias_spec)
