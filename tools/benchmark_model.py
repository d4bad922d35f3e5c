"""Training-step speed of whole models, every scheme, beside Hugging Face's LongT5.

One loss+gradient step (the work of a training step before the optimizer update)
of the encoder-decoder (inputs of `length` tokens -> `--targets` tokens) and of the
decoder-only LM (`length` tokens), for every attention scheme and input length, and
in the same run, interleaved with them, Hugging Face `transformers`'
`LongT5ForConditionalGeneration` (local and transient-global; PyTorch on CPU) with
the same dimensions and as many threads as XLA uses. Per row: median step time of
`--repeats` after a warm-up, tokens per second, peak memory, the model FLOPs of one
step and the achieved fraction of the machine's matmul peak, which is measured in the
same run (an `--peak_size`^3 product through XLA).

Model FLOPs count the matmuls a step must do (3x the forward: forward, and the
backward's two products), with attention scores over the (query, key) pairs each
layer's scheme module says it computes (`Scheme.attended_pairs`: dense all, causal
the prefix, layouts their tiles' entries, TGlobal its local tiles + its global
tokens); recomputation is not counted.
Compile time: the seconds JAX spends to trace, lower (to StableHLO) and compile
(XLA) the step, and the time to the first finished step (those three plus the
first call), what a user waits after changing an option (`--compile_only`:
only the first three, every scheme at every length). "spans": the distinct
per-block span patterns of the scheme's layouts (tree-path schemes). Peak memory: XLA's buffer
assignment of the compiled step (arguments, outputs,
temporaries); for PyTorch, the rise of the peak resident memory of a fresh process
during one step (`ru_maxrss`). On a GPU the step runs in bfloat16 with the default
(Pallas) kernels, the dense row being flash attention; the Hugging Face rows run
only on CPU.

  python tools/benchmark_model.py                       # 1k..64k, every scheme
  (on a CPU dense and MASFormer stop at --dense_max_len, 16k by default)
  python tools/benchmark_model.py --max_len 16384 --schemes local,fovea
"""
from __future__ import annotations

import os
import pathlib
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from fovea_jax import networks  # noqa: E402
from fovea_jax.layers import schemes as schemes_lib  # noqa: E402
from benchmark_attention import (MEMORY_HEADROOM, available_memory_bytes,  # noqa: E402
                                 compiled_peak_bytes, dense_runs_at, finish_plot,
                                 length_parser, measure_matmul_peak,
                                 reject_unknown_schemes, write_outputs)

BYTE_VOCAB = 259  # seqio.ByteVocabulary: 3 specials + 256 bytes
# The benchmark's model: 2+2 layers, d_model 256, 4 heads x 64, gated MLP 512.
DIMENSIONS = dict(emb_dim=256, num_heads=4, head_dim=64, mlp_dim=512,
                  num_encoder_layers=2, num_decoder_layers=2)
# Hugging Face LongT5's encoder attention types, by our scheme name.
HF_TYPES = {'local': 'local', 'longt5_tglobal': 'transient-global'}
# Every registered scheme, each with its default options except as below.
ALL_SCHEMES = tuple(schemes_lib.BY_NAME)
# MASFormer keeps dense attention in the bottom layer only (its default of 4
# dense layers would make a 2-layer stack all dense).
SCHEME_OPTIONS = {'masformer': dict(num_full=1, window=128)}
# The row every other one is compared with (`vs_tglobal`).
TGLOBAL = schemes_lib.LongT5TransientGlobal.scheme_name


def scheme_spec(name):
  """The configured scheme a row named `name` runs."""
  return schemes_lib.BY_NAME[name](**SCHEME_OPTIONS.get(name, {}))


def self_attention_stack(arch, dims=DIMENSIONS):
  """`(num_layers, causal)` of the stack the scheme runs in: the encoder of the
  encoder-decoder, or every layer of the decoder-only LM (same total depth)."""
  if arch == 'encdec':
    return dims['num_encoder_layers'], False
  return dims['num_encoder_layers'] + dims['num_decoder_layers'], True


def xla_threads():
  """Threads XLA's CPU client runs on: one per usable core."""
  return len(os.sched_getaffinity(0))


# ---------------------------------------------------------------- model FLOPs


def keys_per_query(scheme, num_layers, n, causal):
  """Mean over the stack's layers of the keys a query attends (pairs / n)."""
  return scheme.stack_pairs(num_layers, n, causal) / n


def _layer_flops(tokens, keys_per_query, d, heads, head_dim, mlp, kv_tokens=None):
  """Forward matmul FLOPs of one self-attention (or cross) + MLP layer."""
  inner = heads * head_dim
  kv_tokens = tokens if kv_tokens is None else kv_tokens
  projections = 2 * tokens * d * inner * 2 + 2 * kv_tokens * d * inner * 2
  scores = 2 * 2 * tokens * keys_per_query * inner
  return projections + scores, 2 * tokens * d * mlp * 3


def model_flops(arch, spec, n, targets, dims=DIMENSIONS, vocab=BYTE_VOCAB):
  """Model FLOPs of one loss+gradient step (3x the forward's matmuls)."""
  d, h, hd, mlp = (dims['emb_dim'], dims['num_heads'], dims['head_dim'],
                   dims['mlp_dim'])
  layers, causal = self_attention_stack(arch, dims)
  forward = 0.0
  if layers:  # FLOPs are linear in the keys: the layers' mean times the depth
    forward += layers * sum(_layer_flops(
        n, keys_per_query(spec, layers, n, causal), d, h, hd, mlp))
  if arch == 'encdec':
    # The decoder's self- and cross-attention are dense.
    dense = schemes_lib.Dense()
    for _ in range(dims['num_decoder_layers']):
      attn, ffn = _layer_flops(
          targets, dense.attended_pairs(targets, True) / targets, d, h, hd, mlp)
      cross, _ = _layer_flops(targets, n, d, h, hd, mlp, kv_tokens=n)
      forward += attn + ffn + cross
    forward += 2 * targets * d * vocab
  else:
    forward += 2 * n * d * vocab
  return 3.0 * forward


# --------------------------------------------------------------- our models


def _batch(arch, n, targets, seed=0):
  rng = np.random.default_rng(seed)
  if arch == 'encdec':
    return dict(
        encoder_input_tokens=rng.integers(3, BYTE_VOCAB, (1, n), dtype=np.int32),
        decoder_input_tokens=rng.integers(3, BYTE_VOCAB, (1, targets),
                                          dtype=np.int32),
        decoder_target_tokens=rng.integers(3, BYTE_VOCAB, (1, targets),
                                           dtype=np.int32))
  tokens = rng.integers(3, BYTE_VOCAB, (1, n + 1), dtype=np.int32)
  return dict(decoder_input_tokens=tokens[:, :-1],
              decoder_target_tokens=tokens[:, 1:])


def jax_step(arch, name, n, targets, dtype):
  """A compiled loss+grad step, its arguments and the seconds JAX spent to
  trace, lower and compile it: `(compiled, args, {'trace_s', 'lower_s',
  'compile_s'})`."""
  spec = scheme_spec(name)
  dims = dict(DIMENSIONS)
  if arch == 'decoder':
    dims['num_decoder_layers'], _ = self_attention_stack(arch)
    dims['num_encoder_layers'] = 0
  config = networks.Config(vocab_size=BYTE_VOCAB, dtype=dtype, dropout_rate=0.0,
                           attention=spec, **dims)
  model = (networks.EncoderDecoder if arch == 'encdec' else
           networks.DecoderOnly)(config)
  batch = {k: jnp.asarray(v) for k, v in _batch(arch, n, targets).items()}
  params = jax.jit(lambda: model.init(jax.random.PRNGKey(0), **batch,
                                      enable_dropout=False))()['params']

  def loss(params, batch):
    logits = model.apply({'params': params}, **batch, enable_dropout=False)
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    picked = jnp.take_along_axis(log_probs,
                                 batch['decoder_target_tokens'][..., None], -1)
    return -jnp.mean(picked)

  seconds, stage = {}, jax.jit(jax.value_and_grad(loss))
  for name, advance in (('trace_s', lambda f: f.trace(params, batch)),
                        ('lower_s', lambda t: t.lower()),
                        ('compile_s', lambda lowered: lowered.compile())):
    start = time.perf_counter()
    stage = advance(stage)
    seconds[name] = time.perf_counter() - start
  return stage, (params, batch), seconds


# ------------------------------------------------------------ Hugging Face


# LongT5's settings, our schemes' defaults (Local's window is LongT5's radius).
_TGLOBAL_DEFAULTS = schemes_lib.LongT5TransientGlobal()


def hf_model(attention_type, threads):
  import torch
  import transformers
  torch.set_num_threads(threads)
  torch.manual_seed(0)
  config = transformers.LongT5Config(
      vocab_size=BYTE_VOCAB, d_model=DIMENSIONS['emb_dim'],
      d_kv=DIMENSIONS['head_dim'], d_ff=DIMENSIONS['mlp_dim'],
      num_layers=DIMENSIONS['num_encoder_layers'],
      num_decoder_layers=DIMENSIONS['num_decoder_layers'],
      num_heads=DIMENSIONS['num_heads'], feed_forward_proj='gated-gelu',
      local_radius=_TGLOBAL_DEFAULTS.local_radius,
      global_block_size=_TGLOBAL_DEFAULTS.global_block_size,
      tie_word_embeddings=False,
      encoder_attention_type=attention_type, dropout_rate=0.0,
      decoder_start_token_id=0)
  return transformers.LongT5ForConditionalGeneration(config).train()


def hf_step_fn(attention_type, n, targets, threads):
  """A closure running one Hugging Face loss+backward step."""
  import torch
  model = hf_model(attention_type, threads)
  batch = _batch('encdec', n, targets)
  inputs = dict(input_ids=torch.tensor(batch['encoder_input_tokens'],
                                       dtype=torch.long),
                decoder_input_ids=torch.tensor(batch['decoder_input_tokens'],
                                               dtype=torch.long),
                labels=torch.tensor(batch['decoder_target_tokens'],
                                    dtype=torch.long))

  def step():
    model.zero_grad(set_to_none=True)
    model(**inputs).loss.backward()
  return step


def _time(call):
  start = time.perf_counter()
  call()
  return time.perf_counter() - start


def _rss_bytes():
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def hf_worker(attention_type, n, targets, threads):
  """Serves Hugging Face steps on stdin/stdout, in its own process.

  A separate process keeps XLA's and PyTorch's thread pools from competing and
  gives PyTorch's memory its own account: the warm-up step reports the peak rise
  of resident memory (sampled every millisecond); then every 'step' line on stdin
  runs one step and answers its seconds.
  """
  serve(hf_step_fn(attention_type, n, targets, threads))


def serve(step):
  """The worker protocol: warm-up call, 'ready <peak rise of resident memory>',
  then one timed call per 'step' line on stdin."""
  import threading
  base, peak, done = _rss_bytes(), [0], threading.Event()

  def sample():
    while not done.is_set():
      peak[0] = max(peak[0], _rss_bytes())
      time.sleep(0.001)
  sampler = threading.Thread(target=sample)
  sampler.start()
  step()
  done.set()
  sampler.join()
  print(f'ready {max(peak[0] - base, 0)}', flush=True)
  for line in sys.stdin:
    if line.strip() != 'step':
      break
    print(f'{_time(step)}', flush=True)


def hf_environment():
  """PyTorch runs with its default OpenMP settings (what its users get): on the
  idle 2-core machine they were its fastest (4k local: 0.50 s a step, against
  0.58 s with OMP_WAIT_POLICY=PASSIVE). On a shared, oversubscribed machine
  spinning OpenMP threads can make a 2-thread step many times slower, which
  would flatter our ratios: there, set OMP_WAIT_POLICY=PASSIVE (it is passed
  on) or, better, measure on an idle machine."""
  return dict(os.environ, JAX_PLATFORMS='cpu')


class HfProcess:
  """The main process's handle on an `hf_worker`.

  A worker that dies (at long inputs PyTorch's TGlobal step outgrows this
  machine's memory and the kernel kills it) leaves its row without a time and
  with the reason in `failure`; the rest of the run goes on.
  """

  def __init__(self, attention_type, n, targets, threads):
    self._start([__file__, '--hf_worker', attention_type, str(n), str(targets),
                 str(threads)], f'{attention_type}, {n} tokens')

  def _start(self, argv, label):
    """Starts `python argv...` and waits for its warm-up call's 'ready <peak>'."""
    self.failure = None
    self.peak_bytes = None
    self.proc = subprocess.Popen(
        [sys.executable, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, env=hf_environment())
    line = self.proc.stdout.readline().split()
    if not line or line[0] != 'ready':
      self._died(f'its warm-up step ({label})')
      return
    self.peak_bytes = float(line[1])

  @property
  def fits(self):
    return self.failure is None

  def _died(self, during):
    code = self.proc.wait()
    why = ' (SIGKILL: most likely out of memory)' if code == -9 else ''
    self.failure = f'Hugging Face worker exited with {code}{why} during {during}'
    print(f'warning: {self.failure}; its row is left without a time '
          '(its stderr is above).', file=sys.stderr, flush=True)

  def step_seconds(self):
    """Seconds of one step, or None when the worker has died."""
    if self.failure:
      return None
    try:
      self.proc.stdin.write('step\n')
      self.proc.stdin.flush()
      answer = self.proc.stdout.readline()
    except BrokenPipeError:
      answer = ''
    if not answer:
      self._died('a timed step')
      return None
    return float(answer)

  def close(self):
    if self.proc.poll() is None:
      self.proc.stdin.close()
    self.proc.wait()


# ----------------------------------------------------------------- the run


class JaxStep:
  """A compiled step of ours, or None-timed when it would not fit in memory."""

  def __init__(self, arch, name, n, targets, dtype):
    self.compiled, self.args, self.compile_times = jax_step(arch, name, n,
                                                            targets, dtype)
    self.first_step_s = None
    self.peak_bytes = compiled_peak_bytes(self.compiled)
    self.failure = None
    if self.peak_bytes > available_memory_bytes() * MEMORY_HEADROOM:
      self.failure = (f'needs {self.peak_bytes / 2**30:.1f} GiB, more than this '
                      'machine has free')

  @property
  def fits(self):
    return self.failure is None

  def step_seconds(self):
    start = time.perf_counter()
    jax.block_until_ready(self.compiled(*self.args))
    return time.perf_counter() - start

  def close(self):
    del self.compiled


def distinct_block_spans(arch, name, n):
  """Distinct per-block span patterns (span lengths, row by row) of the scheme's
  layout in this stack, or None for schemes without one: what the layout,
  unlike the compiled scan body, has more of as the length grows."""
  spec = scheme_spec(name)
  num_layers, causal = self_attention_stack(arch)
  patterns = set()
  for layer in range(num_layers):
    module = spec.for_layer(layer, num_layers, causal)()
    layout_fn = getattr(module, 'layout', None)
    if layout_fn is None:
      continue
    layout = layout_fn(n, causal)
    if layout is None:
      continue
    patterns.update(map(tuple, layout.span_len.tolist()))
  return len(patterns) or None


def candidates_at(n, args):
  """`[(arch, framework, scheme, runner)]` for length n."""
  dtype = 'bfloat16' if jax.default_backend() == 'gpu' else args.dtype
  out = []
  for arch in args.archs:
    for name in args.schemes:
      if (scheme_spec(name).stack_is_quadratic(*self_attention_stack(arch)) and
          not dense_runs_at(n, args) and not args.compile_only):
        print(f'{arch} {name} skipped at {n} tokens (--dense_max_len)', flush=True)
        continue
      out.append((arch, 'fovea_jax', name,
                  JaxStep(arch, name, n, args.targets, dtype)))
      if (arch == 'encdec' and name in HF_TYPES and args.hf and
          not args.compile_only and
          jax.default_backend() == 'cpu'):
        runner = HfProcess(HF_TYPES[name], n, args.targets, xla_threads())
        out.append((arch, 'hf_torch', name, runner))
  return out


def run(args):
  threads = xla_threads()
  peak = measure_matmul_peak(args.peak_size, args.repeats)
  print(f'device: {jax.devices()[0].device_kind}, {threads} threads, matmul peak '
        f'{peak / 1e9:.1f} GFLOP/s ({args.peak_size}^3)', flush=True)
  print(HEADER, flush=True)
  rows = []
  for n in [n for n in args.lengths if n <= args.max_len]:
    cands = candidates_at(n, args)
    runners = [c[-1] for c in cands]
    if args.compile_only:
      for arch, _, name, runner in cands:
        row = dict(arch=arch, framework='fovea_jax', scheme=name, length=n,
                   step_s=None, tokens_per_s=None, peak_bytes=runner.peak_bytes,
                   model_flops=model_flops(arch, scheme_spec(name), n,
                                           args.targets),
                   peak_fraction=None, times=[], failure=None,
                   block_spans=distinct_block_spans(arch, name, n),
                   first_step_s=None, **runner.compile_times)
        runner.close()
        rows.append(row)
        print(format_row(row), flush=True)
      continue
    for runner in runners:
      if runner.fits and isinstance(runner, JaxStep):
        # The warm-up; with tracing, lowering and compiling it is the time to
        # the first finished step (workers warmed up when they started).
        runner.first_step_s = (sum(runner.compile_times.values()) +
                               runner.step_seconds())
    times = [[] for _ in cands]
    for _ in range(args.repeats):  # interleaved: noise hits every row alike
      for i, runner in enumerate(runners):
        if runner.fits:
          seconds = runner.step_seconds()
          if seconds is not None:
            times[i].append(seconds)
    for (arch, framework, name, runner), ts in zip(cands, times):
      runner.close()
      flops = model_flops(arch, scheme_spec(name), n, args.targets)
      seconds = statistics.median(ts) if ts and runner.fits else None
      tokens = n + (args.targets if arch == 'encdec' else 0)
      row = dict(arch=arch, framework=framework, scheme=name, length=n,
                 block_spans=(distinct_block_spans(arch, name, n)
                              if framework == 'fovea_jax' else None),
                 step_s=seconds, tokens_per_s=tokens / seconds if seconds else None,
                 peak_bytes=runner.peak_bytes, model_flops=flops,
                 peak_fraction=flops / seconds / peak if seconds else None,
                 times=ts, failure=runner.failure,
                 **getattr(runner, 'compile_times', {}),
                 first_step_s=getattr(runner, 'first_step_s', None))
      rows.append(row)
      print(format_row(row), flush=True)
  add_ratios(rows)
  return dict(device=jax.devices()[0].device_kind, threads=threads,
              matmul_peak_flops=peak, targets=args.targets, repeats=args.repeats,
              dimensions=DIMENSIONS, rows=rows, compile_only=args.compile_only)


def add_ratios(rows):
  """vs_hf: own step / Hugging Face's (same scheme, length); vs_tglobal: own step /
  our TGlobal step (same architecture, length)."""
  def find(arch, framework, scheme, n):
    for r in rows:
      if (r['arch'], r['framework'], r['scheme'], r['length']) == (
          arch, framework, scheme, n):
        return r['step_s']
    return None
  for r in rows:
    hf = find(r['arch'], 'hf_torch', r['scheme'], r['length'])
    tg = find(r['arch'], 'fovea_jax', TGLOBAL, r['length'])
    mine = r['step_s']
    r['vs_hf'] = mine / hf if (mine and hf and r['framework'] == 'fovea_jax') \
        else None
    r['vs_tglobal'] = mine / tg if (mine and tg and r['framework'] == 'fovea_jax') \
        else None


HEADER = (f"{'arch':7} {'framework':9} {'scheme':15} {'length':>6} {'step s':>8} "
          f"{'tok/s':>8} {'GiB':>6} {'GFLOP':>7} {'%peak':>6} {'trace':>6} "
          f"{'lower':>6} {'compile':>7} {'first s':>7} {'spans':>5}")


def _gib(nbytes):
  return '' if nbytes is None else f'{nbytes / 2**30:.2f}'


def format_row(r):
  step = '    skip' if r['step_s'] is None else f"{r['step_s']:8.3f}"
  tps = '' if r['tokens_per_s'] is None else f"{r['tokens_per_s']:8.0f}"
  frac = '' if r['peak_fraction'] is None else f"{r['peak_fraction']:6.1%}"
  def seconds(key, width):
    value = r.get(key)
    return f'{value:{width}.1f}' if value is not None else ' ' * width
  return (f"{r['arch']:7} {r['framework']:9} {r['scheme']:15} {r['length']:6d} "
          f"{step} {tps:>8} {_gib(r['peak_bytes']):>6} "
          f"{r['model_flops'] / 1e9:7.1f} {frac:>6} {seconds('trace_s', 6)} "
          f"{seconds('lower_s', 6)} {seconds('compile_s', 7)} "
          f"{seconds('first_step_s', 7)} {r.get('block_spans') or '':>5}")


def _hf_seconds(row):
  if row is None:
    return ''
  return 'failed' if row['step_s'] is None else f"{row['step_s']:.3f}"


def compile_table(result):
  """The markdown table of a --compile_only run."""
  lines = ['| arch | scheme | length | trace s | lower s | compile s | spans |',
           '|---|---|---:|---:|---:|---:|---:|']
  for r in result['rows']:
    lines.append(f"| {r['arch']} | {r['scheme']} | {r['length']} | "
                 f"{r['trace_s']:.1f} | {r['lower_s']:.1f} | "
                 f"{r['compile_s']:.1f} | {r.get('block_spans') or ''} |")
  return '\n'.join(lines)


def markdown_table(result):
  if result.get('compile_only'):
    return compile_table(result)
  lines = ['| arch | scheme | length | fovea_jax s | HF s | fovea_jax / HF | '
           '/ our TGlobal | tokens/s | GiB (HF GiB) | GFLOP | % of peak |',
           '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|']
  rows = result['rows']
  hf = {(r['arch'], r['scheme'], r['length']): r for r in rows
        if r['framework'] == 'hf_torch'}
  for r in rows:
    if r['framework'] != 'fovea_jax':
      continue
    other = hf.get((r['arch'], r['scheme'], r['length']))

    def f(x, fmt):
      return '' if x is None else format(x, fmt)
    gib = _gib(r['peak_bytes'])
    if other:
      gib += f" ({_gib(other['peak_bytes']) or '-'})"
    lines.append(
        f"| {r['arch']} | {r['scheme']} | {r['length']} | "
        f"{f(r['step_s'], '.3f') or 'OOM'} | "
        f"{_hf_seconds(other)} | {f(r['vs_hf'], '.2f')} | "
        f"{f(r['vs_tglobal'], '.2f')} | {f(r['tokens_per_s'], '.0f')} | {gib} | "
        f"{r['model_flops'] / 1e9:.1f} | {f(r['peak_fraction'], '.1%')} |")
  notes = [f"- {r['arch']} {r['framework']} {r['scheme']} {r['length']}: "
           f"{r['failure']}" for r in rows if r.get('failure')]
  return '\n'.join(lines + ([''] + notes if notes else []))


def plot(result, path):
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  rows = result['rows']
  # A --compile_only run has no step times: its left panel is compile time.
  key, what = (('step_s', 'loss+grad step time (s)')
               if any(r['step_s'] for r in rows) else
               ('compile_s', 'XLA compile time of the step (s)'))
  fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 5))
  series = sorted({(r['arch'], r['framework'], r['scheme']) for r in rows})
  for arch, framework, scheme in series:
    pts = [r for r in rows
           if (r['arch'], r['framework'], r['scheme']) == (arch, framework, scheme)]
    timed = [r for r in pts if r.get(key)]
    label = f'{arch} {scheme}' + (' (HF)' if framework == 'hf_torch' else '')
    style = '--' if framework == 'hf_torch' else '-'
    ax_t.plot([r['length'] for r in timed], [r[key] for r in timed],
              'o' + style, label=label)
    sized = [r for r in pts if r['peak_bytes'] is not None]
    ax_m.plot([r['length'] for r in sized], [r['peak_bytes'] / 2**30 for r in sized],
              'o' + style, label=label)
  finish_plot(fig, ((ax_t, what),
                    (ax_m, 'step peak memory (GiB)')), 'input length',
              f"model step on {result['device']}", path, legend_size=7)


def parse_args(argv=None):
  parser = length_parser(__doc__)
  parser.add_argument('--schemes', type=lambda s: s.split(','),
                      default=list(ALL_SCHEMES))
  parser.add_argument('--archs', type=lambda s: s.split(','),
                      default=['encdec', 'decoder'])
  parser.add_argument('--targets', type=int, default=256)
  parser.add_argument('--dtype', default='float32', help='CPU; GPU uses bfloat16')
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--peak_size', type=int, default=4096)
  parser.add_argument('--no_hf', dest='hf', action='store_false',
                      help='skip the Hugging Face rows')
  parser.add_argument('--compile_only', action='store_true',
                      help='trace, lower and compile every row (dense too, at '
                      'any length) without running a step')
  parser.add_argument('--out', default='benchmarks/out/model')
  args = parser.parse_args(argv)
  reject_unknown_schemes(parser, args.schemes, ALL_SCHEMES)
  if set(args.archs) - {'encdec', 'decoder'}:
    parser.error("--archs takes 'encdec' and/or 'decoder'")
  return args


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  if argv and argv[0] == '--hf_worker':
    attention_type, n, targets, threads = argv[1:]
    hf_worker(attention_type, int(n), int(targets), int(threads))
    return
  args = parse_args(argv)
  result = run(args)
  print('\n' + markdown_table(result))
  write_outputs(result, args.out, plot)


if __name__ == '__main__':
  main()
