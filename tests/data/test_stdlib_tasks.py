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


def test_outline_names_the_definitions_of_the_cut_source_in_order():
  source = ('import os\n\nclass Café:\n  """é"""\n  async def run(self):\n'
            '    def inner(): pass\n# def commented\nx = "def not_a_line"\n'
            'def last_one(): pass\n')
  cut, names = stdlib_sources.outline(source, limit=10_000)
  assert cut == source
  assert names == 'Café run inner last_one'
  cut, names = stdlib_sources.outline('class A: pass\ndef b(): pass\n', 18)
  assert cut == 'class A: pass\ndef '  # 18 bytes: `b` is cut off
  assert names == 'A'
  # A cut inside a multi-byte character drops the partial character.
  cut, _ = stdlib_sources.outline('ab\u00e9', limit=3)
  assert cut == 'ab'


def test_outline_windows_hold_whole_lines_and_the_names_defined_in_each():
  source = ('class A:\n    def one(self): pass\n\n'
            'def two(): pass\n# café\nx = 1\n')
  windows = stdlib_sources.outline_windows(source, limit=24)
  assert windows == [('class A:\n', 'A'),
                     ('    def one(self): pass\n', 'one'),
                     ('\ndef two(): pass\n', 'two'),
                     ('# café\nx = 1\n', '')]
  assert all(len(w.encode()) <= 24 for w, _ in windows)
  assert ''.join(w for w, _ in windows) == source
  # A line longer than the limit is cut at the limit, even inside a character
  # (which is dropped).
  assert stdlib_sources.outline_windows('ééé\n', limit=3) == [
      ('é', ''), ('é', ''), ('\n', '')]


def test_outline_task_windows_cover_the_modules_and_name_their_definitions():
  examples = _examples('stdlib_outline', {'inputs': 256, 'targets': 1024})
  modules = stdlib_sources.modules_by_split()['validation']
  # Several windows per module: many more examples than modules.
  assert len(examples) > 10 * len(modules)
  for example in examples:
    inputs = example['inputs_pretokenized'].decode()
    names = example['targets_pretokenized'].decode().split()
    assert names and len(example['inputs']) <= 256
    assert len(inputs.encode()) <= stdlib_sources.OUTLINE_SOURCE_BYTES
    assert all(name in inputs for name in names)
  # The windows are consecutive pieces of the module sources, in order.
  sources = ''.join(m.source_without_docstring for m in modules)
  position = 0
  for example in examples:
    position = sources.index(example['inputs_pretokenized'].decode(), position)
