"""Summarization examples in JSONL files, checked line by line.

One JSON object per line, UTF-8: `document` (a string, or a list of strings
joined by blank lines, e.g. the articles of a WCEP-10 cluster) and `summary`
(a string); other fields are ignored. `check_file` reads a whole file before
training and raises a `DataError` naming the line of the first record that
cannot be used; `read_examples` then yields the usable ones. Both parse each
line through `_parse_line`, so they agree on what is usable. No TensorFlow here.

What is not an error, and why:
  * blank lines are skipped: a trailing newline or blank separators are
    layout, not records;
  * a record whose document or summary is empty (or only whitespace) is
    skipped with a warning naming how many and the first line: it carries no
    training signal (there is nothing to summarise, or only an end-of-sequence
    to predict), and a few such records in a scraped corpus should not stop a
    run over the rest. A file left with no usable record is an error.
  * a UTF-8 byte order mark at the start of the file is dropped (editors on
    Windows write one).
Everything else (bytes that are not UTF-8, invalid JSON, a missing field, a
field of another type, a line over `MAX_LINE_BYTES`) is an error: each means
the file is not what the task reads, and guessing would train on garbage.
"""
import dataclasses
import functools
import itertools
import json
import logging
import os
from typing import Iterator, Optional, Tuple

from fovea_jax.data.errors import DataError

# The longest line read. A line holds one example, whose document the model
# truncates to TASK_FEATURE_LENGTHS anyway; the longest records of the
# benchmark corpora are a few MiB. A longer line is almost always a file
# without newlines (a JSON array, a file saved as one line), and reading it
# whole could exhaust memory, so it is refused after this many bytes.
MAX_LINE_BYTES = 64 << 20

_RECORD_EXAMPLE = '{"document": "...", "summary": "..."}'


@dataclasses.dataclass(frozen=True)
class FileCheck:
  """What `check_file` found: usable examples and skipped lines."""
  path: str
  examples: int
  blank_lines: int
  empty_records: int
  first_empty_record_line: Optional[int]


def _json_type(value) -> str:
  for kind, name in ((bool, 'boolean'), (str, 'string'), (dict, 'object'),
                     (list, 'array'), ((int, float), 'number')):
    if isinstance(value, kind):
      return name
  return 'null'


def _lines(path: str) -> Iterator[Tuple[int, bytes]]:
  """(line number, raw bytes) of each line, refusing lines over the bound."""
  with open(path, 'rb') as f:
    for number in itertools.count(1):
      line = f.readline(MAX_LINE_BYTES + 1)
      if not line:
        return
      if len(line) > MAX_LINE_BYTES:
        raise DataError(
            f'{path}:{number}',
            f'the line is longer than {MAX_LINE_BYTES} bytes '
            '(summary_jsonl.MAX_LINE_BYTES), so it is not one record',
            'write one JSON object per line (a JSON array, or a file saved '
            'without newlines, is not JSONL)')
      yield number, line


def _text(path: str, number: int, record: dict, field: str) -> str:
  """`record[field]` as text: a string, or (document) a list of strings."""
  where = f'{path}:{number}'
  if field not in record:
    raise DataError(
        where, f'the object has no "{field}" field (it has '
        f'{", ".join(json.dumps(k) for k in record) or "no fields"})',
        f'give every line a "document" and a "summary", e.g. {_RECORD_EXAMPLE}')
  value = record[field]
  if field == 'document' and isinstance(value, list):
    for index, item in enumerate(value):
      if not isinstance(item, str):
        raise DataError(
            where, f'"document"[{index}] is a JSON {_json_type(item)}, not a '
            'string', 'give "document" as a string or a list of strings')
    value = '\n\n'.join(value)
  if not isinstance(value, str):
    allowed = ('a string or a list of strings' if field == 'document' else
               'a string')
    raise DataError(
        where, f'"{field}" is a JSON {_json_type(value)}, not {allowed}',
        f'write "{field}" as {allowed}')
  return value


def _parse_line(path: str, number: int,
                raw: bytes) -> Optional[Tuple[bytes, bytes]]:
  """UTF-8 (document, summary) of one line; None for a blank line."""
  where = f'{path}:{number}'
  try:
    line = raw.decode('utf-8-sig' if number == 1 else 'utf-8')
  except UnicodeDecodeError as e:
    raise DataError(
        where, f'byte {e.start + 1} of the line (0x{raw[e.start]:02x}) is not '
        'UTF-8', 'convert the file to UTF-8, e.g. `iconv -f latin1 -t utf-8 '
        'in.jsonl > out.jsonl` for a Latin-1 file') from None
  if not line.strip():
    return None
  try:
    # Without its line break, so that columns count within the line.
    record = json.loads(line.rstrip('\r\n'))
  except json.JSONDecodeError as e:
    raise DataError(
        where, f'invalid JSON at column {e.colno}: {e.msg}',
        f'write one JSON object per line, e.g. {_RECORD_EXAMPLE}') from None
  if not isinstance(record, dict):
    raise DataError(
        where, f'the line is a JSON {_json_type(record)}, not an object',
        f'write one JSON object per line, e.g. {_RECORD_EXAMPLE}')
  texts = []
  for field in ('document', 'summary'):
    text = _text(path, number, record, field)
    try:
      texts.append(text.encode('utf-8'))
    except UnicodeEncodeError as e:
      raise DataError(
          where, f'"{field}" holds an unpaired surrogate escape '
          f'(\\u{ord(text[e.start]):04x}), which is no character',
          'write the character itself, or both halves of its surrogate pair'
      ) from None
  return texts[0], texts[1]


def _usable(document: bytes, summary: bytes) -> bool:
  return bool(document.strip() and summary.strip())


def read_examples(path: str) -> Iterator[Tuple[bytes, bytes]]:
  """The usable (document, summary) pairs of `path`, UTF-8, in file order."""
  for number, raw in _lines(path):
    pair = _parse_line(path, number, raw)
    if pair is not None and _usable(*pair):
      yield pair


@functools.lru_cache(maxsize=64)
def _check(path: str, size: int, mtime_ns: int) -> FileCheck:
  del size, mtime_ns  # Only key the cache: a changed file is read again.
  examples = blank_lines = empty_records = 0
  first_empty = None
  for number, raw in _lines(path):
    pair = _parse_line(path, number, raw)
    if pair is None:
      blank_lines += 1
    elif _usable(*pair):
      examples += 1
    else:
      empty_records += 1
      first_empty = first_empty or number
  return FileCheck(path, examples, blank_lines, empty_records, first_empty)


def check_file(path: str) -> FileCheck:
  """Reads all of the file at `path`; DataError unless every record is usable
  or skipped (see the module docstring) and at least one is usable."""
  stat = os.stat(path)
  check = _check(path, stat.st_size, stat.st_mtime_ns)
  if not check.examples:
    if not stat.st_size:
      problem = 'the file is empty'
    else:
      problem = (f'no usable example: {check.blank_lines} blank lines and '
                 f'{check.empty_records} records with an empty document or '
                 'summary')
    raise DataError(path, problem,
                    f'write one JSON object per line, e.g. {_RECORD_EXAMPLE}, '
                    'with a non-empty document and summary')
  if check.empty_records:
    logging.warning(
        '%s: skipped %d of %d records whose document or summary is empty '
        '(the first at line %d).', path, check.empty_records,
        check.empty_records + check.examples, check.first_empty_record_line)
  return check
