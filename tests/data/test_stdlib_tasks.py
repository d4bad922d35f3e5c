"""The offline standard-library tasks on the real installed stdlib."""
import ast

import numpy as np
import pytest

from fovea_jax.tasks import stdlib_sources
from fovea_jax.tensorflow_runtime import seqio


def test_splits_are_a_deterministic_partition_by_path_hash():
  by_split = stdlib_sources.modules_by_split()
  paths = {s: [m.relative_path for m in ms] for s, ms in by_split.items()}
  assert len(paths['train']) > 300
  assert len(paths['validation']) > 5 and len(paths['test']) > 5
  assert not set(paths['train']) & set(paths['validation'])
  assert not set(paths['validation']) & set(paths['test'])
  for split, names in paths.items():
    assert all(stdlib_sources.split_of(p) == split for p in names)
  # The bucket depends on the relative path only (not where Python lives).
  assert stdlib_sources.split_of('json/decoder.py') == (
      stdlib_sources.split_of('json/decoder.py'))
  assert {stdlib_sources.split_of(f'm{i}.py') for i in range(200)} == set(
      stdlib_sources.SPLITS)


def test_docstring_is_removed_exactly():
  source = ('#!/usr/bin/env python\n"""Summary line\nwrapping here.\n\nMore '
            'detail."""\nimport os  # café\n')
  without, docstring = stdlib_sources.remove_module_docstring(source)
  assert without == '#!/usr/bin/env python\nimport os  # café\n'
  assert stdlib_sources.first_paragraph(docstring) == (
      'Summary line wrapping here.')


def _examples(task_name, lengths, split='validation'):
  task = seqio.get_mixture_or_task(task_name)
  return list(task.get_dataset(lengths, split=split, shuffle=False)
              .as_numpy_iterator())


def test_summarization_inputs_lack_docstring_and_targets_are_summaries():
  examples = _examples('stdlib_summarization',
                       {'inputs': 100_000, 'targets': 1000})
  modules = stdlib_sources.modules_by_split()['validation']
  assert len(examples) == len(modules)
  vocab = seqio.ByteVocabulary()
  for example, module in zip(examples, modules):
    inputs = example['inputs_pretokenized'].decode()
    target = example['targets_pretokenized'].decode()
    assert target and target == module.docstring_summary
    assert ast.get_docstring(ast.parse(module.source)) is not None
    assert ast.get_docstring(ast.parse(inputs)) is None
    assert target not in ' '.join(inputs.split())
    # Byte tokens that decode back to the texts, each closed by EOS.
    assert example['targets'][-1] == vocab.eos_id
    # (Some modules are longer than the 100k bytes kept.)
    assert inputs.startswith(vocab.decode(example['inputs'][:-1].tolist()))


def test_language_model_chunks_cover_the_sources_in_order():
  examples = _examples('stdlib_lm', {'targets': 4096})
  lengths = [len(e['targets']) for e in examples]
  assert max(lengths) == 4096 and min(lengths) >= 1
  tokens = np.concatenate([e['targets'] for e in examples])
  sources = ''.join(m.source for m in stdlib_sources.modules_by_split()[
      'validation'])
  assert seqio.ByteVocabulary().decode(tokens.tolist()) == sources


def test_language_model_prompts_and_continuations_cover_the_sources():
  examples = _examples('stdlib_lm', {'inputs': 3000, 'targets': 1096})
  assert max(len(e['targets']) for e in examples) == 1096
  assert all(len(e['inputs']) == 3000 for e in examples if len(e['targets']))
  tokens = np.concatenate([np.concatenate([e['inputs'], e['targets']])
                           for e in examples])
  sources = ''.join(m.source for m in stdlib_sources.modules_by_split()[
      'validation'])
  assert seqio.ByteVocabulary().decode(tokens.tolist()) == sources


def test_unknown_split_is_named():
  with pytest.raises(ValueError, match="'dev'"):
    _examples('stdlib_lm', {'targets': 64}, split='dev')
