"""LongT5 transient-global over packed examples: as each example alone, and
no gradient across examples."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fovea_jax import attention
from fovea_jax.attention import longt5
from tests.attention import helpers
from tests.attention.packed_inputs import LENGTH, SEGMENT_IDS

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow


TGLOBAL_GROUP, TGLOBAL_RADIUS = 4, 3


@pytest.mark.parametrize('causal', [False, True])
@pytest.mark.parametrize('implementation', ['blockwise', 'xla'])
def test_transient_global_packed_equals_each_example_alone(causal,
                                                           implementation):
  """LongT5 TGlobal over packed examples: each example's global groups are
  its own, counted from its first token (orphans join its last full group),
  so its outputs equal the example alone (forward, float32), and no gradient
  crosses examples (q, k, v and the global tokens' sums)."""
  q, k, v, _, pb = helpers.random_inputs(7, length=LENGTH, heads=4, kv_heads=2,
                                         bidirectional=not causal)
  spb = attention.RelativePositionBias(
      jnp.asarray(np.random.default_rng(8).normal(size=(32, 4)), jnp.float32),
      bidirectional=not causal)
  hidden = jnp.asarray(np.random.default_rng(9).normal(size=(2, LENGTH, 2, 8)),
                       jnp.float32)
  attend = (longt5.transient_global_attention_reference
            if implementation == 'blockwise' else
            functools.partial(longt5.transient_global_attention,
                              implementation='xla'))
  options = dict(local_radius=TGLOBAL_RADIUS, global_block_size=TGLOBAL_GROUP,
                 causal=causal, position_bias=pb, side_position_bias=spb)

  def run(q, k, v, hidden, ids=None):
    """Side k/v: the groups' sums of `hidden` (the layer projects them)."""
    length = q.shape[1]
    mask = jnp.ones((q.shape[0], length), bool) if ids is None else ids > 0
    if ids is None:
      block_ids, valid = longt5.global_block_ids(mask, TGLOBAL_GROUP,
                                                 causal=causal)
      packed = None
    else:
      block_ids, valid, packed = longt5.packed_global_block_ids(
          ids, mask, TGLOBAL_GROUP, causal=causal)
    sums = jnp.einsum('bnhd,bng->bghd', hidden, (
        block_ids[..., None] == jnp.arange(length // TGLOBAL_GROUP)).astype(
            jnp.float32))
    return attend(q, k, v, sums, 2 * sums, block_ids=block_ids,
                  global_valid=valid, key_mask=mask, packed=packed, **options)

  ids = jnp.asarray(SEGMENT_IDS)
  spans = [(row, int(w[0]), int(w[-1]) + 1)
           for row in range(2) for segment in range(1, SEGMENT_IDS[row].max() + 1)
           for w in [np.nonzero(SEGMENT_IDS[row] == segment)[0]]]

  @jax.jit
  def packed_and_alone(q, k, v, hidden):
    alone = [run(*(x[row:row + 1, lo:hi] for x in (q, k, v, hidden)))
             for row, lo, hi in spans]
    return run(q, k, v, hidden, ids), alone

  packed, alone = packed_and_alone(q, k, v, hidden)
  for (row, lo, hi), want in zip(spans, alone):
    np.testing.assert_allclose(packed[row:row + 1, lo:hi], want,
                               **helpers.FORWARD_TOL)

  @jax.jit
  def grads(segment):
    def loss(q, k, v, hidden):
      out = run(q, k, v, hidden, ids)
      return jnp.sum(jnp.where((ids == segment)[:, :, None, None], out, 0.0))
    return jax.grad(loss, argnums=(0, 1, 2, 3))(q, k, v, hidden)

  for segment in range(1, 5):
    elsewhere = np.asarray(ids != segment)[:, :, None, None]
    for g in grads(segment):
      assert np.abs(np.where(elsewhere, np.asarray(g), 0.0)).max() == 0.0
