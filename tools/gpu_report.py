"""One GPU report: compiled-kernel tests, attention benchmark, model steps, ratios.

Run through `tools/gpu_report.sh` (which sets the environment up). Every stage is
a subprocess with its own time limit, so a failing or hanging stage is recorded
(status, seconds, the tail of its output) and the next one still runs; the whole
report fits 8 minutes on an H100/H200. It writes one JSON (`--out`):

  stages     per stage: command, status (ok / failed / timeout / skipped), seconds
  attention  rows of tools/benchmark_attention.py, per head_dim
  model      tools/benchmark_model.py's result (loss+gradient steps per scheme)
  ratios     per Pallas and cuDNN row: times and TFLOP/s on attended FLOPs;
             for the Pallas schemes backward / own forward and fwd+bwd memory
             / flash dense; for fovea at 16k and 64k its forward / cuDNN dense
             forward.

`--dry_run` (CPU): lowers every kernel for the GPU platform (the lowering tests),
runs the benchmark code path at tiny sizes with the Pallas kernels interpreted,
and a tiny model step; the ratios are then computed from those rows (no cuDNN
row on CPU, so the cuDNN ratios are null).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Rows (scheme, length) whose forward is compared with cuDNN dense attention.
CUDNN_ROWS = (('fovea', 16384), ('fovea', 65536))


def plan(args, out):
  """`[(stage name, argv, time limit s), ...]` of a real or a dry run."""
  python = sys.executable
  bench = [python, str(ROOT / 'tools' / 'benchmark_attention.py'),
           '--implementations', 'pallas', '--dtype', 'bfloat16']  # every scheme
  model = [python, str(ROOT / 'tools' / 'benchmark_model.py'), '--no_hf']
  pytest = [python, '-m', 'pytest', '-q', '-p', 'no:cacheprovider']
  lowering = str(ROOT / 'tests' / 'kernels' / 'test_lowering.py')
  if args.dry_run:
    tiny = ['--lengths', '256', '--heads', '1', '--repeats', '1',
            '--block_len', '64', '--fine_len', '32', '--rank', '8', '--window',
            '32']
    return [
        ('kernel_lowering', pytest + [lowering, '-k', 'cuda'], 120),
        ('attention_hd64', bench + tiny + ['--head_dim', '64', '--out',
                                           str(out / 'attention_hd64')], 120),
        ('model', model + ['--lengths', '256', '--targets', '16', '--schemes',
                           'fovea', '--archs', 'decoder', '--repeats', '1',
                           '--peak_size', '256', '--out', str(out / 'model')],
         120),
    ]
  lengths = ','.join(str(n) for n in sorted({n for _, n in CUDNN_ROWS}))
  return [
      # Compiled on the GPU: every scheme's forward and gradients against the
      # oracle, the engine tests, and the lowering of every kernel.
      ('kernel_tests', pytest + [
          str(ROOT / 'tests' / 'kernels' / 'test_tree_attention.py'), lowering,
          '-k', 'TestSchemes or Compiled or cuda'], 150),
      ('attention_hd64', bench + ['--lengths', lengths, '--head_dim', '64',
                                  '--repeats', '3', '--out',
                                  str(out / 'attention_hd64')], 110),
      ('attention_hd128', bench + ['--lengths', lengths, '--head_dim', '128',
                                   '--repeats', '3', '--out',
                                   str(out / 'attention_hd128')], 110),
      ('model', model + ['--lengths', '16384', '--archs', 'encdec',
                         '--repeats', '2', '--peak_size', '8192', '--out',
                         str(out / 'model')], 90),
  ]  # 460 s in all: gpu_report.sh stops everything at 480 s.


def run_stage(name, argv, limit, log_dir):
  """Runs one stage; its output goes to `log_dir/<name>.log`."""
  script = next((a for a in argv if a.endswith('.py') and 'tools' in a), None)
  if script and not pathlib.Path(script).exists():
    return dict(command=argv, status='skipped', seconds=0.0,
                reason=f'{script} is not in this checkout')
  log = log_dir / f'{name}.log'
  start = time.perf_counter()
  print(f'[gpu_report] {name}: {" ".join(argv)} (limit {limit} s)', flush=True)
  with open(log, 'w') as handle:
    try:
      code = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT,
                            cwd=ROOT, timeout=limit).returncode
      status = 'ok' if code == 0 else 'failed'
    except subprocess.TimeoutExpired:
      status = 'timeout'
  seconds = time.perf_counter() - start
  tail = log.read_text(errors='replace')[-3000:]
  print(f'[gpu_report] {name}: {status} in {seconds:.0f} s', flush=True)
  return dict(command=argv, status=status, seconds=round(seconds, 1),
              log=str(log), tail=tail)


def _load(path):
  return json.loads(path.read_text()) if path.exists() else None


def ratios(attention):
  """The ratios against the GPU baselines from the attention rows of one
  head_dim."""
  out = {}
  for r in attention:
    if r['implementation'] not in ('pallas', 'cudnn'):
      continue
    key = f"{r['scheme']}_{r['implementation']}_{r['length']}"
    entry = dict(fwd_tflops=r.get('fwd_tflops'),
                 fwd_bwd_tflops=r.get('fwd_bwd_tflops'),
                 forward_s=r['forward_s'], fwd_bwd_s=r['fwd_bwd_s'])
    if r['implementation'] == 'pallas' and r['fraction'] < 1.0:  # not dense
      entry['bwd_over_fwd'] = r.get('bwd_over_fwd')
      entry['mem_vs_flash'] = r.get('mem_vs_flash')
      if (r['scheme'], r['length']) in CUDNN_ROWS:
        entry['fwd_vs_cudnn'] = r.get('fwd_vs_cudnn')
    out[key] = entry
  return out


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawTextHelpFormatter)
  parser.add_argument('--dry_run', action='store_true',
                      help='CPU: lower for GPU, tiny benchmark and model step')
  parser.add_argument('--out', default='benchmarks/out/gpu_report',
                      help='directory for the JSON, logs and benchmark files')
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  out = pathlib.Path(args.out).resolve()
  out.mkdir(parents=True, exist_ok=True)
  for stale in out.glob('*.json'):  # never report a previous run's numbers
    stale.unlink()
  import jax  # after the environment is set (gpu_report.sh)
  report = dict(dry_run=args.dry_run, jax=jax.__version__,
                backend=jax.default_backend(),
                device=jax.devices()[0].device_kind, stages={}, attention={},
                ratios={})
  if not args.dry_run and report['backend'] != 'gpu':
    raise SystemExit(f'no GPU: JAX sees {report["backend"]}; run with --dry_run '
                     'to check the report on CPU.')
  for name, argv, limit in plan(args, out):
    report['stages'][name] = run_stage(name, argv, limit, out)
  for head_dim in (64, 128):
    rows = _load(out / f'attention_hd{head_dim}.json')
    if rows is not None:
      report['attention'][f'head_dim_{head_dim}'] = rows
      report['ratios'][f'head_dim_{head_dim}'] = ratios(rows)
  report['model'] = _load(out / 'model.json')
  path = out / 'gpu_report.json'
  path.write_text(json.dumps(report, indent=1))
  failed = [n for n, s in report['stages'].items()
            if s['status'] not in ('ok', 'skipped')]
  print(json.dumps(report['ratios'], indent=1))
  print(f'[gpu_report] wrote {path}; stages not ok: {failed or "none"}')
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
