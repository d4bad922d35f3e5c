"""Tiny network configurations shared by the network tests."""
import functools

import jax
import numpy as np

from fovea_jax import networks
from fovea_jax.layers import schemes

# Every scheme with options small enough for lengths of ~20 tokens,
# chosen so that pooled levels, global tokens and far fields really occur.
TINY_SCHEMES = {
    'dense': schemes.Dense(),
    'longt5_local': schemes.Local(window=3),
    'longt5_tglobal': schemes.LongT5TransientGlobal(
        local_radius=3, global_block_size=4),
    'fovea': schemes.Fovea(block_len=4),
    # Every other fovea option: two nodes per band, nodes cut at the edges
    # dropped, log-count weights, levels capped at 1 (further level-1 nodes).
    'fovea_options': schemes.Fovea(block_len=2, wing=2, edge='drop',
                                   coarse_weight='count', max_level=1),
    'fma': schemes.Fma(fine_len=4, rank=2, max_length=32),
    'fma_learned': schemes.Fma(fine_len=4, rank=2,
                               downsample='grouped_conv', max_length=32),
    'masformer': schemes.MASFormer(num_full=1, window=3),
    'masformer_block': schemes.MASFormer(full_layers=(1,),
                                         local='block', block_len=4),
}


# Grouped-query attention (one key/value head for two query heads) on these.
GQA_SCHEMES = ('fovea', 'fma_learned', 'longt5_tglobal', 'masformer_block')


def tiny_config(scheme='dense', **overrides):
  options = dict(vocab_size=40, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=24,
                 num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0,
                 num_kv_heads=1 if scheme in GQA_SCHEMES else None,
                 attention=TINY_SCHEMES.get(scheme, scheme))
  options.update(overrides)
  return networks.Config(**options)


def random_variables(model, *init_args, seed=0, **init_kwargs):
  """Variables shaped as `model.init` makes them, filled from numpy at random.

  Compiling `init` costs seconds per configuration on a loaded CPU (and so does
  every eager jnp op on a new shape: test data is numpy); tests that
  need some weights, not T5's initial ones, take these. Random (not mean-valued)
  FMA filters and norm scales also make every parameter matter.
  """
  shapes = jax.eval_shape(functools.partial(model.init, **init_kwargs),
                          jax.random.PRNGKey(0), *init_args)
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda s: np.asarray(rng.normal(0.0, 0.5, s.shape), s.dtype),
      {'params': shapes['params']})
