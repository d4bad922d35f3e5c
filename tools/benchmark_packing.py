"""Packed against unpacked examples: non-padding tokens per second, per scheme.

Batches come from the framework's own input pipeline (`fovea_jax.data`, seqio
feature converters, `DatasetConfig.pack`) on the built-in tasks: `stdlib_lm`
for the decoder-only LM at `--lm_lengths` (2,048 and 8,192 tokens), and
`--encdec_tasks` for the encoder-decoder at `--encdec_length` inputs (4,096;
128 targets): `stdlib_summarization` (module sources, mostly longer than the
inputs) and `stdlib_outline` (windows of at most 255 bytes: short
documents). Each row is one loss+gradient step of the model of
tools/benchmark_model.py (2+2 layers, d_model 256, byte vocabulary) on the same
number of rows (`--batch`), packed and unpacked side by side; "real tokens" are
the targets with a non-zero loss weight (the encoder-decoder counts its
non-padding inputs too) of a mean batch (over `--batches` shuffled batches;
a step's time does not depend on its tokens), and "real tok/s" is what the
step trains per second.

`--dense_memory_length` (16,384) also reports XLA's buffer assignment for one
dense attention layer's forward and backward with segment ids: on the flash
(tree) path against the materialised score matrix.

  python tools/benchmark_packing.py
  python tools/benchmark_packing.py --schemes fovea,dense --lm_lengths 2048
"""
from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from fovea_jax import data  # noqa: E402
from fovea_jax import networks  # noqa: E402
from fovea_jax.attention import dense as dense_lib  # noqa: E402
from fovea_jax.attention import api  # noqa: E402
from fovea_jax.layers import schemes as schemes_lib  # noqa: E402
from benchmark_attention import compiled_peak_bytes, write_outputs  # noqa: E402
from benchmark_model import (BYTE_VOCAB, DIMENSIONS, scheme_spec,  # noqa: E402
                             self_attention_stack)

# Schemes that pack (docs/attention.md#packed-examples).
PACKING_SCHEMES = ('dense', 'local', 'fovea', 'fma', 'fma_learned',
                   'longt5_tglobal', 'masformer')
# Rows that are a scheme with options other than tools/benchmark_model.py's.
ROW_SCHEMES = {'fma_learned': lambda: schemes_lib.BY_NAME['fma'](
    downsample='grouped_conv')}
# The network's batch features (the model wrapper's `loss_fn` reads the same).
_NETWORK_FEATURES = {
    'decoder': ('decoder_input_tokens', 'decoder_target_tokens',
                'decoder_segment_ids', 'decoder_positions'),
    'encdec': ('encoder_input_tokens', 'decoder_input_tokens',
               'decoder_target_tokens', 'encoder_segment_ids',
               'decoder_segment_ids', 'encoder_positions', 'decoder_positions'),
}


def row_scheme(name):
  """The configured scheme of row `name`."""
  return ROW_SCHEMES[name]() if name in ROW_SCHEMES else scheme_spec(name)


def batches_of(task, lengths, batch, pack, count):
  """`count` shuffled training batches of `task` from the framework's
  pipeline (seed 0)."""
  cfg = data.DatasetConfig(mixture_or_task_name=task,
                           task_feature_lengths=lengths, split='train',
                           batch_size=batch, shuffle=True, seed=0, pack=pack,
                           module='fovea_jax.tasks')
  iterator = data.DataIterator(cfg)
  return [next(iterator) for _ in range(count)]


def real_tokens(arch, batch):
  count = int(np.sum(batch['decoder_loss_weights'] > 0))
  if arch == 'encdec':
    count += int(np.sum(batch['encoder_input_tokens'] != 0))
  return count


def compiled_step(arch, scheme, batch):
  """A compiled weighted loss+gradient step over `batch` and its arguments."""
  dims = dict(DIMENSIONS)
  if arch == 'decoder':
    dims['num_decoder_layers'], _ = self_attention_stack(arch)
    dims['num_encoder_layers'] = 0
  config = networks.Config(vocab_size=BYTE_VOCAB, dtype='float32',
                           dropout_rate=0.0, attention=row_scheme(scheme),
                           **dims)
  model = (networks.EncoderDecoder if arch == 'encdec' else
           networks.DecoderOnly)(config)
  inputs = {k: jnp.asarray(batch[k]) for k in _NETWORK_FEATURES[arch]
            if k in batch}
  weights = jnp.asarray(batch['decoder_loss_weights'], jnp.float32)
  params = jax.jit(lambda: model.init(jax.random.PRNGKey(0), **inputs,
                                      enable_dropout=False))()['params']

  def loss(params, inputs, weights):
    logits = model.apply({'params': params}, **inputs, enable_dropout=False)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    picked = jnp.take_along_axis(
        log_probs, inputs['decoder_target_tokens'][..., None], -1)[..., 0]
    return -jnp.sum(picked * weights) / jnp.maximum(jnp.sum(weights), 1.0)

  args = (params, inputs, weights)
  return jax.jit(jax.value_and_grad(loss)).lower(*args).compile(), args


def step_seconds(compiled, args, repeats):
  jax.block_until_ready(compiled(*args))  # warm-up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def rows_for(arch, task, lengths, args):
  """A step's time does not depend on the tokens (static shapes): each row
  times one compiled step and counts the real tokens of a mean batch over
  `--batches` batches."""
  batches = {pack: batches_of(task, lengths, args.batch, pack, args.batches)
             for pack in (False, True)}
  length = lengths['inputs' if arch == 'encdec' else 'targets']
  for scheme in args.schemes:
    for pack, sample in batches.items():
      compiled, step_args = compiled_step(arch, scheme, sample[0])
      seconds = step_seconds(compiled, step_args, args.repeats)
      tokens = statistics.mean(real_tokens(arch, b) for b in sample)
      yield dict(arch=arch, task=task, scheme=scheme, length=length,
                 packed=pack, rows=args.batch, real_tokens=tokens,
                 seconds=seconds, real_tokens_per_s=tokens / seconds,
                 peak_bytes=compiled_peak_bytes(compiled))
      del compiled


def dense_memory(n, heads=4, head_dim=64):
  """Peak bytes of one dense layer's forward+backward with segment ids:
  flash (tree) path and materialised scores."""
  shape = jax.ShapeDtypeStruct((1, n, heads, head_dim), jnp.float32)
  ids = jax.ShapeDtypeStruct((1, n), jnp.int32)

  def grad_of(attend):
    return jax.jit(jax.grad(lambda q, k, v, s: jnp.sum(attend(q, k, v, s)),
                            argnums=(0, 1, 2)))

  flash = lambda q, k, v, s: api.run_tree_layout(
      dense_lib.flash_layout(n, causal=True), q, k, v, scale=None,
      key_mask=None, position_bias=None, implementation='xla',
      q_segment_ids=s, kv_segment_ids=s)
  materialised = lambda q, k, v, s: dense_lib.dot_product_attention_reference(
      q, k, v, causal=True, q_segment_ids=s, kv_segment_ids=s)
  return {name: compiled_peak_bytes(
      grad_of(fn).lower(shape, shape, shape, ids).compile())
          for name, fn in (('flash', flash), ('materialised', materialised))}


def add_ratios(rows):
  unpacked = {(r['arch'], r['task'], r['scheme'], r['length']): r
              for r in rows if not r['packed']}
  for r in rows:
    base = unpacked.get((r['arch'], r['task'], r['scheme'], r['length']))
    r['vs_unpacked'] = (r['real_tokens_per_s'] / base['real_tokens_per_s']
                        if base else None)


def format_row(r):
  ratio = '' if r.get('vs_unpacked') is None else f'{r["vs_unpacked"]:.2f}'
  return (f'{r["arch"]:7s} {r["task"]:20s} {r["scheme"]:15s} {r["length"]:6d} '
          f'{"packed" if r["packed"] else "-":7s} {r["rows"]:4d} '
          f'{r["real_tokens"]:8.0f} {r["seconds"]:8.3f} '
          f'{r["real_tokens_per_s"]:10.0f} {ratio:>6s} '
          f'{r["peak_bytes"] / 2**30:6.2f}')


def plot(result, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  rows = [r for r in result['rows'] if r['packed'] and r['vs_unpacked']]
  labels = [f'{r["task"]} {r["scheme"]} {r["length"]}' for r in rows]
  fig, ax = plt.subplots(figsize=(8, 0.3 * len(rows) + 1.5))
  ax.barh(labels, [r['vs_unpacked'] for r in rows])
  ax.axvline(1.0, color='k', lw=0.8)
  ax.set_xlabel('real tokens per second, packed / unpacked')
  ax.invert_yaxis()
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def run(args):
  load = os.getloadavg()
  print(f'device: {jax.devices()[0].device_kind}, '
        f'{len(os.sched_getaffinity(0))} threads, load average '
        f'{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min)')
  print('arch    task                 scheme          length packed  rows '
        'real tok  step s real tok/s  vs -    GiB')
  rows = []
  jobs = [('decoder', 'stdlib_lm', {'targets': n}) for n in args.lm_lengths]
  if args.encdec_length:
    jobs += [('encdec', task, {'inputs': args.encdec_length, 'targets': 128})
             for task in args.encdec_tasks]
  for arch, task, lengths in jobs:
    for row in rows_for(arch, task, lengths, args):
      rows.append(row)
      add_ratios(rows)
      print(format_row(row), flush=True)
  result = dict(rows=rows, load_average=load)
  if args.dense_memory_length:
    memory = dense_memory(args.dense_memory_length)
    result['dense_memory'] = dict(length=args.dense_memory_length, **memory)
    print(f'dense attention with segment ids, one layer fwd+bwd at '
          f'{args.dense_memory_length} tokens: flash path '
          f'{memory["flash"] / 2**30:.2f} GiB, materialised '
          f'{memory["materialised"] / 2**30:.2f} GiB')
  return result


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ints = lambda s: [int(x) for x in s.split(',') if x]
  parser.add_argument('--schemes', type=lambda s: s.split(','),
                      default=list(PACKING_SCHEMES))
  parser.add_argument('--lm_lengths', type=ints, default=[2048, 8192])
  parser.add_argument('--encdec_length', type=int, default=4096,
                      help='encoder inputs of the summarization rows (0: none)')
  parser.add_argument('--encdec_tasks', type=lambda s: s.split(','),
                      default=['stdlib_summarization', 'stdlib_outline'],
                      help='encoder-decoder tasks: long inputs (module '
                      'sources), short ones (windows of at most 255 bytes)')
  parser.add_argument('--batch', type=int, default=2)
  parser.add_argument('--repeats', type=int, default=2)
  parser.add_argument('--batches', type=int, default=64,
                      help='batches over which real tokens per batch are '
                      'averaged')
  parser.add_argument('--dense_memory_length', type=int, default=16384,
                      help='0: skip the dense memory comparison')
  parser.add_argument('--output', help='write <output>.json and <output>.png')
  args = parser.parse_args(argv)
  unknown = sorted(set(args.schemes) - set(PACKING_SCHEMES))
  if unknown:
    parser.error(f'schemes {unknown} do not pack; choose from '
                 f'{list(PACKING_SCHEMES)}')
  return args


def main(argv=None):
  args = parse_args(argv)
  result = run(args)
  if args.output:
    write_outputs(result, args.output, plot)


if __name__ == '__main__':
  main()
