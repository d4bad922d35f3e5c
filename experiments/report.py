"""A study's results as JSON, a markdown table and PNG plots.

`write(config, results, output_dir, context)` writes `<study>.json` (every row's
full result, the config and where it ran), `<study>.md` (the table) and plots:
validation loss by token position (LM) and the main metric per row; the
diagnostic study's tables and accuracy-by-distance plot come from
`diagnostic_report`.
"""
import json
import math
import os
import statistics

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top

from experiments import diagnostic_report  # noqa: E402

# What `main_metric` is, per study.
METRIC_NAMES = {'lm': 'val bits/byte', 'summarization': 'val nats/token',
                'diagnostic': 'mean answer accuracy'}


def _task_metrics(result) -> dict:
  metrics = result['evaluation']['metrics']
  return next(iter(metrics.values())) if metrics else {}


def bits_per_byte(result) -> float:
  return _task_metrics(result)['bits_per_byte']


def main_metric(config, result) -> float:
  if config.study == 'lm':
    return bits_per_byte(result)
  if config.study == 'diagnostic':
    return diagnostic_report.mean_accuracy(result)
  return result['evaluation']['nll_per_token']


def seed_noise(config, results) -> dict:
  """{label: {'values': [...], 'spread': max - min}} for labels run with >1 seed."""
  by_label = {}
  for r in results:
    by_label.setdefault(r['label'], []).append(main_metric(config, r))
  return {label: {'values': values, 'spread': max(values) - min(values),
                  'mean': statistics.fmean(values)}
          for label, values in by_label.items() if len(values) > 1}


def _fmt(x, digits=3):
  if x is None or (isinstance(x, float) and math.isnan(x)):
    return '-'
  return f'{x:.{digits}f}'


def markdown(config, results, context) -> str:
  lengths = ', '.join(f'{k} {v}' for k, v in config.feature_lengths.items())
  lines = [
      f'# {config.study} study ({config.mode})', '',
      f'Task `{config.task}` ({lengths}), model `{config.model_gin}`, '
      f'{config.train_steps} steps of batch {config.batch_size}, seed '
      f'{config.seed} unless stated, optimizer bindings '
      f'{list(config.optimizer_bindings)}; validation on '
      f'{config.eval_examples} examples.', '',
      f'Step times: {context}', '',
  ]
  if config.study == 'diagnostic':
    return '\n'.join(lines + diagnostic_report.markdown_lines(
        config, results)) + '\n'
  bins = [b['bin'] for b in results[0]['evaluation']['position_loss']]
  if config.study == 'lm':
    header = (['row', 'seed', 'val bits/byte', 'step s', 'attended fraction'] +
              [f'bits/byte @ {b}' for b in bins])
  else:
    header = (['row', 'warm start', 'steps', 'val loss (nats/token)', 'ROUGE-1',
               'ROUGE-2', 'ROUGE-L', 'step s', 'attended fraction'])
  lines += ['| ' + ' | '.join(header) + ' |',
            '|' + '|'.join(['---'] + ['---:'] * (len(header) - 1)) + '|']
  for r in results:
    fraction = _fmt(r['attended_fraction'])
    if config.study == 'lm':
      cells = [r['name'], str(r['seed']), _fmt(bits_per_byte(r)),
               _fmt(r['step_seconds'], 2), fraction]
      cells += [_fmt(b['bits']) for b in r['evaluation']['position_loss']]
    else:
      m = _task_metrics(r)
      cells = [r['name'], r['init_from'] or '-', str(r['train_steps']),
               _fmt(r['evaluation']['nll_per_token']), _fmt(m.get('rouge1'), 2),
               _fmt(m.get('rouge2'), 2), _fmt(m.get('rougeL'), 2),
               _fmt(r['step_seconds'], 2), fraction]
    lines.append('| ' + ' | '.join(cells) + ' |')
  if config.study == 'lm' and 'repeat_loss' in results[0]['evaluation']:
    ngram = results[0]['evaluation']['repeat_ngram']
    names = [b['bin'] for b in results[0]['evaluation']['repeat_loss']]
    lines += ['', f'Bits per byte of tokens whose preceding {ngram} bytes '
              'occurred before, by how far back (d in (lo, hi]; "new": no '
              'earlier occurrence); token counts in parentheses:', '',
              '| row | ' + ' | '.join(f'd {n}' for n in names) + ' |',
              '|---|' + '---:|' * len(names)]
    for r in results:
      lines.append(f'| {r["name"]} | ' + ' | '.join(
          f'{_fmt(b["bits"])} ({b["tokens"]})'
          for b in r['evaluation']['repeat_loss']) + ' |')
  noise = seed_noise(config, results)
  if noise:
    lines += ['', 'Seed noise (max - min of the main metric over seeds):']
    for label, n in noise.items():
      values = ', '.join(_fmt(v, 4) for v in n['values'])
      lines.append(f'- {label}: {values} -> spread {_fmt(n["spread"], 4)}')
  return '\n'.join(lines) + '\n'


def plot_position_loss(config, results, path):
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for r in results:
    table = r['evaluation']['position_loss']
    xs = [b['bin'] for b in table]
    ax.plot(xs, [b['bits'] for b in table], marker='o', label=r['name'])
  unit = 'bits per byte' if config.study == 'lm' else 'bits per target token'
  ax.set_xlabel('target token position bin')
  ax.set_ylabel(f'validation {unit}')
  ax.set_title(f'{config.study} study: loss by token position')
  ax.legend(fontsize=7, ncol=2)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_metric(config, results, path):
  fig, ax = plt.subplots(figsize=(7, 4))
  names = [r['name'] for r in results]
  values = [main_metric(config, r) for r in results]
  ax.barh(names, values)
  ax.set_xlabel('validation bits per byte' if config.study == 'lm'
                else 'validation loss (nats per target token)')
  lo = min(values)
  ax.set_xlim(lo - 0.1 * abs(lo) - 1e-3, max(values) + 0.02 * abs(lo) + 1e-3)
  ax.invert_yaxis()
  ax.grid(alpha=0.3, axis='x')
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def write(config, results, output_dir: str, context: str) -> list:
  """Writes the study's JSON, markdown and PNGs; returns their paths."""
  os.makedirs(output_dir, exist_ok=True)
  stem = os.path.join(output_dir, f'{config.study}_study')
  if config.mode != 'full':
    stem += f'_{config.mode}'
  with open(stem + '.json', 'w') as f:
    record = {'config': config.to_dict(), 'context': context,
              'seed_noise': seed_noise(config, results), 'rows': results}
    if config.study == 'diagnostic':
      record['summary'] = diagnostic_report.summary(config, results)
    json.dump(record, f, indent=2, default=list)
  with open(stem + '.md', 'w') as f:
    f.write(markdown(config, results, context))
  plot_position_loss(config, results, stem + '_position_loss.png')
  if config.study == 'diagnostic':
    diagnostic_report.plot(config, results, stem + '_accuracy.png')
    return [stem + ext for ext in ('.json', '.md', '_position_loss.png',
                                   '_accuracy.png')]
  plot_metric(config, results, stem + '_metric.png')
  return [stem + ext for ext in ('.json', '.md', '_position_loss.png',
                                 '_metric.png')]
