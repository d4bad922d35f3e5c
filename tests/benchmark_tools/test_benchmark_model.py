"""tools/benchmark_model.py: model FLOPs by hand, and one tiny run beside HF."""
import json
import pathlib
import sys

import pytest

# Compiles engines, networks or training steps (the fast half leaves it out).
pytestmark = pytest.mark.slow

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / 'tools'))
import benchmark_model  # noqa: E402
from fovea_jax.layers import schemes  # noqa: E402


def test_dense_encoder_decoder_flops_by_hand():
  dims = dict(emb_dim=8, num_heads=2, head_dim=4, mlp_dim=16,
              num_encoder_layers=1, num_decoder_layers=1)
  n, t, vocab = 10, 4, 5
  inner = 8
  enc = 2 * n * 8 * inner * 4 + 4 * n * n * inner + 2 * n * 8 * 16 * 3
  dec_self = 2 * t * 8 * inner * 4 + 4 * t * (t + 1) / 2 * inner
  cross = 2 * t * 8 * inner * 2 + 2 * n * 8 * inner * 2 + 4 * t * n * inner
  dec = dec_self + cross + 2 * t * 8 * 16 * 3
  expected = 3 * (enc + dec + 2 * t * 8 * vocab)
  assert benchmark_model.model_flops('encdec', schemes.Dense(), n, t, dims,
                                     vocab) == pytest.approx(expected)


def test_tiny_run_writes_rows_and_ratios(tmp_path):
  out = tmp_path / 'model'
  benchmark_model.main(['--lengths', '128', '--schemes',
                        'local', '--archs', 'encdec',
                        '--targets', '8', '--repeats', '1', '--peak_size', '64',
                        '--out', str(out)])
  result = json.loads(out.with_suffix('.json').read_text())
  assert result['matmul_peak_flops'] > 0
  rows = {(r['framework'], r['scheme']): r for r in result['rows']}
  assert set(rows) == {('fovea_jax', 'local'), ('hf_torch', 'local')}
  for r in rows.values():
    assert r['step_s'] > 0 and r['peak_bytes'] > 0 and r['model_flops'] > 0
  ours = rows[('fovea_jax', 'local')]
  assert ours['vs_hf'] == pytest.approx(
      ours['step_s'] / rows[('hf_torch', 'local')]['step_s'])
  assert out.with_suffix('.png').stat().st_size > 0


def test_compile_only_run_times_compiles_of_every_scheme(tmp_path):
  """--compile_only: trace/lower/compile seconds and the layout's distinct
  block span patterns, dense included at any length, no step run."""
  out = tmp_path / 'compile'
  benchmark_model.main(['--lengths', '256', '--schemes', 'dense,fovea',
                        '--archs', 'decoder', '--compile_only', '--repeats', '1',
                        '--peak_size', '64', '--dense_max_len', '128',
                        '--out', str(out)])
  result = json.loads(out.with_suffix('.json').read_text())
  rows = {r['scheme']: r for r in result['rows']}
  assert set(rows) == {'dense', 'fovea'}
  for r in rows.values():
    assert r['step_s'] is None and r['compile_s'] > 0 and r['trace_s'] > 0
  assert rows['fovea']['block_spans'] > 1 and rows['dense']['block_spans'] is None
  assert '| decoder | fovea | 256 |' in benchmark_model.markdown_table(result)


def test_profile_charges_ops_to_components():
  import profile_model
  assert profile_model.component(
      'jit(loss)/jvp(EncoderDecoder)/EncoderDecoder.encode/encoder/layers_0/'
      'attention/scheme/while/body/dot_general') == (
          'encoder self-attention (scheme)', 'forward')
  assert profile_model.component(
      'jit(loss)/transpose(jvp(EncoderDecoder))/EncoderDecoder.decode/decoder/'
      'layers_1/encoder_decoder_attention/key/dot_general') == (
          'decoder cross-attention projections', 'backward')
  assert profile_model.component(
      'jit(loss)/jvp(DecoderOnly)/decoder/layers_3/mlp/wi_0/dot_general') == (
          'decoder MLP', 'forward')
  assert profile_model.component(
      'jvp(EncoderDecoder)/encoder/layers_0/pre_mlp_layer_norm/mul')[0] == 'norms'


def test_profile_of_a_tiny_step_names_the_main_components():
  import profile_model
  result = profile_model.profile('encdec', 'local', 256, 16, repeats=1)
  comps = result['components']
  for name in ('encoder self-attention (scheme)', 'encoder MLP',
               'encoder self-attention projections',
               'decoder cross-attention (scheme)'):
    assert comps[name]['forward'] > 0 and comps[name]['backward'] > 0, name
  assert result['step_s'] > 0
  assert 'encoder MLP' in profile_model.markdown(result)


def test_a_dead_hugging_face_worker_leaves_its_row_untimed():
  # At long inputs PyTorch's TGlobal warm-up step outgrows the machine and the
  # kernel kills the worker: the run must go on and say why the row has no time.
  # (An unknown attention type makes the worker die at the same point, cheaply.)
  failed = benchmark_model.HfProcess('no-such-attention', 64, 8, 1)
  assert not failed.fits and failed.peak_bytes is None
  assert 'exited with 1 during its warm-up step' in failed.failure
  assert failed.step_seconds() is None  # a dead worker answers no step
  failed.close()


def test_markdown_marks_failed_and_oversized_rows():
  base = dict(arch='encdec', scheme='longt5_tglobal', length=65536,
              model_flops=1e12, tokens_per_s=None, peak_fraction=None,
              vs_hf=None, vs_tglobal=None, times=[])
  ours = dict(base, framework='fovea_jax', step_s=None, peak_bytes=40 * 2**30,
              failure='needs 40.0 GiB, more than this machine has free')
  hf = dict(base, framework='hf_torch', step_s=None, peak_bytes=None,
            failure='Hugging Face worker exited with -9 (SIGKILL: most likely '
                    'out of memory) during a timed step')
  table = benchmark_model.markdown_table(dict(rows=[ours, hf]))
  row = [line for line in table.splitlines() if '| 65536 |' in line][0]
  assert '| OOM | failed |' in row and '40.00 (-)' in row
  assert 'needs 40.0 GiB' in table and 'SIGKILL' in table
