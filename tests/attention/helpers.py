"""Random inputs and forward/gradient comparison shared by the attention tests."""
import jax
import jax.numpy as jnp
import numpy as np

from fovea_jax import attention

# float32 tolerances of efficient paths against the dense oracles. The paths sum in
# different orders (pooling, blockwise softmax), so agreement is to rounding.
FORWARD_TOL = dict(atol=2e-5, rtol=2e-5)
GRAD_TOL = dict(atol=1e-4, rtol=1e-4)


def random_inputs(seed, *, batch=2, length=37, heads=2, kv_heads=None, head_dim=8,
                  mask=True, bias=True, bidirectional=True):
  rng = np.random.default_rng(seed)
  kv_heads = kv_heads or heads
  normal = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
  q = normal(batch, length, heads, head_dim)
  k = normal(batch, length, kv_heads, head_dim)
  v = normal(batch, length, kv_heads, head_dim)
  key_mask = jnp.asarray(rng.random((batch, length)) > 0.25) if mask else None
  position_bias = None
  if bias:
    position_bias = attention.RelativePositionBias(
        normal(32, heads), num_buckets=32, max_distance=24,
        bidirectional=bidirectional)
  return q, k, v, key_mask, position_bias


def loss_and_grads(fn, q, k, v, position_bias, extra=()):
  """Forward output and gradients of a fixed random projection of it."""
  weights = jnp.asarray(np.random.default_rng(99).normal(size=q.shape), jnp.float32)

  def loss(q, k, v, table, extra):
    pb = (None if position_bias is None else
          attention.RelativePositionBias(table, position_bias.num_buckets,
                                         position_bias.max_distance,
                                         position_bias.bidirectional))
    out = fn(q, k, v, pb, *extra)
    return jnp.sum(out * weights), out

  table = None if position_bias is None else position_bias.table
  # Compiled: run op by op, an oracle's many small ops cost far more than one
  # compilation of them.
  (_, out), grads = jax.jit(jax.value_and_grad(
      loss, argnums=(0, 1, 2, 3, 4), has_aux=True))(q, k, v, table, tuple(extra))
  return out, grads


def assert_same(fn_a, fn_b, q, k, v, position_bias, extra=()):
  out_a, grads_a = loss_and_grads(fn_a, q, k, v, position_bias, extra)
  out_b, grads_b = loss_and_grads(fn_b, q, k, v, position_bias, extra)
  assert np.all(np.isfinite(out_a)) and np.all(np.isfinite(out_b))
  np.testing.assert_allclose(out_a, out_b, **FORWARD_TOL)
  names = ('dq', 'dk', 'dv', 'dtable', 'dextra')
  for name, ga, gb in zip(names, grads_a, grads_b):
    for la, lb in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
      np.testing.assert_allclose(la, lb, err_msg=name, **GRAD_TOL)
