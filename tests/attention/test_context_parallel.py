"""Sequence-parallel attention (`attention.context_parallel`) on 8 fake CPU
devices equals the unsharded path, forward and gradients, every scheme.

Lengths are multiples of nothing but the device count (1000 on 4 devices:
chunks of 250 cut query blocks and coarse windows); keys are partly masked;
k/v have fewer heads than q. Tolerance (float32): every output and gradient
to 2e-5 of its largest magnitude (partial window sums, and the bias table's
gradient over all devices, are added in another order than unsharded).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, Mesh

from fovea_jax import attention
from fovea_jax.attention import context_parallel
from fovea_jax.attention import longt5

LENGTH, HEADS, KV_HEADS, DIM = 1000, 4, 2, 8
TOLERANCE = 2e-5


def _mesh(data, sequence, model):
  devices = np.array(jax.devices()[:data * sequence * model])
  return Mesh(devices.reshape(data, sequence, model),
              ('data', 'sequence', 'model'), axis_types=(AxisType.Auto,) * 3)


def _inputs(length=LENGTH, seed=0):
  rng = np.random.default_rng(seed)
  normal = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
  mask = jnp.asarray(rng.random((2, length)) > 0.1)
  return (normal(2, length, HEADS, DIM), normal(2, length, KV_HEADS, DIM),
          normal(2, length, KV_HEADS, DIM), mask)


def _table(seed):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(32, HEADS)),
                     jnp.float32)


def _filters(length):
  rng = np.random.default_rng(5)
  return {lvl.level: tuple(
      jnp.asarray(rng.normal(size=(lvl.group_size, DIM, 4)) / lvl.group_size,
                  jnp.float32) for _ in range(2))
          for lvl in attention.fma_levels(length, 32, 4)}


def _scheme(name, causal, mask):
  """`attend(q, k, v, params)` and its params (tables, filters)."""
  bias = lambda t: attention.RelativePositionBias(t, bidirectional=not causal)
  if name == 'fovea':
    return (lambda q, k, v, t: attention.fovea_attention(
        q, k, v, block_len=64, causal=causal, key_mask=mask,
        position_bias=bias(t), implementation='xla'), _table(1))
  if name == 'fma_learned':
    return (lambda q, k, v, f: attention.fma_attention(
        q, k, v, fine_len=32, rank=4, downsample='grouped_conv',
        level_filters=f, causal=causal, key_mask=mask, implementation='xla'),
            _filters(LENGTH))
  if name == 'sliding_window':
    return (lambda q, k, v, t: attention.local_attention(
        q, k, v, window=40, causal=causal, key_mask=mask,
        position_bias=bias(t), implementation='xla'), _table(2))
  if name == 'dense':
    return (lambda q, k, v, t: attention.dot_product_attention(
        q, k, v, causal=causal, key_mask=mask, position_bias=bias(t),
        implementation='xla'), _table(3))
  if name == 'tglobal':
    ids, global_valid = longt5.global_block_ids(mask, 16, causal=causal)
    side = jnp.asarray(np.random.default_rng(4).normal(
        size=(2, 2, LENGTH // 16, KV_HEADS, DIM)), jnp.float32)
    return (lambda q, k, v, t: longt5.transient_global_attention(
        q, k, v, side[0], side[1], block_ids=ids, global_valid=global_valid,
        local_radius=20, global_block_size=16, causal=causal, key_mask=mask,
        position_bias=bias(t), side_position_bias=bias(t),
        implementation='xla'), _table(6))
  raise AssertionError(name)


def _outputs_and_grads(attend, q, k, v, params, real):
  def loss(q, k, v, params):
    out = attend(q, k, v, params) * real[:, :, None, None]
    return jnp.sum(jnp.sin(out)), out
  grads, out = jax.grad(loss, (0, 1, 2, 3), has_aux=True)(q, k, v, params)
  return out, grads


@pytest.mark.slow  # compiles one engine per device, forward and backward
@pytest.mark.parametrize('name,causal', [
    ('fovea', True), ('fovea', False), ('fma_learned', False),
    ('sliding_window', True), ('dense', True), ('tglobal', False),
])
def test_sharded_equals_unsharded(name, causal):
  q, k, v, mask = _inputs()
  attend, params = _scheme(name, causal, mask)
  run = jax.jit(lambda *a: _outputs_and_grads(attend, *a, mask))
  want = run(q, k, v, params)
  with jax.set_mesh(_mesh(2, 4, 1)):
    got = run(q, k, v, params)
  for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    scale = float(jnp.max(jnp.abs(w))) or 1.0
    np.testing.assert_allclose(g, w, atol=TOLERANCE * scale, rtol=0)


@pytest.mark.slow
def test_heads_split_over_model_beside_the_sequence():
  """Heads (4 of q, 2 of k/v) split over `model` beside a 2-way sequence
  split, on a (data 2, sequence 2, model 2) mesh."""
  q, k, v, mask = _inputs()
  attend, table = _scheme('fovea', True, mask)
  run = jax.jit(lambda *a: _outputs_and_grads(attend, *a, mask))
  want = run(q, k, v, table)
  with jax.set_mesh(_mesh(2, 2, 2)):
    got = run(q, k, v, table)
  for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    scale = float(jnp.max(jnp.abs(w)))
    np.testing.assert_allclose(g, w, atol=TOLERANCE * scale, rtol=0)


def test_fovea_fetches_far_less_than_all_of_k_and_v():
  """Host plan only: at 64k tokens on 8 devices a device receives under 1/20
  of the entries an all-gather moves; dense attention's plan moves all of
  them; sliding windows move only the halo."""
  n, parts = 65536, 8
  gather = n * (parts - 1) // parts
  fovea = attention.fovea_layout(n, block_len=128, causal=True)
  assert context_parallel.plan(fovea, parts).received_entries() < gather / 20
  window = attention.local_layout(n, window=127, causal=False)
  assert context_parallel.plan(window, parts).received_entries() == 2 * 127
  dense = attention.local_layout(4096, window=4096, causal=False)
  assert (context_parallel.plan(dense, parts).received_entries() ==
          4096 * (parts - 1) // parts)


def _segment_ids(length, seed=7):
  """Two rows of 10 examples each, cut at random places."""
  rng = np.random.default_rng(seed)
  rows = []
  for _ in range(2):
    cuts = np.sort(rng.choice(np.arange(1, length), 9, replace=False))
    rows.append(np.searchsorted(cuts, np.arange(length), side='right') + 1)
  return jnp.asarray(np.stack(rows), jnp.int32)


@pytest.mark.slow
@pytest.mark.parametrize('name,causal', [
    ('fovea', False), ('fma_learned', True), ('block_local', False),
    ('cross', False)])
def test_packed_rows_sharded_equal_unsharded(name, causal):
  """Packed rows (examples cut anywhere, also inside chunks and windows):
  pooled entries average one example's tokens across chunk boundaries,
  bidirectional layouts' 'head' copies included."""
  q, k, v, _ = _inputs()
  ids = _segment_ids(LENGTH)
  packed = {
      'fovea': lambda q, k, v, _: attention.fovea_attention(
          q, k, v, block_len=64, causal=causal, segment_ids=ids,
          implementation='xla'),
      'fma_learned': lambda q, k, v, f: attention.fma_attention(
          q, k, v, fine_len=32, rank=4, downsample='grouped_conv',
          level_filters=f, causal=causal, segment_ids=ids,
          implementation='xla'),
      'block_local': lambda q, k, v, _: attention.local_attention(
          q, k, v, block_len=48, causal=causal, segment_ids=ids,
          implementation='xla'),
      'cross': lambda q, k, v, _: attention.dot_product_attention(
          q[:, :200], k, v, q_segment_ids=ids[:, :200], kv_segment_ids=ids,
          implementation='xla'),
  }[name]
  params = _filters(LENGTH) if name == 'fma_learned' else None
  real = jnp.ones(q.shape[:2], bool)[:, :200 if name == 'cross' else LENGTH]
  run = jax.jit(lambda *a: _outputs_and_grads(packed, *a, real))
  want = run(q, k, v, params)
  with jax.set_mesh(_mesh(2, 4, 1)):
    got = run(q, k, v, params)
  for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    scale = float(jnp.max(jnp.abs(w))) or 1.0
    np.testing.assert_allclose(g, w, atol=TOLERANCE * scale, rtol=0)


def test_no_sequence_axis_means_no_split():
  with jax.set_mesh(_mesh(8, 1, 1)):
    assert context_parallel.sequence_mesh() is None
  with jax.set_mesh(_mesh(2, 4, 1)):
    assert context_parallel.sequence_mesh().shape['sequence'] == 4
  assert context_parallel.sequence_mesh() is None
