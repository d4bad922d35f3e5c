"""Static patterns reach XLA as small arrays: no large constants in the program.

Constants embedded in a compiled program are copied, hashed and, when an op
reads only constants, folded by XLA at compile time; at 1k-64k tokens the
expanded `[blocks, keys]` tables of the tree path were constants of 1-10 MiB per
table and layer, and XLA's slow-operation alarm fired while folding them. The
layout's spans (`[blocks, spans]`) and the segment geometry are all the program
needs; everything larger is computed from iotas.
"""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fovea_jax import attention

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow

# Largest constant a program may embed, in elements. The span tables of fovea at
# 16k tokens are [128 blocks, <= 40 spans] per head; 2^16 leaves room for any
# layout's spans up to 64k tokens while catching a [blocks, keys] table at 1k.
MAX_CONSTANT_ELEMENTS = 2**16

_CONSTANT = re.compile(r'stablehlo\.constant dense<.*?> : tensor<([0-9x]*)[a-z]')


def largest_constant(lowered) -> int:
  sizes = [int(np.prod([int(d) for d in shape.split('x') if d]))
           for shape in _CONSTANT.findall(lowered.as_text())]
  return max(sizes, default=0)


def _fwd_bwd(attend, length, heads=4, head_dim=16):
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  q, k, v = (jax.random.normal(key, (1, length, heads, head_dim)) for key in keys)

  def loss(q, k, v):
    return jnp.sum(attend(q, k, v) ** 2)

  return jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, k, v)


def _bias(heads=4):
  table = jnp.zeros((32, heads))
  return attention.RelativePositionBias(table, 32, 128, bidirectional=False)


CASES = {
    'dense causal 4k': (4096, lambda q, k, v: attention.dot_product_attention(
        q, k, v, causal=True, position_bias=_bias(), implementation='xla')),
    'dense cross 4k': (4096, lambda q, k, v: attention.dot_product_attention(
        q[:, :256], k, v, implementation='xla')),
    'sliding causal 4k': (4096, lambda q, k, v: attention.local_attention(
        q, k, v, window=127, causal=True, position_bias=_bias(),
        implementation='xla')),
    'fovea causal 16k': (16384, lambda q, k, v: attention.fovea_attention(
        q, k, v, block_len=128, causal=True, position_bias=_bias(),
        implementation='xla')),
    'fma 16k': (16384, lambda q, k, v: attention.fma_attention(
        q, k, v, fine_len=128, rank=16, implementation='xla')),
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_no_large_constants(case):
  length, attend = CASES[case]
  assert largest_constant(_fwd_bwd(attend, length)) <= MAX_CONSTANT_ELEMENTS


_STEP = '''
import sys
import jax, jax.numpy as jnp, numpy as np
from fovea_jax import networks
from fovea_jax.layers import schemes
for name, length, batch in (('dense', 1024, 16), ('dense', 4096, 1),
                            ('fovea', 16384, 1)):
  config = networks.Config(vocab_size=64, emb_dim=32, num_heads=4, head_dim=8,
                           mlp_dim=64, num_encoder_layers=0, num_decoder_layers=2,
                           dropout_rate=0.0, attention=schemes.get_scheme(name))
  model = networks.DecoderOnly(config)
  tokens = jnp.asarray(np.random.default_rng(0).integers(1, 64, (batch, length)))
  params = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), tokens, tokens, enable_dropout=False))['params']
  def loss(params):
    logits = model.apply({'params': params}, tokens, tokens, enable_dropout=False)
    return jnp.mean(jax.nn.log_softmax(logits)[..., 0])
  # Constant folding and the alarm happen while compiling: no need to run it.
  jax.jit(jax.value_and_grad(loss)).lower(params).compile()
  print(name, length, 'ok', flush=True)
'''

# What XLA prints while compiling when a program makes it work too hard: the
# slow-operation alarm (constant folding over a second) and any error-level line
# of its C++ logging (`E<mmdd> <time> ...`).
_ALARMS = re.compile(r'slow_operation_alarm|Constant folding|^E\d{4} ', re.M)


@pytest.mark.slow
def test_a_training_step_logs_no_xla_alarm(tmp_path):
  """Causal dense models at 1k tokens (batch 16) and 4k, and a fovea model at
  16k, loss and gradients compiled, in a fresh process with XLA's logging at
  its defaults: nothing at error level."""
  import os
  import subprocess
  import sys
  env = {k: v for k, v in os.environ.items()
         if k not in ('TF_CPP_MIN_LOG_LEVEL', 'XLA_FLAGS')}
  env['JAX_PLATFORMS'] = 'cpu'
  done = subprocess.run([sys.executable, '-c', _STEP], capture_output=True,
                        text=True, env=env, timeout=900)
  assert done.returncode == 0, done.stderr[-3000:]
  assert done.stdout.split() == ['dense', '1024', 'ok', 'dense', '4096', 'ok',
                                 'fovea', '16384', 'ok']
  assert not _ALARMS.search(done.stderr), done.stderr[-3000:]
