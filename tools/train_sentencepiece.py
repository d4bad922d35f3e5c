"""Trains a SentencePiece vocabulary on the raw text of a registered task.

    python tools/train_sentencepiece.py --task=multi_news --split=train \
        --vocab_size=32000 --output_prefix=/data/spm/multi_news_32k

writes `<output_prefix>.model` (give it to gin as `paths.sentencepiece_model_path.path`)
and `<output_prefix>.vocab`. Ids follow T5/seqio: pad 0, EOS 1, UNK 2, no BOS.
The text is the task's features before tokenization (its rekey and similar
steps are applied), so the vocabulary need not exist yet. By default text is
kept exactly (no NFKC normalisation, whitespace and newlines preserved, unseen
characters as byte pieces), so that decode(encode(text)) == text, which source
code and byte-exact metrics need; pass --normalization_rule_name=nmt_nfkc for
T5's normalisation of prose.
"""
import argparse
import itertools
import sys
from typing import Iterator, Optional, Sequence

import sentencepiece

from fovea_jax.data.config import get_mixture_or_task
from fovea_jax.tensorflow_runtime import seqio
from fovea_jax.tensorflow_runtime import tf


def _is_tokenize_step(preprocessor) -> bool:
  function = getattr(preprocessor, 'func', preprocessor)
  return (isinstance(preprocessor, seqio.CacheDatasetPlaceholder) or
          getattr(function, '__name__', '').startswith('tokenize'))


def raw_text_dataset(task: seqio.Task, split: str) -> tf.data.Dataset:
  """The task's examples just before tokenization (text features)."""
  dataset = task.source.get_dataset(split=split, shuffle=False)
  for preprocessor in task.preprocessors:
    if _is_tokenize_step(preprocessor):
      break
    dataset = seqio.utils.add_kwargs_to_transform(
        preprocessor, output_features=task.output_features)(dataset)
  return dataset


def task_text_lines(task_name: str, split: str = 'train',
                    features: Optional[Sequence[str]] = None,
                    max_examples: Optional[int] = None,
                    module: Optional[str] = 'fovea_jax.tasks') -> Iterator[str]:
  """Non-empty lines of the task's text features, example by example."""
  task = get_mixture_or_task(task_name, module)
  if not isinstance(task, seqio.Task):
    raise ValueError(f'{task_name!r} is a mixture; train on one of its tasks.')
  features = list(features or task.output_features)
  dataset = raw_text_dataset(task, split)
  missing = [f for f in features if f not in dataset.element_spec]
  if missing:
    raise ValueError(f'Task {task_name!r} has no text features {missing}; it '
                     f'has {sorted(dataset.element_spec)}.')
  examples = dataset.as_numpy_iterator()
  for example in itertools.islice(examples, max_examples):
    for feature in features:
      text = example[feature].decode('utf-8', errors='replace')
      yield from _pieces_of_whole_lines(text)


# SentencePiece skips training sentences longer than this many bytes.
_MAX_PIECE_BYTES = 4000


def _pieces_of_whole_lines(text: str) -> Iterator[str]:
  """Cuts text at line ends into pieces SentencePiece will not skip.

  Newlines stay inside the pieces so the vocabulary learns them.
  """
  piece, size = [], 0
  for line in text.splitlines(keepends=True):
    line_bytes = len(line.encode('utf-8'))
    if piece and size + line_bytes > _MAX_PIECE_BYTES:
      yield ''.join(piece)
      piece, size = [], 0
    piece.append(line)
    size += line_bytes
  if piece and ''.join(piece).strip():
    yield ''.join(piece)


def train(task_name: str, output_prefix: str, vocab_size: int, *,
          split: str = 'train', features: Optional[Sequence[str]] = None,
          max_examples: Optional[int] = None, model_type: str = 'unigram',
          character_coverage: float = 1.0,
          normalization_rule_name: str = 'identity',
          byte_fallback: bool = True,
          whitespace_pieces: bool = False,
          module: Optional[str] = 'fovea_jax.tasks') -> str:
  """Trains and writes the model; returns the path of the `.model` file."""
  # Byte fallback reserves 256 byte pieces besides the 3 special ids.
  minimum = 3 + (256 if byte_fallback else 0)
  if vocab_size <= minimum:
    raise ValueError(f'vocab_size must exceed {minimum} (special ids'
                     f'{" and byte pieces" if byte_fallback else ""}), got '
                     f'{vocab_size}.')
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=task_text_lines(task_name, split, features,
                                        max_examples, module),
      model_prefix=output_prefix,
      vocab_size=vocab_size,
      model_type=model_type,
      character_coverage=character_coverage,
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
      normalization_rule_name=normalization_rule_name,
      byte_fallback=byte_fallback,
      # Keep whitespace runs (code indentation) instead of collapsing them.
      remove_extra_whitespaces=False,
      split_digits=True,
      max_sentence_length=_MAX_PIECE_BYTES + 96,
      # For source code: pieces may hold indentation runs and span spaces
      # (about 1.5x fewer tokens on the stdlib; training is several times
      # slower).
      split_by_whitespace=not whitespace_pieces,
      allow_whitespace_only_pieces=whitespace_pieces,
      minloglevel=2)
  return output_prefix + '.model'


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--task', required=True)
  parser.add_argument('--output_prefix', required=True)
  parser.add_argument('--vocab_size', type=int, default=32000)
  parser.add_argument('--split', default='train')
  parser.add_argument('--features', default=None,
                      help='Comma-separated; default all of the task\'s.')
  parser.add_argument('--max_examples', type=int, default=None)
  parser.add_argument('--model_type', default='unigram',
                      choices=['unigram', 'bpe', 'char', 'word'])
  parser.add_argument('--character_coverage', type=float, default=1.0)
  parser.add_argument('--normalization_rule_name', default='identity',
                      help="'identity' keeps text exactly; T5 used nmt_nfkc.")
  parser.add_argument('--no_byte_fallback', dest='byte_fallback',
                      action='store_false',
                      help='Map unseen characters to UNK instead of bytes.')
  parser.add_argument('--whitespace_pieces', action='store_true',
                      help='Let pieces span whitespace (source code).')
  parser.add_argument('--module', default='fovea_jax.tasks',
                      help='Module whose import registers the task.')
  args = parser.parse_args(argv)
  path = train(args.task, args.output_prefix, args.vocab_size,
               split=args.split,
               features=args.features.split(',') if args.features else None,
               max_examples=args.max_examples, model_type=args.model_type,
               character_coverage=args.character_coverage,
               normalization_rule_name=args.normalization_rule_name,
               byte_fallback=args.byte_fallback,
               whitespace_pieces=args.whitespace_pieces, module=args.module)
  print(f'Wrote {path}')


if __name__ == '__main__':
  sys.exit(main())
