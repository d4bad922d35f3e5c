"""Runs a study config: every row, a progress line per row, then the results.

  python -m experiments.run_study --config=experiments/lm_study.py
  python -m experiments.run_study --config=experiments/summarization_study.py:quick \
      --output_dir=/tmp/results --work_dir=/tmp/study

Rows run in order (a warm-started row after the row it starts from); rows
already finished in --work_dir are reused unless --fresh. With
`config.isolate_rows` each row runs in its own process (`--only_row`), so one
row's compiled programs and memory never weigh on the next; with
`config.parallel_rows = P`, P such processes run at once, each held to its own
CPU core. A progress line per finished row estimates the time left.
"""
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments import study_config

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'A study config, e.g. experiments/lm_study.py:quick.')
_OUTPUT_DIR = flags.DEFINE_string(
    'output_dir', 'experiments/results', 'Where the JSON, table and plots go.')
_WORK_DIR = flags.DEFINE_string(
    'work_dir', None, 'Checkpoints and logs per row (default '
    '/tmp/fovea_jax_experiments/<study>_<mode>).')
_ONLY_ROW = flags.DEFINE_string(
    'only_row', None, 'Run just this row in this process (used by the runner).')
_FRESH = flags.DEFINE_bool(
    'fresh', False, 'Delete --work_dir first; otherwise rows that finished '
    'there are reused (a stopped study continues where it stopped).')
_REPORT_ONLY = flags.DEFINE_bool(
    'report_only', False, 'Train nothing: write the report from the rows that '
    'finished in --work_dir (a stopped study; missing rows are listed).')


def _context() -> str:
  # Step times depend on what else the machine ran: record its load average.
  load = ' / '.join(f'{x:.1f}' for x in os.getloadavg())
  return (f'measured on {platform.node() or "this machine"} '
          f'({os.cpu_count()} CPU cores, load average {load} over 1 / 5 / 15 '
          f'minutes when the report was written), '
          f'{time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}.')


def main(argv):
  del argv
  config = _CONFIG.value
  work_dir = _WORK_DIR.value or os.path.join(
      '/tmp/fovea_jax_experiments', f'{config.study}_{config.mode}')
  # Imported here: the study imports jax, which the flag parsing does not need.
  from experiments import report  # pylint: disable=g-import-not-at-top
  from experiments import study  # pylint: disable=g-import-not-at-top
  rows = {r['name']: r for r in config.rows}
  if _ONLY_ROW.value:
    if _ONLY_ROW.value not in rows:
      raise app.UsageError(f'--only_row={_ONLY_ROW.value} is not a row of this '
                           f'config; rows: {sorted(rows)}.')
    study.run_row(config, rows[_ONLY_ROW.value], work_dir)
    return
  if _REPORT_ONLY.value:
    done = [r for r in config.rows if _finished(study, work_dir, r)]
    missing = [r['name'] for r in config.rows if r not in done]
    context = _context() + (f' Rows not finished: {missing}.' if missing else '')
    paths = report.write(config, [study.load_row_result(work_dir, r)
                                  for r in done], _OUTPUT_DIR.value, context)
    print(f'[{config.study}] report of {len(done)} rows: ' + ', '.join(paths))
    return
  if _FRESH.value and os.path.exists(work_dir):
    shutil.rmtree(work_dir)
  os.makedirs(work_dir, exist_ok=True)
  parallel = int(config.get('parallel_rows', 1))
  results = _run_rows(config, work_dir, study, report, parallel)
  paths = report.write(config, results, _OUTPUT_DIR.value, _context())
  print(f'[{config.study}] done; wrote ' + ', '.join(paths), flush=True)


def _finished(study, work_dir, row) -> bool:
  return os.path.exists(os.path.join(study.row_dir(work_dir, row),
                                     study.ROW_RESULT))


def _start_row(study, work_dir, row, cpu):
  """Starts `row` in its own process (on CPU `cpu` when given)."""
  log = os.path.join(work_dir, f'{row["name"]}.log')
  with open(log, 'w') as f:
    process = subprocess.Popen(
        [sys.executable, '-m', 'experiments.run_study',
         *study_config.row_process_flags(sys.argv),
         f'--work_dir={work_dir}', f'--only_row={row["name"]}'],
        stdout=f, stderr=subprocess.STDOUT, cwd=study.REPO_ROOT,
        preexec_fn=None if cpu is None else
        (lambda: os.sched_setaffinity(0, {cpu})))
  return process, log


def _check_exit(row, process, log):
  if process.returncode:
    with open(log) as f:
      tail = f.read()[-3000:]
    raise RuntimeError(f'Row {row["name"]} failed (exit {process.returncode}); '
                       f'log {log}:\n{tail}')


def _run_rows(config, work_dir, study, report, parallel: int) -> list:
  """Every row's result, in config order: reused, run here, or run in
  `parallel` processes at once (each on its own CPU core)."""
  rows = list(config.rows)
  if parallel > 1 and any(r['init_from'] for r in rows):
    raise ValueError('parallel_rows > 1 needs rows that do not warm-start '
                     'from each other (init_from).')
  for row in rows:
    if not _finished(study, work_dir, row) and os.path.exists(
        study.row_dir(work_dir, row)):
      # A row stopped part-way restarts from scratch, so that its step time
      # and its steps are those of one uninterrupted run.
      shutil.rmtree(study.row_dir(work_dir, row))
  started = time.time()
  results, times = {}, []
  pending = [r for r in rows if not _finished(study, work_dir, r)]
  for row in rows:
    if _finished(study, work_dir, row):
      results[row['name']] = study.load_row_result(work_dir, row)

  def report_row(row, seconds):
    times.append(seconds)
    done = len(results)
    left = len(rows) - done
    estimate = statistics.fmean(times) * left / max(1, parallel)
    result = results[row['name']]
    print(f'[{config.study} {done}/{len(rows)}] {row["name"]}: '
          f'{report.main_metric(config, result):.4f} '
          f'({report.METRIC_NAMES[config.study]}), '
          f'{result["step_seconds"]:.2f} s/step, {seconds:.0f} s; '
          f'{time.time() - started:.0f} s total, about {estimate:.0f} s left',
          flush=True)

  if parallel > 1:
    cpus = sorted(os.sched_getaffinity(0))
    running = {}  # cpu -> (row, process, log, start)
    while pending or running:
      for cpu in cpus[:parallel]:
        if cpu not in running and pending:
          row = pending.pop(0)
          running[cpu] = (row, *_start_row(study, work_dir, row, cpu),
                          time.time())
      time.sleep(1.0)
      for cpu, (row, process, log, start) in list(running.items()):
        if process.poll() is None:
          continue
        del running[cpu]
        _check_exit(row, process, log)
        results[row['name']] = study.load_row_result(work_dir, row)
        report_row(row, time.time() - start)
  else:
    for row in pending:
      start = time.time()
      if config.isolate_rows:
        process, log = _start_row(study, work_dir, row, None)
        process.wait()
        _check_exit(row, process, log)
        results[row['name']] = study.load_row_result(work_dir, row)
      else:
        results[row['name']] = study.run_row(config, row, work_dir)
      report_row(row, time.time() - start)
  return [results[r['name']] for r in rows]


if __name__ == '__main__':
  app.run(main)
