"""Decoding speed: encoder-decoder generation beside Hugging Face, LM continuation.

Two parts, each a table (printed, and JSON and a PNG with --output):

- `encdec`: summarization-style inference of the 2+2-layer model of
  tools/benchmark_model.py (d_model 256, 4 heads x 64, byte vocabulary) at
  `--input_lens` tokens, `--new_tokens` generated tokens (256), greedy and beam
  search (`--beams`, 3), batch 1: ours (`EncoderDecoderModel.predict_batch`, one
  compiled program: encoder, cache and decode loop) against `transformers`'
  `generate` for the same LongT5 (PyTorch in its own process, same thread count,
  interleaved with ours call by call). EOS is never produced (ours: an id past
  the vocabulary; Hugging Face: `min_new_tokens`), so both do the same number of
  steps. "first token" is the same program run for one new token: encoding plus
  one decoder step.
- `lm`: decoder-only continuation of `--prompt_lens` tokens by `--new_tokens`
  tokens (4 layers, same widths), per scheme: the compiled loop of cached steps
  starting at position P, so the per-token time is that of a step whose cache
  holds P tokens (fovea's pyramid, the dense cache, the local window, TGlobal's
  groups). fovea_jax feeds a prompt through the cache one token at a time;
  "prompt s" is that prefill, measured up to --prefill_max_len tokens.

Times are medians of --repeats calls after a warm-up call (compile excluded,
reported as its own column). Memory: XLA's buffer assignment of the compiled
program for ours, the resident-memory rise of the worker for Hugging Face.

  python tools/benchmark_decode.py                        # both parts
  python tools/benchmark_decode.py --parts lm --prompt_lens 4096,65536
"""
from __future__ import annotations

import argparse
import functools
import os
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from fovea_jax import decoding  # noqa: E402
from fovea_jax import models  # noqa: E402
from fovea_jax import networks  # noqa: E402
from fovea_jax.layers import schemes as schemes_lib  # noqa: E402
from benchmark_attention import (compiled_peak_bytes, finish_plot,  # noqa: E402
                                 write_outputs)
from benchmark_model import (BYTE_VOCAB, DIMENSIONS, HF_TYPES,  # noqa: E402
                             HfProcess, hf_model, serve, xla_threads)

# Never produced: the logits cover ids 0..BYTE_VOCAB-1.
NO_EOS = BYTE_VOCAB


class _Vocabulary:
  """What EncoderDecoderModel reads of a vocabulary when predicting."""
  eos_id = NO_EOS


def _tokens(shape, seed=0):
  return np.random.default_rng(seed).integers(3, BYTE_VOCAB, shape, np.int32)


def _config(scheme_name, arch):
  dims = dict(DIMENSIONS)
  if arch == 'lm':
    layers = dims['num_encoder_layers'] + dims['num_decoder_layers']
    dims['num_decoder_layers'], dims['num_encoder_layers'] = layers, 0
  return networks.Config(vocab_size=BYTE_VOCAB, dtype='float32',
                         dropout_rate=0.0,
                         attention=schemes_lib.get_scheme(scheme_name), **dims)


def _timed(call):
  start = time.perf_counter()
  jax.block_until_ready(call())
  return time.perf_counter() - start


class _Compiled:
  """A compiled program of ours and its arguments; `step_seconds` runs it."""

  def __init__(self, fn, *args):
    start = time.perf_counter()
    self.compiled = jax.jit(fn).lower(*args).compile()
    self.compile_seconds = time.perf_counter() - start
    self.args = args
    self.peak_bytes = compiled_peak_bytes(self.compiled)
    self.failure = None

  @property
  def fits(self):
    return True

  def step_seconds(self):
    return _timed(lambda: self.compiled(*self.args))

  def close(self):
    del self.compiled


# ------------------------------------------------------ encoder-decoder part


def encdec_program(scheme_name, n, new_tokens, beams):
  """Our whole generation (encode, cache, loop) as one compiled program."""
  decode_fn = decoding.beam_search if beams > 1 else decoding.greedy_decode
  module = networks.EncoderDecoder(_config(scheme_name, 'encdec'))
  model = models.EncoderDecoderModel(module, _Vocabulary(), _Vocabulary(),
                                     decode_fn=decode_fn)
  batch = dict(encoder_input_tokens=jnp.asarray(_tokens((1, n))),
               decoder_input_tokens=jnp.zeros((1, new_tokens), jnp.int32))
  params = jax.jit(lambda: model.get_initial_variables(
      jax.random.PRNGKey(0), {k: v.shape for k, v in batch.items()},
      {k: v.dtype for k, v in batch.items()}))()['params']
  predict = functools.partial(model.predict_batch_with_aux, num_decodes=beams,
                              decoder_params=dict(eos_id=NO_EOS))
  return _Compiled(lambda p, b: predict(p, b)[0], params, batch)


def hf_generate_fn(attention_type, n, new_tokens, beams, threads):
  """A closure running one Hugging Face `generate`."""
  import torch
  model = hf_model(attention_type, threads).eval()
  inputs = torch.tensor(_tokens((1, n)), dtype=torch.long)

  def generate():
    with torch.inference_mode():
      model.generate(inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                     num_beams=beams, do_sample=False, early_stopping=False)
  return generate


def hf_worker(attention_type, n, new_tokens, beams, threads):
  """Serves Hugging Face `generate` calls on stdin/stdout (as benchmark_model's
  worker serves training steps)."""
  serve(hf_generate_fn(attention_type, n, new_tokens, beams, threads))


class HfGenerate(HfProcess):
  """A Hugging Face `generate` worker (benchmark_model.HfProcess's protocol)."""

  def __init__(self, attention_type, n, new_tokens, beams, threads):
    self.compile_seconds = None
    self._start([__file__, '--hf_worker', attention_type, str(n),
                 str(new_tokens), str(beams), str(threads)],
                f'{attention_type} generate, {n} tokens')


def encdec_groups(args, n):
  """Per (scheme, beams, new tokens) at input length n, a function making
  `[(row, runner)]`: ours and Hugging Face's, measured interleaved (one group
  alive at a time: a 16k-token PyTorch worker holds GiBs)."""
  def group(scheme, beams, new):
    row = dict(part='encdec', scheme=scheme, length=n, beams=beams,
               new_tokens=new)
    out = [(dict(row, framework='fovea_jax'),
            encdec_program(scheme, n, new, beams))]
    if args.hf and scheme in HF_TYPES:
      out.append((dict(row, framework='hf_torch'),
                  HfGenerate(HF_TYPES[scheme], n, new, beams, xla_threads())))
    return out
  return [functools.partial(group, scheme, beams, new)
          for scheme in args.encdec_schemes for beams in args.beams
          for new in (args.new_tokens, 1)]


# --------------------------------------------------------------- LM part


def _at_position(cache, position):
  """The cache with every `cache_index` set to `position`."""
  def put(path, leaf):
    name = jax.tree_util.keystr(path)
    return jnp.asarray(position, leaf.dtype) if 'cache_index' in name else leaf
  return jax.tree_util.tree_map_with_path(put, cache)


def lm_programs(scheme_name, prompt, new_tokens, with_prefill):
  """`(continuation, prefill or None, cache bytes)`: compiled greedy loops of
  cached steps, the continuation from position `prompt`."""
  module = networks.DecoderOnly(_config(scheme_name, 'lm'))
  total = prompt + new_tokens
  # The params do not depend on the length: init on a short input (a full
  # forward at 64k tokens would cost more than the benchmark); the cache starts
  # empty (zeros) at its full length.
  short = jnp.ones((1, 16), jnp.int32)
  variables = jax.jit(lambda: module.init(jax.random.PRNGKey(0), short, short,
                                          enable_dropout=False))()
  ones = jnp.ones((1, total), jnp.int32)
  shapes = jax.eval_shape(lambda: module.apply(
      variables, ones, ones, enable_dropout=False, decode=True,
      mutable=['cache'])[1]['cache'])
  cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  cache_bytes = sum(x.nbytes for x in jax.tree.leaves(cache))

  def loop(params, cache, first_token, steps):
    def step(_, carry):
      token, cache = carry
      logits, mutated = module.apply(
          {'params': params, 'cache': cache}, token, token,
          enable_dropout=False, decode=True, mutable=['cache'])
      return (jnp.argmax(logits, -1).astype(jnp.int32), mutated['cache'])
    return jax.lax.fori_loop(0, steps, step, (first_token, cache))[0]

  token = jnp.asarray(_tokens((1, 1)))
  params = variables['params']
  continuation = _Compiled(functools.partial(loop, steps=new_tokens), params,
                           _at_position(cache, prompt), token)
  prefill = (_Compiled(functools.partial(loop, steps=prompt), params, cache,
                       token) if with_prefill else None)
  return continuation, prefill, cache_bytes


def lm_groups(args, n):
  """Per scheme at prompt length n, a function making `[(row, runner)]`."""
  def group(scheme):
    continuation, prefill, cache_bytes = lm_programs(
        scheme, n, args.new_tokens, n <= args.prefill_max_len)
    row = dict(part='lm', framework='fovea_jax', scheme=scheme, length=n,
               beams=1, cache_bytes=cache_bytes)
    out = [(dict(row, new_tokens=args.new_tokens), continuation)]
    if prefill is not None:
      out.append((dict(row, new_tokens=0, prefill_tokens=n), prefill))
    return out
  return [functools.partial(group, scheme) for scheme in args.lm_schemes]


# ----------------------------------------------------------------- the run


def measure(runners, repeats):
  """Times every runner `repeats` times, interleaved call by call."""
  times = [[] for _ in runners]
  for _ in range(repeats):
    for i, (_, runner) in enumerate(runners):
      seconds = runner.step_seconds() if runner.fits else None
      if seconds is not None:
        times[i].append(seconds)
  rows = []
  for (row, runner), ts in zip(runners, times):
    seconds = statistics.median(ts) if ts else None
    rows.append(dict(row, seconds=seconds, runs=ts,
                     compile_seconds=runner.compile_seconds,
                     peak_bytes=runner.peak_bytes, failure=runner.failure))
    runner.close()
  return rows


def add_rates(rows):
  """tokens_per_s (generated tokens, all beams' work counted once per row),
  ms_per_token and vs_hf (ours / Hugging Face's seconds, same row)."""
  for r in rows:
    steps = r.get('prefill_tokens') or r['new_tokens']
    r['ms_per_token'] = 1e3 * r['seconds'] / steps if r['seconds'] else None
    r['tokens_per_s'] = steps / r['seconds'] if r['seconds'] else None
    r['vs_hf'] = None
  key = lambda r: (r['part'], r['scheme'], r['length'], r['beams'],
                   r['new_tokens'])
  hf = {key(r): r for r in rows if r['framework'] == 'hf_torch'}
  for r in rows:
    other = hf.get(key(r))
    if r['framework'] == 'fovea_jax' and other and r['seconds'] and \
        other['seconds']:
      r['vs_hf'] = r['seconds'] / other['seconds']
  return rows


HEADER = (f"{'part':6} {'framework':9} {'scheme':15} {'length':>6} {'beams':>5} "
          f"{'tokens':>6} {'s':>8} {'ms/token':>9} {'vs HF':>6} {'compile s':>9} "
          f"{'GiB':>6}")


def _fmt(x, spec, width):
  return f'{x:{width}{spec}}' if x is not None else ' ' * (width - 1) + '-'


def format_row(r):
  tokens = r.get('prefill_tokens') or r['new_tokens']
  kind = 'prompt' if r.get('prefill_tokens') else str(tokens)
  return (f"{r['part']:6} {r['framework']:9} {r['scheme']:15} {r['length']:6d} "
          f"{r['beams']:5d} {kind:>6} {_fmt(r['seconds'], '.3f', 8)} "
          f"{_fmt(r['ms_per_token'], '.2f', 9)} {_fmt(r['vs_hf'], '.2f', 6)} "
          f"{_fmt(r['compile_seconds'], '.1f', 9)} "
          f"{_fmt(r['peak_bytes'] and r['peak_bytes'] / 2**30, '.2f', 6)}"
          + (f"  ({r['failure']})" if r['failure'] else ''))


def plot(result, path):
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  rows = [r for r in result['rows'] if r['seconds'] and
          r['new_tokens'] == result['new_tokens']]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for part, ax in zip(('encdec', 'lm'), axes):
    series = sorted({(r['framework'], r['scheme'], r['beams'])
                     for r in rows if r['part'] == part})
    for framework, scheme, beams in series:
      pts = sorted((r['length'], r['ms_per_token']) for r in rows
                   if (r['part'], r['framework'], r['scheme'], r['beams']) ==
                   (part, framework, scheme, beams))
      label = f'{scheme} beams={beams}' + (' (HF)' if framework == 'hf_torch'
                                           else '')
      ax.plot(*zip(*pts), marker='o', label=label)
    ax.set_ylabel('ms per generated token')
  finish_plot(fig, zip(axes, ('encoder-decoder generation (input tokens)',
                              'LM continuation (prompt tokens)')),
              'tokens', 'Decoding time per token', path)


def run(args):
  threads = xla_threads()
  load = os.getloadavg()
  print(f'device: {jax.devices()[0].device_kind}, {threads} threads, load '
        f'average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min)',
        flush=True)
  print(HEADER, flush=True)
  rows = []
  jobs = ([('encdec', n) for n in args.input_lens] if 'encdec' in args.parts
          else []) + ([('lm', n) for n in args.prompt_lens] if 'lm' in args.parts
                      else [])
  for part, n in jobs:
    for make in (encdec_groups if part == 'encdec' else lm_groups)(args, n):
      try:
        runners = make()
      except ValueError as error:  # a scheme refusing this length: say so, go on
        row = dict(part=part, framework='fovea_jax', length=n, beams=1,
                   new_tokens=args.new_tokens, seconds=None, runs=[],
                   compile_seconds=None, peak_bytes=None, failure=str(error),
                   scheme=make.args[0])
        rows.append(add_rates([row])[0])
        print(format_row(row), flush=True)
        continue
      for r in add_rates(measure(runners, args.repeats)):
        rows.append(r)
        print(format_row(r), flush=True)
  add_rates(rows)
  return dict(device=jax.devices()[0].device_kind, threads=threads,
              load_average=load, new_tokens=args.new_tokens, rows=rows)


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--parts', type=lambda s: s.split(','),
                      default=['encdec', 'lm'])
  lengths = lambda s: [int(x) for x in s.split(',')]
  parser.add_argument('--input_lens', type=lengths, default=[4096, 16384])
  parser.add_argument('--prompt_lens', type=lengths, default=[4096, 16384, 65536])
  parser.add_argument('--new_tokens', type=int, default=256)
  parser.add_argument('--beams', type=lambda s: [int(b) for b in s.split(',')],
                      default=[1, 3])
  parser.add_argument('--encdec_schemes', type=lambda s: s.split(','),
                      default=['local', 'longt5_tglobal'])
  parser.add_argument('--lm_schemes', type=lambda s: s.split(','),
                      default=['fovea', 'dense', 'local', 'longt5_tglobal'])
  parser.add_argument('--prefill_max_len', type=int, default=4096,
                      help='measure the token-by-token prompt prefill up to this '
                      'prompt length')
  parser.add_argument('--repeats', type=int, default=2)
  parser.add_argument('--no_hf', dest='hf', action='store_false')
  parser.add_argument('--output', default=None,
                      help='write <output>.json and <output>.png')
  args = parser.parse_args(argv)
  unknown = sorted({*args.encdec_schemes, *args.lm_schemes} -
                   set(schemes_lib.BY_NAME))
  if unknown:
    parser.error(f'unknown schemes {unknown}; choose from '
                 f'{sorted(schemes_lib.BY_NAME)}')
  bad = sorted(set(args.parts) - {'encdec', 'lm'})
  if bad:
    parser.error(f"unknown parts {bad}; choose from ['encdec', 'lm']")
  return args


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if argv and argv[0] == '--hf_worker':
    attention_type, n, new, beams, threads = argv[1:]
    hf_worker(attention_type, int(n), int(new), int(beams), int(threads))
    return None
  args = parse_args(argv)
  result = run(args)
  if args.output:
    write_outputs(result, args.output, plot)
  return result


if __name__ == '__main__':
  main()
