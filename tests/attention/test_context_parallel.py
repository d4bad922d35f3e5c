"""Sequence-parallel attention (`attention.context_parallel`) equals the
unsharded path, forward and gradients, every scheme (inputs, tolerance and
meshes: context_parallel_cases.py); and what a device fetches, from the host
plan alone."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fovea_jax import attention
from fovea_jax.attention import context_parallel
from tests.attention import context_parallel_cases as cases


# (data, sequence, model): 4 sequence devices cut 1000 tokens into chunks of
# 250; 2 sequence devices beside heads split over `model`. Bidirectional fovea
# and block-local attention: test_context_parallel_packed.py.
@pytest.mark.slow  # compiles one engine per device, forward and backward
@pytest.mark.parametrize('name,causal,mesh_shape', [
    ('fovea', True, (2, 4, 1)), ('fma_learned', False, (2, 4, 1)),
    ('sliding_window', True, (2, 2, 2)), ('dense', True, (2, 2, 2)),
    ('tglobal', False, (2, 2, 2)), ('h_transformer', True, (2, 4, 1)),
])
def test_sharded_equals_unsharded(name, causal, mesh_shape):
  _, _, _, mask = cases.inputs()
  attend, params = cases.scheme(name, causal, mask)
  cases.check_sharded_equals_unsharded(attend, params, mask, mesh_shape)


def test_fovea_fetches_far_less_than_all_of_k_and_v():
  """At 64k tokens on 8 devices a fovea device receives under 1/20 of the
  entries an all-gather moves; a sliding window only its halo; a window as
  wide as the sequence (dense) all of them."""
  n, parts = 65536, 8
  gather = n * (parts - 1) // parts
  fovea = attention.fovea_layout(n, block_len=128, causal=True)
  assert context_parallel.plan(fovea, parts).received_entries() < gather / 20
  window = attention.local_layout(n, window=127, causal=False)
  assert context_parallel.plan(window, parts).received_entries() == 2 * 127
  dense = attention.local_layout(4096, window=4096, causal=False)
  assert (context_parallel.plan(dense, parts).received_entries() ==
          4096 * (parts - 1) // parts)


def test_no_sequence_axis_means_no_split():
  with jax.set_mesh(cases.mesh(8, 1, 1)):
    assert context_parallel.sequence_mesh() is None
  with jax.set_mesh(cases.mesh(2, 4, 1)):
    assert context_parallel.sequence_mesh().shape['sequence'] == 4
  assert context_parallel.sequence_mesh() is None


@pytest.mark.slow
def test_pallas_engine_runs_the_local_layouts():
  """The local layouts are ordinary TreeLayouts: the Pallas kernels
  (interpreted on CPU) run them, equal to the unsharded XLA path."""
  q, k, v, mask = cases.inputs(length=300)
  run = lambda impl: jax.jit(lambda *a: cases.outputs_and_grads(
      lambda q, k, v, _: attention.fovea_attention(
          q, k, v, block_len=32, causal=True, key_mask=mask,
          implementation=impl), *a, mask))
  want = run('xla')(q, k, v, None)
  with jax.set_mesh(cases.mesh(1, 2, 1)):
    got = run('pallas')(q, k, v, None)
  for w, g in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    scale = float(jnp.max(jnp.abs(w)))
    np.testing.assert_allclose(g, w, atol=cases.TOLERANCE * scale, rtol=0)
