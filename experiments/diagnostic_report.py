"""The diagnostic study's tables, calibration check and plot.

Rows with one label are seeds of one scheme. Per task, scheme and distance
bin: the mean answer accuracy over seeds and its spread (max - min). Beyond
the window (answers at least `config.beyond` tokens from their evidence, a
distance at which no token of any task's evidence is inside the local scale;
pooled over bins by answer counts) the study is calibrated when, for the task,
dense minus sliding window exceeds three times the larger of their seed
spreads and the sliding window is near chance (within 0.05 of it).
"""
import math
import statistics
from typing import Dict, List

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top

from fovea_jax.tasks import diagnostic_sources  # noqa: E402
from fovea_jax.tasks import diagnostic_tasks  # noqa: E402

NEAR_CHANCE = 0.05


def _task_short(task: str) -> str:
  return task[len(diagnostic_tasks.PREFIX):]


def _lower_edge(distance_bin: str) -> int:
  """'32-64' -> 32."""
  return int(distance_bin.split('-')[0])


def _bins(metrics: dict) -> List[str]:
  return [k[len('accuracy_d'):] for k in metrics if k.startswith('accuracy_d')]


def _beyond(metrics: dict, scale: int) -> float:
  """Accuracy over the answers at distances >= scale."""
  right = total = 0.0
  for b in _bins(metrics):
    if _lower_edge(b) >= scale:
      n = metrics[f'answers_d{b}']
      right += metrics[f'accuracy_d{b}'] * n
      total += n
  return right / total if total else float('nan')


def mean_accuracy(result) -> float:
  """The row's accuracy averaged over the tasks (its one-number summary)."""
  metrics = result['evaluation']['metrics']
  return statistics.fmean(m['accuracy'] for m in metrics.values())


def _by_label(results) -> Dict[str, list]:
  out = {}
  for r in results:
    out.setdefault(r['label'], []).append(r)
  return out


def _stats(values):
  values = [v for v in values if not math.isnan(v)]
  if not values:
    return float('nan'), float('nan')
  return statistics.fmean(values), max(values) - min(values)


def summary(config, results) -> dict:
  """{task: {label: {'bins': {bin: (mean, spread)}, 'beyond': (mean,
  spread), 'overall': (mean, spread)}}} and the calibration verdicts."""
  labels = _by_label(results)
  tasks = sorted(results[0]['evaluation']['metrics'])
  table = {}
  for task in tasks:
    table[task] = {}
    for label, rows in labels.items():
      metrics = [r['evaluation']['metrics'][task] for r in rows]
      bins = sorted({b for m in metrics for b in _bins(m)},
                    key=_lower_edge)
      table[task][label] = {
          'bins': {b: _stats([m.get(f'accuracy_d{b}', float('nan'))
                              for m in metrics]) for b in bins},
          'beyond': _stats([_beyond(m, config.beyond) for m in metrics]),
          'overall': _stats([m['accuracy'] for m in metrics]),
          'seeds': len(rows),
      }
  calibration = {}
  dense_label, sliding_label = config.controls
  for task in tasks:
    if dense_label not in table[task] or sliding_label not in table[task]:
      continue
    (dense, dense_spread) = table[task][dense_label]['beyond']
    (sliding, sliding_spread) = table[task][sliding_label]['beyond']
    chance = diagnostic_sources.CHANCE[_task_short(task)]
    gap = dense - sliding
    noise = max(dense_spread, sliding_spread)
    calibration[task] = {
        'dense': dense, 'sliding': sliding, 'gap': gap,
        'three_spreads': 3 * noise, 'chance': chance,
        'separated': bool(gap > 3 * noise),
        'sliding_near_chance': bool(abs(sliding - chance) <= NEAR_CHANCE),
    }
  return {'table': table, 'calibration': calibration}


def _cell(stat) -> str:
  mean, spread = stat
  if math.isnan(mean):
    return '-'
  return f'{mean:.2f} ± {spread / 2:.2f}'


def markdown_lines(config, results) -> List[str]:
  s = summary(config, results)
  per_label = _by_label(results)
  lines = [
      'Cells: answer accuracy, mean over seeds ± half the seed spread (max - '
      'min). "beyond" pools the answers at least '
      f'{config.beyond} tokens from their evidence (no part of it within the '
      f'local scale of {config.local_scale}). Chance: '
      + ', '.join(f'{k} {v:g}' for k, v in diagnostic_sources.CHANCE.items())
      + '.', '']
  for task, by_label in s['table'].items():
    bins = sorted({b for v in by_label.values() for b in v['bins']},
                  key=_lower_edge)
    header = (['scheme', 'seeds', 'all', f'beyond {config.beyond}'] +
              [f'd {b}' for b in bins] + ['attended fraction', 'step s'])
    lines += [f'### {_task_short(task)}', '',
              '| ' + ' | '.join(header) + ' |',
              '|' + '|'.join(['---'] + ['---:'] * (len(header) - 1)) + '|']
    for label in per_label:
      v = by_label[label]
      rows = per_label[label]
      cells = [label, str(v['seeds']), _cell(v['overall']), _cell(v['beyond'])]
      cells += [_cell(v['bins'].get(b, (float('nan'), 0.0))) for b in bins]
      cells += [f'{statistics.fmean(r["attended_fraction"] for r in rows):.3f}',
                f'{statistics.fmean(r["step_seconds"] for r in rows):.2f}']
      lines.append('| ' + ' | '.join(cells) + ' |')
    lines.append('')
  lines += ['### Calibration (dense against the sliding window, beyond '
            f'{config.beyond} tokens)', '',
            '| task | dense | sliding | gap | 3 x seed spread | separated | '
            'sliding within 0.05 of chance |',
            '|---|---:|---:|---:|---:|---|---|']
  for task, c in s['calibration'].items():
    lines.append(
        f'| {_task_short(task)} | {c["dense"]:.3f} | {c["sliding"]:.3f} | '
        f'{c["gap"]:.3f} | {c["three_spreads"]:.3f} | '
        f'{"yes" if c["separated"] else "no"} | '
        f'{"yes" if c["sliding_near_chance"] else "no"} '
        f'(chance {c["chance"]:g}) |')
  return lines


def plot(config, results, path: str) -> None:
  s = summary(config, results)
  tasks = list(s['table'])
  fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4.2),
                           squeeze=False)
  for ax, task in zip(axes[0], tasks):
    for label, v in s['table'][task].items():
      bins = list(v['bins'])
      xs = [math.sqrt(max(1, _lower_edge(b)) * int(b.split('-')[1]))
            for b in bins]
      means = [v['bins'][b][0] for b in bins]
      spreads = [v['bins'][b][1] / 2 for b in bins]
      ax.errorbar(xs, means, yerr=spreads, marker='o', ms=3, capsize=2,
                  label=label)
    ax.axhline(diagnostic_sources.CHANCE[_task_short(task)], color='gray',
               ls=':', lw=1)
    ax.axvline(config.local_scale, color='gray', ls='--', lw=1)
    ax.set_xscale('log', base=2)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel('distance to the evidence (tokens, bin centre)')
    ax.set_ylabel('answer accuracy')
    ax.set_title(_task_short(task))
    ax.grid(alpha=0.3)
  axes[0][-1].legend(fontsize=7)
  fig.suptitle('diagnostic study: accuracy against distance (mean over seeds, '
               'bars: half the spread; dashed: local scale; dotted: chance)',
               fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
