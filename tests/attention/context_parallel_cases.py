"""Inputs, schemes and the check of the sequence-parallel tests
(test_context_parallel*.py): sharded equals unsharded on 8 fake CPU devices.

Lengths are multiples of nothing but the device count (1000 on 4 devices:
chunks of 250 cut query blocks and coarse windows); keys are partly masked;
k/v have fewer heads than q. Tolerance (float32): every output and gradient
to 2e-5 of its largest magnitude (partial window sums, and the bias table's
gradient over all devices, are added in another order than unsharded).
"""
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, PartitionSpec

from fovea_jax import attention
from fovea_jax.attention import longt5
from fovea_jax.layers.schemes import h_transformer

LENGTH, HEADS, KV_HEADS, DIM = 1000, 4, 2, 8
TOLERANCE = 2e-5


def mesh(data, sequence, model):
  devices = np.array(jax.devices()[:data * sequence * model])
  return Mesh(devices.reshape(data, sequence, model),
              ('data', 'sequence', 'model'), axis_types=(AxisType.Auto,) * 3)


def inputs(length=LENGTH, seed=0):
  rng = np.random.default_rng(seed)
  normal = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
  mask = jnp.asarray(rng.random((2, length)) > 0.1)
  return (normal(2, length, HEADS, DIM), normal(2, length, KV_HEADS, DIM),
          normal(2, length, KV_HEADS, DIM), mask)


def table(seed):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(32, HEADS)),
                     jnp.float32)


def filters(length):
  rng = np.random.default_rng(5)
  return {lvl.level: tuple(
      jnp.asarray(rng.normal(size=(lvl.group_size, DIM, 4)) / lvl.group_size,
                  jnp.float32) for _ in range(2))
          for lvl in attention.fma_levels(length, 32, 4)}


def scheme(name, causal, mask):
  """`attend(q, k, v, params)` and its params (tables, filters)."""
  bias = lambda t: attention.RelativePositionBias(t, bidirectional=not causal)
  if name == 'fovea':
    return (lambda q, k, v, t: attention.fovea_attention(
        q, k, v, block_len=64, causal=causal, key_mask=mask,
        position_bias=bias(t), implementation='xla'), table(1))
  if name == 'fma_learned':
    return (lambda q, k, v, f: attention.fma_attention(
        q, k, v, fine_len=32, rank=4, downsample='grouped_conv',
        level_filters=f, causal=causal, key_mask=mask, implementation='xla'),
            filters(LENGTH))
  if name == 'sliding_window':
    return (lambda q, k, v, t: attention.local_attention(
        q, k, v, window=40, causal=causal, key_mask=mask,
        position_bias=bias(t), implementation='xla'), table(2))
  if name == 'dense':
    return (lambda q, k, v, t: attention.dot_product_attention(
        q, k, v, causal=causal, key_mask=mask, position_bias=bias(t),
        implementation='xla'), table(3))
  if name == 'tglobal':
    ids, global_valid = longt5.global_block_ids(mask, 16, causal=causal)
    side = jnp.asarray(np.random.default_rng(4).normal(
        size=(2, 2, LENGTH // 16, KV_HEADS, DIM)), jnp.float32)
    return (lambda q, k, v, t: longt5.transient_global_attention(
        q, k, v, side[0], side[1], block_ids=ids, global_valid=global_valid,
        local_radius=20, global_block_size=16, causal=causal, key_mask=mask,
        position_bias=bias(t), side_position_bias=bias(t),
        implementation='xla'), table(6))
  if name == 'h_transformer':
    # Not on the exchange path: XLA's partitioner splits its ops.
    return (lambda q, k, v, t: h_transformer.h_transformer_attention(
        q, k, v, t, num_clusters=16, causal=causal, key_mask=mask),
            jnp.asarray(np.random.default_rng(8).normal(
                size=(h_transformer.num_bias_positions(16), HEADS)), jnp.float32))
  raise AssertionError(name)


def outputs_and_grads(attend, q, k, v, params, real):
  def loss(q, k, v, params):
    out = attend(q, k, v, params) * real[:, :, None, None]
    return jnp.sum(jnp.sin(out)), out
  grads, out = jax.grad(loss, (0, 1, 2, 3), has_aux=True)(q, k, v, params)
  return out, grads


def segment_ids(length, seed=7):
  """Two rows of 10 examples each, cut at random places."""
  rng = np.random.default_rng(seed)
  rows = []
  for _ in range(2):
    cuts = np.sort(rng.choice(np.arange(1, length), 9, replace=False))
    rows.append(np.searchsorted(cuts, np.arange(length), side='right') + 1)
  return jnp.asarray(np.stack(rows), jnp.int32)


def check_sharded_equals_unsharded(attend, params, real, mesh_shape):
  """Outputs and gradients of `attend` under jit, unsharded and on a mesh of
  `mesh_shape` (data, sequence, model) with q, k and v split along the
  sequence, equal to TOLERANCE of their largest magnitude."""
  q, k, v, _ = inputs()
  run = jax.jit(lambda *a: outputs_and_grads(attend, *a, real))
  want = run(q, k, v, params)
  devices = mesh(*mesh_shape)
  # As in a model: activations arrive split along the sequence.
  split = jax.sharding.NamedSharding(devices, PartitionSpec('data', 'sequence'))
  with jax.set_mesh(devices):
    got = run(*(jax.device_put(x, split) for x in (q, k, v)), params)
  for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    scale = float(jnp.max(jnp.abs(w))) or 1.0
    np.testing.assert_allclose(g, w, atol=TOLERANCE * scale, rtol=0)
