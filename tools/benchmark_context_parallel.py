"""Sequence-parallel attention: bytes each device receives, and its memory.

One attention layer (batch 1, `--heads` x `--head_dim`, float32, causal unless
`--bidirectional`) with its sequence split over the `sequence` axis of 2, 4 and
8 devices (on CPU: `--xla_force_host_platform_device_count=8`, set here). For
every scheme, length and device count the forward and the forward+backward
programs are compiled (not run) and the bytes each device receives are read
from their collectives (`collective_bytes`), beside what all-gathering K/V
moves: `(P-1)/P * length * 2 * heads * head_dim * 4` bytes forward, twice that
forward+backward (the gradients go back by a reduce-scatter of the same size).
Peak memory is XLA's buffer assignment for one device's forward+backward.
Dense attention is compiled only up to `--dense_max_length` (its layout grows
as length^2; beyond, its all-gather is the computed column), learned FMA up to
`--learned_max_length` (its filters grow with the length: 2 x 2 GiB at 1M
tokens).

`--run` also runs the forward+backward of `--run_scheme` at the longest length
on the most devices, with `--run_heads` heads, and reports its wall time and
whether every gradient is finite.

  python tools/benchmark_context_parallel.py
  python tools/benchmark_context_parallel.py --lengths 65536 --devices 2,4,8 \
      --schemes fovea,dense
"""
from __future__ import annotations

import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8')

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import pathlib  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from fovea_jax import attention  # noqa: E402
from fovea_jax.attention import context_parallel  # noqa: E402
from fovea_jax.attention import longt5  # noqa: E402
from fovea_jax.layers import schemes as schemes_lib  # noqa: E402
from fovea_jax.layers.schemes import h_transformer  # noqa: E402

MIB = 2**20
_BYTES = {'f32': 4, 'bf16': 2, 'f16': 2, 's32': 4, 'u32': 4, 'pred': 1,
          'f64': 8, 's64': 8, 's8': 1, 'u8': 1}
_COLLECTIVE = re.compile(
    r'=\s*(.*?)\s+(collective-permute|all-gather|all-reduce|all-to-all|'
    r'reduce-scatter)(-start)?\(')
_SHAPE = re.compile(r'\b(\w+)\[([\d,]*)\]')


def collective_bytes(hlo_text: str) -> dict:
  """Bytes one device receives, by collective kind, in a compiled SPMD
  program's HLO text (shapes are per device): a collective-permute its
  result; an all-gather the part of its result held elsewhere, (P-1)/P; an
  all-reduce twice (P-1)/P of its result (a ring's reduce-scatter and
  all-gather); reduce-scatter and all-to-all (P-1)/P of their operand. An
  asynchronous `-start` is counted by its result buffer, its `-done` not."""
  totals = {}
  for line in hlo_text.splitlines():
    match = _COLLECTIVE.search(line)
    if not match:
      continue
    result_type, kind, started = match.groups()
    shapes = [(t, [int(x) for x in dims.split(',') if x])
              for t, dims in _SHAPE.findall(result_type) if t in _BYTES]
    if started and kind == 'collective-permute':
      shapes = shapes[1:2]  # (operand, result, contexts...): the result
    size = sum(_BYTES[t] * math.prod(dims) for t, dims in shapes)
    parts = 1 if kind == 'collective-permute' else _group_size(line)
    if kind == 'collective-permute':
      received = size
    elif kind == 'all-reduce':
      received = 2 * size * (parts - 1) / parts
    elif kind == 'reduce-scatter':
      received = size * (parts - 1)
    else:
      received = size * (parts - 1) / parts
    totals[kind] = totals.get(kind, 0) + received
  return totals


def _group_size(line):
  """Devices in each replica group of a collective's HLO line, in any of
  XLA's three spellings: explicit `{{0,1},{2,3}}`, iota `[groups,size]<=[..]`
  and mesh `mesh['axis_0'=2,'axis_1'=4] {'axis_1'}` (the listed axes')."""
  explicit = re.search(r'replica_groups=\{\{([\d,]*)\}', line)
  if explicit:
    return len(explicit.group(1).split(','))
  iota = re.search(r'replica_groups=\[\d+,(\d+)\]<=', line)
  if iota:
    return int(iota.group(1))
  mesh = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", line)
  if mesh:
    sizes = {a: int(n) for a, n in re.findall(r"'(\w+)'=(\d+)", mesh.group(1))}
    return math.prod(sizes[a] for a in re.findall(r"'(\w+)'", mesh.group(2)))
  raise ValueError(f'unrecognised replica groups in HLO line: {line.strip()}')


def scheme_call(name, causal):
  """`(attend(q, k, v), extra args)` of one layer of scheme `name` with the
  framework's defaults (`fovea_jax.layers.schemes`)."""
  base = {'fma_learned': 'fma', 'sliding_window': 'local',
          'block_local': 'local'}.get(name, name)
  spec = schemes_lib.BY_NAME[base]()
  if name == 'fovea':
    return lambda q, k, v, _: attention.fovea_attention(
        q, k, v, block_len=spec.block_len, causal=causal, scale=1.0), None
  if name in ('fma', 'fma_learned'):
    learned = name == 'fma_learned'
    return lambda q, k, v, filters: attention.fma_attention(
        q, k, v, fine_len=spec.fine_len, rank=spec.rank,
        downsample='grouped_conv' if learned else 'avg',
        level_filters=filters, causal=causal, scale=1.0), learned
  if name == 'sliding_window':
    return lambda q, k, v, _: attention.local_attention(
        q, k, v, window=spec.window, causal=causal, scale=1.0), None
  if name == 'block_local':
    return lambda q, k, v, _: attention.local_attention(
        q, k, v, block_len=spec.window + 1, causal=causal, scale=1.0), None
  if name == 'dense':
    return lambda q, k, v, _: attention.dot_product_attention(
        q, k, v, causal=causal, scale=1.0, implementation='xla'), None
  if name == 'longt5_tglobal':
    return functools.partial(_transient_global, spec=spec, causal=causal), None
  if name == 'h_transformer':
    table = jnp.zeros((h_transformer.num_bias_positions(spec.num_clusters), 1))
    return lambda q, k, v, _: h_transformer.h_transformer_attention(
        q, k, v, jnp.broadcast_to(table, (table.shape[0], q.shape[2])),
        num_clusters=spec.num_clusters, causal=causal), None
  raise ValueError(f'unknown scheme {name!r}')


def _transient_global(q, k, v, _, *, spec, causal):
  """LongT5 TGlobal with its side K/V the group sums of k and v (the layer
  sums hidden states and projects them per token: the same exchange)."""
  batch, length = q.shape[:2]
  gbs, num_globals = spec.global_block_size, length // spec.global_block_size
  ids, valid = longt5.global_block_ids(jnp.ones((batch, length), bool), gbs,
                                       causal=causal)
  side = lambda x: longt5.global_aggregates(
      x.reshape(batch, length, -1), ids, num_globals).reshape(
          batch, num_globals, *x.shape[2:])
  return longt5.transient_global_attention(
      q, k, v, side(k), side(v), block_ids=ids, global_valid=valid,
      local_radius=spec.local_radius, global_block_size=gbs, causal=causal,
      scale=1.0, implementation='xla')


SCHEMES = ('fovea', 'fma', 'fma_learned', 'sliding_window', 'block_local',
           'longt5_tglobal', 'h_transformer', 'dense')


def _filters(length, head_dim, fine_len, rank):
  return {lvl.level: tuple(jnp.full((lvl.group_size, head_dim, rank),
                                    1.0 / lvl.group_size, jnp.float32)
                           for _ in range(2))
          for lvl in attention.fma_levels(length, fine_len, rank)}


def measure(name, length, devices, args, run=False):
  """One row: compiled collectives and memory of scheme `name`."""
  mesh = Mesh(np.array(jax.devices()[:devices]).reshape(1, devices, 1),
              ('data', 'sequence', 'model'), axis_types=(AxisType.Auto,) * 3)
  causal = not args.bidirectional
  attend, learned = scheme_call(name, causal)
  shape = (1, length, args.heads, args.head_dim)
  sharding = NamedSharding(mesh, PartitionSpec(None, 'sequence'))
  x = jax.ShapeDtypeStruct(shape, jnp.float32, sharding=sharding)
  spec = schemes_lib.BY_NAME['fma']()
  filters = (_filters(length, args.head_dim, spec.fine_len, spec.rank)
             if learned else None)
  forward = lambda q, k, v: attend(q, k, v, filters)
  loss = lambda q, k, v: jnp.sum(attend(q, k, v, filters))
  row = dict(scheme=name, length=length, devices=devices)
  start = time.perf_counter()
  with jax.set_mesh(mesh):
    fwd = jax.jit(forward).lower(x, x, x).compile()
    both = jax.jit(jax.grad(loss, (0, 1, 2))).lower(x, x, x).compile()
  row['compile_s'] = time.perf_counter() - start
  row['forward_bytes'] = sum(collective_bytes(fwd.as_text()).values())
  row['train_bytes'] = sum(collective_bytes(both.as_text()).values())
  analysis = both.memory_analysis()
  row['peak_bytes'] = (analysis.argument_size_in_bytes +
                       analysis.output_size_in_bytes +
                       analysis.temp_size_in_bytes -
                       analysis.alias_size_in_bytes)
  gather = (devices - 1) / devices * length * 2 * args.heads * args.head_dim * 4
  row['allgather_forward_bytes'] = gather
  row['allgather_train_bytes'] = 2 * gather
  if run:
    rng = np.random.default_rng(0)
    arrays = [jax.device_put(jnp.asarray(rng.normal(size=shape), jnp.float32),
                             sharding) for _ in range(3)]
    with jax.set_mesh(mesh):
      jax.block_until_ready(both(*arrays))
      start = time.perf_counter()
      grads = jax.block_until_ready(both(*arrays))
    row['run_s'] = time.perf_counter() - start
    row['run_finite'] = bool(all(jnp.isfinite(g).all() for g in grads))
  return row


def table(rows):
  lines = [f'{"scheme":15s} {"length":>8s} {"P":>2s} {"fwd MiB":>9s} '
           f'{"fwd+bwd MiB":>11s} {"all-gather MiB":>14s} {"ratio":>6s} '
           f'{"peak MiB/dev":>12s} {"compile s":>9s}']
  for r in rows:
    lines.append(
        f'{r["scheme"]:15s} {r["length"]:8d} {r["devices"]:2d} '
        f'{r["forward_bytes"] / MIB:9.2f} {r["train_bytes"] / MIB:11.2f} '
        f'{r["allgather_train_bytes"] / MIB:14.2f} '
        f'{r["train_bytes"] / r["allgather_train_bytes"]:6.3f} '
        f'{r["peak_bytes"] / MIB:12.1f} {r["compile_s"]:9.1f}')
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--schemes', default=','.join(SCHEMES))
  parser.add_argument('--lengths', default='65536,262144,1048576')
  parser.add_argument('--devices', default='2,4,8')
  parser.add_argument('--heads', type=int, default=4)
  parser.add_argument('--head_dim', type=int, default=64)
  parser.add_argument('--bidirectional', action='store_true')
  parser.add_argument('--dense_max_length', type=int, default=65536)
  parser.add_argument('--learned_max_length', type=int, default=262144)
  parser.add_argument('--run', action='store_true')
  parser.add_argument('--run_scheme', default='fovea')
  parser.add_argument('--run_heads', type=int, default=1)
  parser.add_argument('--output', default=None,
                      help='write the table (.txt) and rows (.json) here')
  args = parser.parse_args(argv)
  lengths = [int(x) for x in args.lengths.split(',')]
  device_counts = [int(x) for x in args.devices.split(',')]
  rows = []
  header = (f'{platform.machine()}, {os.cpu_count()} cores, '
            f'{len(jax.devices())} {jax.devices()[0].platform} devices, '
            f'{"bidirectional" if args.bidirectional else "causal"}, '
            f'{args.heads} heads x {args.head_dim}, float32, '
            f'{time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}')
  print(header, flush=True)
  for name in args.schemes.split(','):
    for length in lengths:
      if name == 'dense' and length > args.dense_max_length:
        continue
      if name == 'fma_learned' and length > args.learned_max_length:
        continue
      for devices in device_counts:
        rows.append(measure(name, length, devices, args))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
  result = dict(rows=rows, heads=args.heads, head_dim=args.head_dim,
                causal=not args.bidirectional)
  text = header + '\n' + table(rows)
  if args.run:
    run_args = argparse.Namespace(**{**vars(args), 'heads': args.run_heads})
    run = measure(args.run_scheme, max(lengths), max(device_counts), run_args,
                  run=True)
    result['run'] = run
    text += (f'\n\nran {run["scheme"]} forward+backward at {run["length"]} '
             f'tokens on {run["devices"]} devices ({args.run_heads} head(s) x '
             f'{args.head_dim}): {run["run_s"]:.1f} s, gradients finite: '
             f'{run["run_finite"]}, peak {run["peak_bytes"] / MIB:.0f} MiB '
             'per device')
  print('\n' + text)
  if args.output:
    out = pathlib.Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix('.txt').write_text(text + '\n')
    out.with_suffix('.json').write_text(json.dumps(result, indent=1))
  return result


if __name__ == '__main__':
  main()
