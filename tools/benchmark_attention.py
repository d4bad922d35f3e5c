"""Benchmarks every attention scheme against dense attention, side by side.

For each scheme, implementation and length: forward and forward+backward wall time
(best of --repeats after a compile run) and peak memory (XLA's buffer assignment of
the compiled program: arguments + outputs + temporaries; on GPU also the device's
own peak counter), plus the scheme's attended fraction of the dense score matrix so
that time can be read against the ideal, and the forward's share of the machine's
matmul peak (measured in the same run) on the FLOPs of the scores it attends. Prints a table and writes JSON and a PNG
(log-log time and memory against length).

  python tools/benchmark_attention.py                      # 1k..64k
  (on a CPU dense attention stops at --dense_max_len, 16k by default: its time
  is quadratic)
  python tools/benchmark_attention.py --max_len 8192 --schemes dense,fovea
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from fovea_jax import attention  # noqa: E402
from fovea_jax.layers import schemes  # noqa: E402

# Named variants benchmarked beside the registered schemes: configured modules.
VARIANTS = {'sliding': schemes.Local}
# Scheme options taken from this tool's arguments, by row name.
ARGUMENT_OPTIONS = {'fovea': ('block_len',), 'fma': ('fine_len', 'rank'),
                    'sliding': ('window',)}
# Every scheme that runs as one layer (a schedule such as MASFormer hands its
# layers other schemes' modules), then the variants.
CHOICES = tuple([name for name, cls in schemes.BY_NAME.items()
                 if not cls.schedule] + list(VARIANTS))
# The rows run by default (tools/gpu_report.py runs these).
DEFAULT_SCHEMES = ('dense', 'fovea', 'fma', 'sliding')
# The baseline of the ratios (and of the cuDNN row on a GPU).
BASELINE = schemes.Dense.scheme_name


def scheme_module(name, args) -> schemes.Scheme:
  """The configured (non-causal) scheme module a row named `name` runs."""
  cls = VARIANTS.get(name) or schemes.BY_NAME[name]
  return cls(**{option: getattr(args, option)
                for option in ARGUMENT_OPTIONS.get(name, ())})


def attention_fn(module, q, k, v, implementation):
  """`fn(q, k, v)` running `module` as a layer's scheme does in the network.

  The hidden states a scheme may read (transient-global's group sums) are q's
  heads side by side, and their key/value projection a reshape: one layer
  without the network's projections around it. Parameters (FMA's learned
  filters, the global tokens' norm) start as the module initialises them.
  """
  def inputs(q, implementation):
    hidden = q.reshape(q.shape[0], q.shape[1], -1)
    return schemes.base.AttentionInputs(
        inputs=hidden, implementation=implementation,
        project_kv=lambda x: (x.reshape(x.shape[:2] + k.shape[2:]),) * 2)

  def init(rng, q, k, v):
    # Parameters do not depend on the implementation: trace the XLA path,
    # which is fast to trace on every backend.
    return module.init(rng, q, k, v, inputs(q, 'xla'))

  rng = jax.random.PRNGKey(0)
  variables = (jax.jit(init)(rng, q, k, v)
               if jax.tree.leaves(jax.eval_shape(init, rng, q, k, v)) else {})

  def fn(q, k, v):
    return module.apply(variables, q, k, v, inputs(q, implementation))
  return fn


def measure_matmul_peak(size, repeats):
  """FLOP/s of an `[size, size] @ [size, size]` product through XLA (median)."""
  dtype = jnp.bfloat16 if jax.default_backend() == 'gpu' else jnp.float32
  a, b = (jax.random.normal(k, (size, size), dtype)
          for k in jax.random.split(jax.random.PRNGKey(0)))
  product = jax.jit(jnp.matmul).lower(a, b).compile()
  jax.block_until_ready(product(a, b))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(product(a, b))
    times.append(time.perf_counter() - start)
  return 2.0 * size ** 3 / statistics.median(times)


def cudnn_dense(q, k, v):
  return jax.nn.dot_product_attention(q, k, v, implementation='cudnn')


def available_memory_bytes():
  if jax.default_backend() == 'cpu':
    return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_AVPHYS_PAGES')
  stats = jax.devices()[0].memory_stats() or {}
  return stats.get('bytes_limit', 1 << 60)


def compiled_peak_bytes(compiled):
  analysis = compiled.memory_analysis()
  if analysis is None:
    return float('nan')
  return (analysis.argument_size_in_bytes + analysis.output_size_in_bytes +
          analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)


def time_compiled(compiled, args, repeats):
  jax.block_until_ready(compiled(*args))  # warm-up
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    best = min(best, time.perf_counter() - start)
  return best


# Share of the currently free memory a program may need before it is not run.
MEMORY_HEADROOM = 0.8


def measure(fn, args, repeats):
  """`(fwd_s, fwd_bytes, fwdbwd_s, fwdbwd_bytes)`; time is None when it cannot fit.

  Free memory is read before each program, not once per run: other processes come
  and go, and a dense program that no longer fits is killed, losing the run.
  """
  def loss(q, k, v):
    return jnp.sum(fn(q, k, v).astype(jnp.float32))

  results = []
  for program in (fn, jax.grad(loss, argnums=(0, 1, 2))):
    compiled = jax.jit(program).lower(*args).compile()
    peak = compiled_peak_bytes(compiled)
    seconds = None
    if not peak > available_memory_bytes() * MEMORY_HEADROOM:
      seconds = time_compiled(compiled, args, repeats)
    results += [seconds, peak]
    del compiled
  return tuple(results)


def run(args):
  lengths = [n for n in args.lengths if n <= args.max_len]
  modules = {name: scheme_module(name, args) for name in args.schemes}
  # Pallas rows only where the kernels compile (GPU/TPU): on CPU they would time
  # Pallas' interpreter. Pass --implementations xla,pallas to force them.
  implementations = args.implementations or (
      ['xla'] + (['pallas'] if attention.default_implementation() == 'pallas'
                 else []))
  dtype = jnp.dtype(args.dtype)
  rows = []
  for n in lengths:
    key = jax.random.PRNGKey(n)
    q, k, v = (jax.random.normal(kk, (args.batch, n, args.heads, args.head_dim),
                                 dtype) for kk in jax.random.split(key, 3))
    candidates = []
    for name, module in modules.items():
      if module.quadratic and not dense_runs_at(n, args):
        print(f'{name} skipped at {n} tokens (--dense_max_len)', flush=True)
        continue
      fraction = module.attended_pairs(n, causal=False) / (n * n)
      for impl in implementations:
        if module.quadratic and impl == 'reference':
          continue  # its oracle is its materialised path
        candidates.append((name, impl, fraction,
                           attention_fn(module, q, k, v, impl)))
    if (BASELINE in args.schemes and jax.default_backend() == 'gpu' and
        dense_runs_at(n, args)):
      candidates.append((BASELINE, 'cudnn', 1.0, cudnn_dense))
    for name, impl, fraction, fn in candidates:
      fwd_s, fwd_b, both_s, both_b = measure(fn, (q, k, v), args.repeats)
      row = dict(scheme=name, implementation=impl, length=n, fraction=fraction,
                 forward_s=fwd_s, forward_bytes=fwd_b, fwd_bwd_s=both_s,
                 fwd_bwd_bytes=both_b)
      rows.append(row)
      print(format_row(row), flush=True)
  add_ratios(rows)
  return rows


def add_peak_fractions(rows, peak_flops, heads, head_dim, batch):
  """Forward's achieved share of the measured matmul peak, on the FLOPs of the
  scores it attends (QK^T and PV: 4 * attended pairs * head_dim per head), and
  the achieved TFLOP/s on them: `fwd_tflops`, and `fwd_bwd_tflops` counting the
  forward+backward as 3.5x the forward (FlashAttention's convention: the
  backward recomputes the scores, 5 products)."""
  for r in rows:
    flops = 4.0 * batch * heads * head_dim * r['fraction'] * r['length'] ** 2
    r['forward_flops'] = flops
    r['matmul_peak_flops'] = peak_flops
    r['forward_peak_fraction'] = (flops / r['forward_s'] / peak_flops
                                  if r['forward_s'] else None)
    r['fwd_tflops'] = flops / r['forward_s'] / 1e12 if r['forward_s'] else None
    r['fwd_bwd_tflops'] = (3.5 * flops / r['fwd_bwd_s'] / 1e12
                           if r['fwd_bwd_s'] else None)


def _ratio(a, b):
  return a / b if a and b else None


def add_ratios(rows):
  """Ratios against baselines measured in the same run.

  fwd_bwd_speedup: dense XLA f+b time / own (and ideal_speedup, its ideal).
  Against the GPU baselines: fwd_vs_cudnn = own forward / cuDNN dense forward;
  bwd_over_fwd = own backward / own forward; mem_vs_flash = own f+b peak memory /
  flash dense (dense through the Pallas kernel) f+b peak memory.
  """
  def baseline(impl):
    return {r['length']: r for r in rows
            if r['scheme'] == BASELINE and r['implementation'] == impl}
  dense, cudnn, flash = baseline('xla'), baseline('cudnn'), baseline('pallas')
  for r in rows:
    n = r['length']
    r['ideal_speedup'] = 1.0 / r['fraction']
    r['fwd_bwd_speedup'] = _ratio((dense.get(n) or {}).get('fwd_bwd_s'),
                                  r['fwd_bwd_s'])
    r['fwd_vs_cudnn'] = _ratio(r['forward_s'],
                               (cudnn.get(n) or {}).get('forward_s'))
    backward = (r['fwd_bwd_s'] - r['forward_s']
                if r['fwd_bwd_s'] and r['forward_s'] else None)
    r['bwd_over_fwd'] = _ratio(backward, r['forward_s'])
    r['mem_vs_flash'] = _ratio(r['fwd_bwd_bytes'],
                               (flash.get(n) or {}).get('fwd_bwd_bytes'))


def _fmt_s(x):
  return '     OOM' if x is None else f'{x:8.3f}'


def _fmt_gb(x):
  return f'{x / 2**30:7.2f}'


HEADER = (f"{'scheme':8} {'impl':7} {'length':>6} {'frac':>6} {'fwd s':>8} "
          f"{'fwd GiB':>7} {'f+b s':>8} {'f+b GiB':>7}")


def format_row(r):
  return (f"{r['scheme']:8} {r['implementation']:7} {r['length']:6d} "
          f"{r['fraction']:6.3f} {_fmt_s(r['forward_s'])} "
          f"{_fmt_gb(r['forward_bytes'])} {_fmt_s(r['fwd_bwd_s'])} "
          f"{_fmt_gb(r['fwd_bwd_bytes'])}")


def print_summary(rows):
  print('\n' + HEADER + f" {'speedup':>8} {'ideal':>6} {'eff':>5}")
  for r in rows:
    speed = r['fwd_bwd_speedup']
    extra = (f" {speed:8.2f} {r['ideal_speedup']:6.2f} "
             f"{speed / r['ideal_speedup']:5.0%}" if speed else '')
    ratios = [f'{name}={r[name]:.3g}' for name in
             ('fwd_vs_cudnn', 'bwd_over_fwd', 'mem_vs_flash',
              'forward_peak_fraction', 'fwd_tflops', 'fwd_bwd_tflops')
             if r.get(name)]
    print(format_row(r) + extra + ('  ' + ' '.join(ratios) if ratios else ''))


def plot(rows, path):
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 5))
  series = sorted({(r['scheme'], r['implementation']) for r in rows})
  for scheme, impl in series:
    pts = [r for r in rows if (r['scheme'], r['implementation']) == (scheme, impl)]
    timed = [r for r in pts if r['fwd_bwd_s']]
    label = f'{scheme} ({impl})'
    ax_t.plot([r['length'] for r in timed], [r['fwd_bwd_s'] for r in timed], 'o-',
              label=label)
    ax_m.plot([r['length'] for r in pts], [r['fwd_bwd_bytes'] / 2**30 for r in pts],
              'o-', label=label)
  finish_plot(fig, ((ax_t, 'forward+backward time (s)'),
                    (ax_m, 'forward+backward peak memory (GiB)')),
              'sequence length', f'attention on {jax.devices()[0].device_kind}', path)


def finish_plot(fig, titled_axes, xlabel, title, path, legend_size=8):
  """Log-log axes with titles, grid and legend; saves the figure."""
  for ax, axis_title in titled_axes:
    ax.set_xscale('log', base=2)
    ax.set_yscale('log')
    ax.set_xlabel(xlabel)
    ax.set_title(axis_title)
    ax.grid(True, which='both', alpha=0.3)
    ax.legend(fontsize=legend_size)
  fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def length_parser(description):
  """Argument parser with the benchmarks' shared --lengths / --max_len."""
  parser = argparse.ArgumentParser(description=description,
                                   formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument('--lengths', type=lambda s: [int(x) for x in s.split(',')],
                      default=[1024, 2048, 4096, 8192, 16384, 32768, 65536])
  parser.add_argument('--max_len', type=int, default=65536)
  parser.add_argument('--dense_max_len', type=int, default=None,
                      help='longest input quadratic attention runs at (default: '
                      f'{CPU_DENSE_MAX_LEN} on CPU, where its time reaches hours '
                      'at 64k; no limit on accelerators, where dense is the '
                      'bar); 0: no limit')
  return parser


def reject_unknown_schemes(parser, names, choices):
  """Exits through `parser.error` naming any of `names` not in `choices`."""
  unknown = sorted(set(names) - set(choices))
  if unknown:
    parser.error(f'unknown schemes {unknown}; choose from {choices}')


# On a CPU a dense 64k forward+backward takes many minutes (hours for a model).
CPU_DENSE_MAX_LEN = 16384


def dense_runs_at(n, args):
  """Whether quadratic attention runs at length n under --dense_max_len."""
  limit = args.dense_max_len
  if limit is None:
    limit = CPU_DENSE_MAX_LEN if jax.default_backend() == 'cpu' else 0
  return not limit or n <= limit


def parse_args(argv=None):
  parser = length_parser(__doc__)
  parser.add_argument('--schemes', type=lambda s: s.split(','),
                      default=list(DEFAULT_SCHEMES),
                      help=f'comma-separated, from {", ".join(CHOICES)}')
  parser.add_argument('--implementations', type=lambda s: s.split(','),
                      default=None, help='default: xla, plus pallas if available')
  parser.add_argument('--batch', type=int, default=1)
  parser.add_argument('--heads', type=int, default=12)
  parser.add_argument('--head_dim', type=int, default=64)
  parser.add_argument('--dtype', default='float32')
  parser.add_argument('--block_len', type=int, default=128)
  parser.add_argument('--fine_len', type=int, default=128)
  parser.add_argument('--rank', type=int, default=32)
  parser.add_argument('--window', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=2)
  parser.add_argument('--peak_size', type=int, default=4096,
                      help='side of the matmul whose speed is the peak')
  parser.add_argument('--out', default='benchmarks/out/attention')
  args = parser.parse_args(argv)
  reject_unknown_schemes(parser, args.schemes, CHOICES)
  return args


def main(argv=None):
  args = parse_args(argv)
  print(f'device: {jax.devices()[0].device_kind}, batch {args.batch}, heads '
        f'{args.heads}, head_dim {args.head_dim}, {args.dtype}\n{HEADER}')
  peak = measure_matmul_peak(args.peak_size, args.repeats)
  print(f'matmul peak {peak / 1e9:.1f} GFLOP/s ({args.peak_size}^3)', flush=True)
  rows = run(args)
  add_peak_fractions(rows, peak, args.heads, args.head_dim, args.batch)
  print_summary(rows)
  write_outputs(rows, args.out, plot)


def write_outputs(result, out, plot_fn):
  """`out`.json (the result) and `out`.png (`plot_fn(result, path)`)."""
  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.with_suffix('.json').write_text(json.dumps(result, indent=1))
  plot_fn(result, out.with_suffix('.png'))
  print(f'\nwrote {out.with_suffix(".json")} and {out.with_suffix(".png")}')


if __name__ == '__main__':
  main()
