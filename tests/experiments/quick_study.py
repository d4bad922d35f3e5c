"""`make experiments-quick` inside the test suite: every study, a few steps a row
(one test file per study, so that the suite's workers share them out).

Runs the same command lines as the Makefile target (a subprocess each) into a
temporary directory and checks what a full study's report is built from: every
row trained, evaluated and measured, the switch row warm-started from the row
it names, and the table and plots written.
"""
import json
import math
import os
import pathlib
import subprocess
import sys

import pytest

from fovea_jax.tasks import diagnostic_tasks

REPO = pathlib.Path(__file__).resolve().parents[2]


def _run_quick(config_file, tmp_path):
  out, work = tmp_path / 'results', tmp_path / 'work'
  # One CPU device, as `make experiments-quick` runs (conftest fakes eight).
  xla_flags = ' '.join(f for f in os.environ.get('XLA_FLAGS', '').split()
                       if 'force_host_platform_device_count' not in f)
  env = dict(os.environ, XLA_FLAGS=xla_flags, PYTHONPATH=os.pathsep.join(
      [str(REPO), os.environ.get('PYTHONPATH', '')]))
  done = subprocess.run(
      [sys.executable, '-m', 'experiments.run_study',
       f'--config=experiments/{config_file}:quick', f'--output_dir={out}',
       f'--work_dir={work}'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
      check=False)
  assert done.returncode == 0, done.stderr[-4000:]
  return done.stdout, out, work


def check_quick_study(module, tmp_path):
  """Runs `module`'s quick study and checks every row and the report."""
  config = module.get_config('quick')
  stdout, out, work = _run_quick(f'{module.__name__.split(".")[-1]}.py',
                                 tmp_path)
  # A progress line per row.
  for i, row in enumerate(config.rows, 1):
    assert f'[{config.study} {i}/{len(config.rows)}] {row["name"]}:' in stdout
  stem = out / f'{config.study}_study_quick'
  plots = ('_accuracy.png' if config.study == 'diagnostic' else '_metric.png',)
  for suffix in ('.md', '_position_loss.png') + plots:
    assert (stem.parent / (stem.name + suffix)).stat().st_size > 0
  results = json.loads((stem.parent / (stem.name + '.json')).read_text())
  assert [r['name'] for r in results['rows']] == [r['name'] for r in config.rows]
  for r in results['rows']:
    evaluation = r['evaluation']
    assert math.isfinite(evaluation['nll_per_token'])
    assert evaluation['scored_tokens'] > 0
    assert len(evaluation['position_loss']) == len(config.position_bins) - 1
    assert 0 < r['attended_fraction'] <= 1
    assert r['step_seconds'] > 0
    assert len(evaluation['repeat_loss']) == len(config.repeat_bins)
    metrics = next(iter(evaluation['metrics'].values()))
    if config.study == 'diagnostic':
      assert set(evaluation['metrics']) == set(diagnostic_tasks.TASKS)
      for task_metrics in evaluation['metrics'].values():
        assert 0 <= task_metrics['accuracy'] <= 1
        assert task_metrics['answers'] > 0
    elif config.study == 'lm':
      # The eval's bits per byte and the position bins come from the same
      # token scores.
      assert metrics['bits_per_byte'] == pytest.approx(
          evaluation['nll_per_token'] / math.log(2), rel=1e-6)
    else:
      assert 'rouge1' in metrics
  by_name = {r['name']: r for r in results['rows']}
  if 'dense' in by_name:
    assert by_name['dense']['attended_fraction'] == 1.0
  if 'tglobal_then_fovea' in by_name:
    # Warm-started from the TGlobal row's params, cut to the fovea network.
    warm = work / 'tglobal_then_fovea_warm_start' / 'checkpoint_0'
    assert warm.is_dir()
    assert by_name['tglobal_then_fovea']['init_from'] == 'longt5_tglobal'
