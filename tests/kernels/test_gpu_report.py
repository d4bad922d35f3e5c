"""`tools/gpu_report.sh --dry_run` runs on CPU and writes the report's JSON.

The dry run lowers every kernel for the GPU platform, runs the attention
benchmark's code path at a tiny size with the kernels interpreted, and the model
benchmark's (when tools/benchmark_model.py is in the checkout); the ratios
are then computed from those rows.
"""
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_report_dry_run(tmp_path):
  env = dict(os.environ, PYTHON=sys.executable)
  result = subprocess.run([str(ROOT / 'tools' / 'gpu_report.sh'), '--dry_run',
                           '--out', str(tmp_path)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=400)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  report = json.loads((tmp_path / 'gpu_report.json').read_text())
  assert report['dry_run'] and report['backend'] == 'cpu'
  stages = report['stages']
  assert stages['kernel_lowering']['status'] == 'ok'
  assert ' passed' in stages['kernel_lowering']['tail']
  assert stages['attention_hd64']['status'] == 'ok'
  model_tool = (ROOT / 'tools' / 'benchmark_model.py').exists()
  assert stages['model']['status'] == ('ok' if model_tool else 'skipped')
  rows = report['attention']['head_dim_64']
  measured = {(r['scheme'], r['implementation']) for r in rows if r['forward_s']}
  assert measured == {(s, 'pallas') for s in ('dense', 'fovea', 'fma', 'sliding')}
  fovea = report['ratios']['head_dim_64']['fovea_pallas_256']
  assert fovea['fwd_tflops'] > 0 and fovea['bwd_over_fwd'] > 0
  assert fovea['mem_vs_flash'] > 0
