"""Under a mesh the kernels run per (data, model) shard and still match the oracle."""
import contextlib

from flax.linen import partitioning as nn_partitioning
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fovea_jax import attention
from fovea_jax.attention.pallas import sharding as pallas_sharding
from fovea_jax.sharding import attention_axes
from fovea_jax.sharding import axis_names as ax
from fovea_jax.sharding.axis_names import DATA
from fovea_jax.sharding.axis_names import MODEL
from tests.attention import helpers

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow


# kv_heads=1 cannot split over model=2: batch is split alone, heads replicated.
@pytest.mark.slow
@pytest.mark.parametrize('kv_heads', [2, 1])
def test_sharded_batch_and_heads_match_the_unsharded_oracle(kv_heads):
  q, k, v, key_mask, pb = helpers.random_inputs(
      7, batch=4, length=24, heads=4, kv_heads=kv_heads, head_dim=16)
  pb = attention.RelativePositionBias(pb.table[:8], num_buckets=8, max_distance=20)

  def fn(implementation):
    def attend(q, k, v, pb):
      return attention.fovea_attention(q, k, v, block_len=8, key_mask=key_mask,
                                       position_bias=pb,
                                       implementation=implementation)
    return jax.jit(lambda *args: helpers.loss_and_grads(
        lambda q, k, v, pb: attend(q, k, v, pb), *args))

  want_out, want_grads = fn('reference')(q, k, v, pb)
  mesh = jax.make_mesh((4, 2), (DATA, MODEL),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  with jax.set_mesh(mesh):
    program = fn('pallas')
    assert 'shard_map' in str(jax.make_jaxpr(program)(q, k, v, pb))
    out, grads = program(q, k, v, pb)
  np.testing.assert_allclose(out, want_out, atol=2e-5, rtol=2e-5)
  for got, want in zip(grads[:4], want_grads[:4]):
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('rules,kv_heads,want', [
    (None, 2, (DATA, MODEL)),            # the standard table
    (None, 1, (DATA, None)),             # one kv head cannot split over model
    (((ax.BATCH, DATA), (ax.HEADS, None)), 2, (DATA, None)),
    (((ax.BATCH, MODEL), (ax.HEADS, DATA)), 4, (MODEL, DATA)),
    (((ax.BATCH, (DATA, MODEL)), (ax.HEADS, None)), 2, ((DATA, MODEL), None)),
])
def test_kernel_shards_follow_the_logical_axis_rules(rules, kv_heads, want):
  mesh = jax.make_mesh((4, 2), (DATA, MODEL),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  active = (nn_partitioning.axis_rules(rules) if rules else
            contextlib.nullcontext())
  with jax.set_mesh(mesh), active:
    got = attention_axes.batch_and_heads_axes(
        jax.sharding.get_abstract_mesh(), 8, 4, kv_heads)
  assert got == want
