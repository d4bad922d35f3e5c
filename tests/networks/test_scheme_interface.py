"""Every registered scheme answers what it costs, and the tools read it there.

`Scheme.layout` / `attended_pairs` / `stack_pairs` are checked, for every scheme
in the registry (fovea_jax.layers.schemes.BY_NAME, at its default options),
against a second count: the layout's gather table (each query block's key
entries, built from its spans one by one) and, where the scheme has a dense
oracle mask that is cheap at a few hundred tokens, the mask itself. Then the
benchmarks and the studies are checked to report exactly these numbers, and
each gin_configs/attention/*.gin file to build its class's defaults.
"""
import pathlib
import sys

import gin
import numpy as np
import pytest

from fovea_jax import attention
from fovea_jax.attention import dense as dense_lib
from fovea_jax.attention import local as local_lib
from fovea_jax.layers import schemes
from fovea_jax.networks import network

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'tools'))
import benchmark_attention  # noqa: E402
import benchmark_model  # noqa: E402
from experiments import attended_fraction  # noqa: E402

# Not a multiple of any default block: partial last blocks are counted too.
LENGTH = 300
# Deeper than MASFormer's default 4 dense layers, so it has local layers.
NUM_LAYERS = 6


def _gather_pairs(layout):
  """(query, entry) pairs of a layout, counted entry by entry per query block."""
  _, valid = layout.gather_index
  rows = np.minimum(layout.query_block,
                    layout.length - np.arange(layout.num_query_blocks) *
                    layout.query_block)
  return float((valid.sum(axis=1) * rows).sum())


def _mask_pairs(allowed):
  return float(np.asarray(allowed).sum())


def test_the_registry_holds_every_scheme_class_once():
  classes = [value for value in vars(schemes).values()
             if isinstance(value, type) and issubclass(value, schemes.Scheme)
             and value is not schemes.Scheme]
  assert sorted(c.__name__ for c in schemes.BY_NAME.values()) == sorted(
      c.__name__ for c in classes)
  assert all(schemes.BY_NAME[c.scheme_name] is c for c in classes)
  # The attention package keeps engines only; schemes are registered here.
  assert not hasattr(attention, 'SCHEMES')
  assert not hasattr(attention, 'get_scheme')


@pytest.mark.parametrize('causal', [False, True], ids=['bidirectional', 'causal'])
@pytest.mark.parametrize('name', sorted(schemes.BY_NAME))
def test_every_scheme_counts_its_pairs(name, causal):
  scheme = schemes.BY_NAME[name]()
  layers = scheme.layer_modules(NUM_LAYERS, causal)
  per_layer = []
  for layer in layers:
    pairs = layer.attended_pairs(LENGTH, causal)
    layout = layer.layout(LENGTH, causal)
    if layout is not None:
      assert pairs == pytest.approx(_gather_pairs(layout), rel=1e-12)
    assert pairs > 0
    per_layer.append(pairs)
  assert scheme.stack_pairs(NUM_LAYERS, LENGTH, causal) == pytest.approx(
      np.mean(per_layer), rel=1e-12)
  assert scheme.stack_is_quadratic(NUM_LAYERS, causal) == any(
      layer.quadratic for layer in layers)
  if scheme.schedule:
    with pytest.raises(NotImplementedError, match='schedule'):
      scheme.attended_pairs(LENGTH, causal)
  else:
    assert scheme.attended_pairs(LENGTH, causal) == per_layer[0]


@pytest.mark.parametrize('causal', [False, True])
def test_dense_counts_its_oracle_mask(causal):
  bias = dense_lib.dense_logit_bias(LENGTH, LENGTH, causal=causal)
  assert schemes.Dense().attended_pairs(LENGTH, causal) == _mask_pairs(
      np.isfinite(bias))
  assert schemes.Dense().layout(LENGTH, causal) is None


@pytest.mark.parametrize('causal', [False, True])
def test_local_counts_its_oracle_mask_plus_tile_corners(causal):
  # Block-local tiles are the blocks: exact, except the masked upper half of
  # each causal block, which is computed.
  block = schemes.Local(window=None, block_len=32)
  mask = local_lib.local_allowed(LENGTH, block_len=32, causal=causal)
  if causal:
    full = local_lib.local_allowed(LENGTH, block_len=32)
    assert block.attended_pairs(LENGTH, causal) == _mask_pairs(full)
  else:
    assert block.attended_pairs(LENGTH, causal) == _mask_pairs(mask)
  # A sliding window computes whole key tiles around it: at least the window,
  # at most one query block of extra keys per side per query.
  sliding = schemes.Local(window=20)
  layout = sliding.layout(LENGTH, causal)
  exact = _mask_pairs(local_lib.local_allowed(LENGTH, window=20, causal=causal))
  pairs = sliding.attended_pairs(LENGTH, causal)
  assert exact <= pairs <= exact + 2 * layout.query_block * LENGTH


@pytest.mark.parametrize('causal', [False, True])
def test_transient_global_counts_local_tiles_and_every_global(causal):
  scheme = schemes.LongT5TransientGlobal(local_radius=20, global_block_size=16)
  local = schemes.Local(window=20).attended_pairs(LENGTH, causal)
  assert scheme.attended_pairs(LENGTH, causal) == local + LENGTH * (LENGTH // 16)
  # At least the local window and the globals a query may see (the oracle's).
  i = np.arange(LENGTH)
  seen = (i + 1) // 16 if causal else np.full(LENGTH, LENGTH // 16)
  exact = _mask_pairs(local_lib.local_allowed(LENGTH, window=20, causal=causal))
  assert scheme.attended_pairs(LENGTH, causal) >= exact + seen.sum()
  assert scheme.layout(LENGTH, causal) is None


def test_masformer_stack_mixes_its_dense_and_local_layers():
  scheme = schemes.MASFormer(num_full=2, local='sliding', window=20)
  dense = LENGTH * (LENGTH + 1) / 2
  local = _gather_pairs(attention.local_layout(LENGTH, window=20, causal=True))
  assert scheme.stack_pairs(NUM_LAYERS, LENGTH, True) == pytest.approx(
      (2 * dense + 4 * local) / NUM_LAYERS)
  assert scheme.stack_is_quadratic(NUM_LAYERS, True)
  assert not schemes.MASFormer(num_full=0).stack_is_quadratic(NUM_LAYERS, True)


# ------------------------------------------------------------------ the tools


@pytest.mark.parametrize('arch', ['encdec', 'decoder'])
@pytest.mark.parametrize('name', benchmark_model.ALL_SCHEMES)
def test_model_benchmark_charges_the_scheme_s_pairs(name, arch):
  """Score FLOPs are 4 * pairs * heads * head_dim per layer, x3 for the step:
  the difference from dense attention isolates them."""
  dims = benchmark_model.DIMENSIONS
  n, targets = 1024, 64
  spec = benchmark_model.scheme_spec(name)
  layers, causal = benchmark_model.self_attention_stack(arch)
  dense = schemes.Dense()
  flops = benchmark_model.model_flops(arch, spec, n, targets)
  dense_flops = benchmark_model.model_flops(arch, dense, n, targets)
  inner = dims['num_heads'] * dims['head_dim']
  expected = 3 * 4 * inner * layers * (spec.stack_pairs(layers, n, causal) -
                                       dense.stack_pairs(layers, n, causal))
  assert flops - dense_flops == pytest.approx(expected, rel=1e-9)


def test_model_benchmark_lists_every_registered_scheme():
  assert set(benchmark_model.ALL_SCHEMES) == set(schemes.BY_NAME)
  for name in benchmark_model.ALL_SCHEMES:
    assert benchmark_model.scheme_spec(name).scheme_name == name


def test_attention_benchmark_choices_are_the_registry_and_its_variants():
  layer_schemes = {n for n, c in schemes.BY_NAME.items() if not c.schedule}
  assert set(benchmark_attention.CHOICES) == layer_schemes | set(
      benchmark_attention.VARIANTS)
  args = benchmark_attention.parse_args(['--block_len', '16', '--window', '5'])
  assert benchmark_attention.scheme_module('sliding', args) == schemes.Local(
      window=5)
  assert benchmark_attention.scheme_module('fovea', args) == schemes.Fovea(
      block_len=16)
  assert benchmark_attention.scheme_module('local', args) == schemes.Local()


def test_study_fraction_is_the_scheme_s():
  for causal in (False, True):
    scheme = schemes.MASFormer(num_full=1, window=20)
    dense = schemes.Dense().attended_pairs(LENGTH, causal)
    assert attended_fraction.stack_fraction(scheme, 3, LENGTH, causal) == (
        pytest.approx(scheme.stack_pairs(3, LENGTH, causal) / dense))
    assert attended_fraction.stack_fraction('dense', 3, LENGTH, causal) == 1.0


# -------------------------------------------------------------- the gin files

ATTENTION_GIN = sorted((ROOT / 'gin_configs' / 'attention').glob('*.gin'))


@pytest.mark.parametrize('path', ATTENTION_GIN, ids=lambda p: p.name)
def test_attention_gin_file_builds_its_class_defaults(path):
  """Asking for a scheme by its gin file or by its name gives one model."""
  gin.clear_config()
  try:
    gin.parse_config_file(str(path))
    scheme = network.Config().attention
  finally:
    gin.clear_config()
  assert isinstance(scheme, schemes.Scheme), path
  by_name = schemes.get_scheme(scheme.scheme_name)
  assert scheme.options() == by_name.options(), path
