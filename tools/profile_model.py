"""Where a model's training step spends its time: XLA's profiler, per component.

Runs `tools/benchmark_model.py`'s loss+gradient step (same model, same batch)
under `jax.profiler.trace`, reads the op times from the trace and charges each
op to the component its HLO metadata names (the Flax module path of the op):
the scheme's attention, the Q/K/V/out projections, the MLP, the norms, per stack
and sublayer, forward and backward separately. Prints a markdown table with the
step's wall time; `--out` also writes it as JSON.

Op times are summed over XLA's threads, so they can exceed the wall time when
XLA runs independent ops side by side, and fall short of it by the time no op
ran (scan loop overhead, waits).

  python tools/profile_model.py --scheme local --length 4096
  python tools/profile_model.py --scheme longt5_tglobal --length 16384 --arch encdec
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import pathlib
import re
import sys
import tempfile
import time

import jax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import benchmark_model  # noqa: E402

_SUBLAYERS = {
    'attention': 'self-attention', 'self_attention': 'self-attention',
    'encoder_decoder_attention': 'cross-attention', 'mlp': 'MLP',
}
_PROJECTIONS = ('query', 'key', 'value', 'out')


def component(op_name):
  """`(component, 'forward'|'backward')` of an HLO op's metadata op_name."""
  direction = 'backward' if 'transpose(' in op_name else 'forward'
  match = re.search(r'\b(encoder|decoder)/layers_\d+/(\w+)(?:/(\w+))?', op_name)
  if not match:
    if 'layer_norm' in op_name or 'encoder_norm' in op_name or \
        'decoder_norm' in op_name:
      return 'norms', direction
    if 'token_embedder' in op_name or 'embed' in op_name:
      return 'embeddings', direction
    return 'loss, logits and the rest', direction
  stack, sublayer, inner = match.groups()
  if 'norm' in sublayer:
    return 'norms', direction
  name = _SUBLAYERS.get(sublayer, sublayer)
  if sublayer == 'mlp':
    return f'{stack} MLP', direction
  if inner in _PROJECTIONS:
    return f'{stack} {name} projections', direction
  return f'{stack} {name} (scheme)', direction


def hlo_op_names(compiled):
  """`{instruction name: metadata op_name}` of a compiled program."""
  names = {}
  pattern = re.compile(r'\s*(?:ROOT )?%?([\w.\-]+) = .*?metadata=\{([^}]*)\}')
  for line in compiled.as_text().splitlines():
    match = pattern.match(line)
    if match:
      op = re.search(r'op_name="([^"]*)"', match.group(2))
      if op:
        names.setdefault(match.group(1), op.group(1))
  return names


def trace_op_times(directory):
  """`{op name: total microseconds}` from the profiler's perfetto trace."""
  path = glob.glob(f'{directory}/**/*.json.gz', recursive=True)[0]
  with gzip.open(path) as f:
    events = json.load(f)['traceEvents']
  totals = collections.Counter()
  for event in events:
    if event.get('ph') == 'X':
      totals[event['name']] += event['dur']
  return totals


def profile(arch, scheme, length, targets, repeats=3):
  compiled, args, _ = benchmark_model.jax_step(arch, scheme, length, targets,
                                               'float32')
  jax.block_until_ready(compiled(*args))
  walls = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    walls.append(time.perf_counter() - start)
  with tempfile.TemporaryDirectory() as directory:
    with jax.profiler.trace(directory, create_perfetto_trace=True):
      jax.block_until_ready(compiled(*args))
    times = trace_op_times(directory)
  names = hlo_op_names(compiled)
  table = collections.defaultdict(lambda: {'forward': 0.0, 'backward': 0.0})
  for op, micros in times.items():
    if op in names:
      name, direction = component(names[op])
      table[name][direction] += micros / 1e6
  return dict(arch=arch, scheme=scheme, length=length, targets=targets,
              step_s=sorted(walls)[len(walls) // 2],
              components={k: dict(v) for k, v in table.items()})


def markdown(result):
  comps = result['components']
  total = sum(v['forward'] + v['backward'] for v in comps.values())
  lines = [f"{result['arch']} {result['scheme']}, {result['length']} tokens: "
           f"step {result['step_s']:.3f} s (median wall), op time {total:.3f} s",
           '', '| component | forward s | backward s | share of op time |',
           '|---|---:|---:|---:|']
  for name, v in sorted(comps.items(), key=lambda kv: -sum(kv[1].values())):
    both = v['forward'] + v['backward']
    lines.append(f"| {name} | {v['forward']:.3f} | {v['backward']:.3f} | "
                 f"{100 * both / total:.0f}% |")
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--scheme', default='local',
                      choices=benchmark_model.ALL_SCHEMES)
  parser.add_argument('--length', type=int, default=4096)
  parser.add_argument('--arch', default='encdec', choices=('encdec', 'decoder'))
  parser.add_argument('--targets', type=int, default=256)
  parser.add_argument('--out', help='also write the result as JSON here')
  args = parser.parse_args(argv)
  result = profile(args.arch, args.scheme, args.length, args.targets)
  print(markdown(result))
  if args.out:
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, 'w') as f:
      json.dump(result, f, indent=1)


if __name__ == '__main__':
  main()
