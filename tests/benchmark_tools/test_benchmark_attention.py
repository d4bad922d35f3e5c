"""tools/benchmark_attention.py: a tiny run, dense capped by --dense_max_len."""
import json
import pathlib
import sys

import pytest

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / 'tools'))
import benchmark_attention  # noqa: E402
from fovea_jax.layers import schemes  # noqa: E402


def test_dense_stops_at_dense_max_len_and_ratios_use_the_same_length(tmp_path):
  out = tmp_path / 'attention'
  benchmark_attention.main(['--lengths', '64,128', '--schemes', 'dense,sliding',
                            '--window', '8', '--heads', '2', '--head_dim', '8',
                            '--dense_max_len', '64', '--repeats', '1',
                            '--peak_size', '64', '--out', str(out)])
  rows = {(r['scheme'], r['length']): r
          for r in json.loads(out.with_suffix('.json').read_text())}
  assert set(rows) == {('dense', 64), ('sliding', 64), ('sliding', 128)}
  assert rows[('sliding', 64)]['fwd_bwd_speedup'] == (
      rows[('dense', 64)]['fwd_bwd_s'] / rows[('sliding', 64)]['fwd_bwd_s'])
  assert rows[('sliding', 128)]['fwd_bwd_speedup'] is None
  assert rows[('sliding', 128)]['forward_s'] > 0


def test_dense_max_len_defaults_to_16k_on_cpu():
  args = benchmark_attention.parse_args([])
  assert benchmark_attention.dense_runs_at(16384, args)
  assert not benchmark_attention.dense_runs_at(32768, args)
  assert benchmark_attention.dense_runs_at(
      65536, benchmark_attention.parse_args(['--dense_max_len', '0']))


def test_an_unknown_scheme_is_named_before_anything_runs(capsys):
  with pytest.raises(SystemExit):
    benchmark_attention.parse_args(['--schemes', 'fovae'])
  assert "unknown schemes ['fovae']" in capsys.readouterr().err


def test_a_scheme_with_params_and_hidden_states_runs_and_reports_its_fraction(
    tmp_path):
  # Transient-global reads the hidden states and owns a norm: the one-layer
  # harness gives it both. Every choice's row fraction is its module's.
  out = tmp_path / 'attention'
  options = ['--block_len', '8', '--fine_len', '8', '--rank', '2', '--window', '4']
  benchmark_attention.main(
      ['--lengths', '48', '--schemes', 'longt5_tglobal', '--heads', '1',
       '--head_dim', '8', '--repeats', '1', '--peak_size', '64', '--out',
       str(out)] + options)
  row, = json.loads(out.with_suffix('.json').read_text())
  assert row['forward_s'] > 0 and row['fwd_bwd_s'] > 0
  assert row['fraction'] == (schemes.LongT5TransientGlobal().attended_pairs(
      48, False) / 48**2)
  args = benchmark_attention.parse_args(options)
  for name in benchmark_attention.CHOICES:
    module = benchmark_attention.scheme_module(name, args)
    assert 0 < module.attended_pairs(48, False) / 48**2, name
