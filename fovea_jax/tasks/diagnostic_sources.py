"""Synthetic long-range diagnostics: text with answers at known distances.

Each generator makes one example of exactly `length` bytes from a NumPy RNG
and returns `(text, answers)`; `answers` lists `(start, end, distance, group)`
per query: the byte positions `[start, end)` of the answer (what the model must
predict), how far back the query's evidence lies, and a task-specific group
(see each generator). The text is ASCII, one byte vocabulary token per
character, so positions in the text are positions in the token sequence.

Alphabets are disjoint by role so that the only way to predict an answer is to
find its evidence: filler bytes (`FILLER`, repeated in order from a random
phase) carry nothing; keys, values, markers and region symbols appear only
where the task puts them.

- `associative_recall` (multi-query associative recall, as in Zoology's MQAR):
  single-byte keys (`A-Z a-z`), each followed by a value digit; every key occurs
  twice, and the second occurrence asks for the value seen after the first.
  Distance: between the two occurrences of the key. Group: facts per 64 bytes
  (0.5, 1, 2 or 4, drawn per example): the denser the facts, the more of them
  a pooled (coarse) key averages together.
- `fact_retrieval`: four facts `@KVV` (a letter key, a two-digit value) in
  filler, and at the end the queries `?KVV` in another order; both value
  digits must be right. Distance: from the query to its fact. Group: none (0).
- `frequent_symbol` (an aggregate): four regions, each of one alphabet of eight
  symbols in which one symbol is the most frequent (drawn with probability 0.4);
  at the end, queries `?T` followed by the most frequent symbol of region `T`.
  A coarse average of the region is enough to answer. Distance: from the query
  to the centre of its region. Group: none (0).
"""
import math
import string
from typing import Callable, Dict, List, Tuple

import numpy as np

FILLER = '.,;:!-+*'
KEYS = string.ascii_uppercase + string.ascii_lowercase
DIGITS = string.digits
# Facts per 64 bytes in associative recall (its `group`).
RECALL_DENSITIES = (0.5, 1.0, 2.0, 4.0)
FACTS_PER_EXAMPLE = 4
REGION_ALPHABETS = ('abcdefgh', 'ijklmnop', 'qrstuvwx', '01234567')
REGION_TAGS = 'ABCD'
DOMINANT_PROBABILITY = 0.4

Answer = Tuple[int, int, int, float]


def _filler(rng: np.random.Generator, length: int) -> List[str]:
  # FILLER repeated from a random phase: each filler byte follows from the one
  # before it, so a model first learns to read its previous token (which the
  # lookups then build on) and spends no loss on the filler afterwards.
  phase = int(rng.integers(len(FILLER)))
  return [FILLER[(phase + i) % len(FILLER)] for i in range(length)]


def _log_uniform(rng: np.random.Generator, low: int, high: int) -> int:
  return int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))


def associative_recall(rng: np.random.Generator,
                       length: int) -> Tuple[str, List[Answer]]:
  if length < 16:
    raise ValueError(f'associative_recall needs at least 16 bytes, got {length}.')
  density = float(rng.choice(RECALL_DENSITIES))
  num_facts = int(min(len(KEYS), max(1, round(density * length / 64))))
  text = _filler(rng, length)
  used = np.zeros(length, bool)
  keys = rng.permutation(list(KEYS))[:num_facts]
  answers = []
  for key in keys:
    for _ in range(100):
      # Log-uniform distances: every octave of distance gets as many queries.
      distance = _log_uniform(rng, 4, length - 2)
      first = int(rng.integers(0, length - 1 - distance))
      second = first + distance
      slots = [first, first + 1, second, second + 1]
      if not used[slots].any():
        break
    else:
      continue
    used[slots] = True
    value = str(rng.choice(list(DIGITS)))
    text[first], text[first + 1] = key, value
    text[second], text[second + 1] = key, value
    answers.append((second + 1, second + 2, distance, density))
  return ''.join(text), sorted(answers)


def fact_retrieval(rng: np.random.Generator,
                   length: int) -> Tuple[str, List[Answer]]:
  fact_len = 4  # '@KVV' and '?KVV'
  queries_len = FACTS_PER_EXAMPLE * fact_len
  if length < 4 * queries_len:
    raise ValueError(f'fact_retrieval needs at least {4 * queries_len} bytes, '
                     f'got {length}.')
  text = _filler(rng, length)
  query_start = length - queries_len
  used = np.zeros(length, bool)
  used[query_start:] = True  # facts stay out of the queries
  letters = list(string.ascii_uppercase)
  keys = sorted(rng.choice(letters, size=FACTS_PER_EXAMPLE, replace=False))
  values = [''.join(rng.choice(list(DIGITS), size=2)) for _ in keys]
  order = rng.permutation(FACTS_PER_EXAMPLE)
  answers = []
  for slot, i in enumerate(order):
    query = query_start + slot * fact_len
    for _ in range(200):
      distance = _log_uniform(rng, fact_len + 1, query)
      start = query - distance
      if start >= 0 and not used[start:start + fact_len].any():
        break
    else:
      raise RuntimeError('fact_retrieval could not place its facts; '
                         'use a longer length.')
    used[start:start + fact_len] = True
    text[start:start + fact_len] = f'@{keys[i]}{values[i]}'
    text[query:query + fact_len] = f'?{keys[i]}{values[i]}'
    answers.append((query + 2, query + 4, distance, 0.0))
  return ''.join(text), sorted(answers)


def frequent_symbol(rng: np.random.Generator,
                    length: int) -> Tuple[str, List[Answer]]:
  regions = len(REGION_ALPHABETS)
  queries_len = 3 * regions  # '?T' and the answer
  region_len = max(16, length // 10)
  free = length - queries_len - regions * region_len
  if free < 0:
    raise ValueError(f'frequent_symbol needs at least '
                     f'{queries_len + regions * 16} bytes, got {length}.')
  text = _filler(rng, length)
  # Regions in a random order with random gaps between them.
  order = rng.permutation(regions)
  gaps = np.diff(np.concatenate(
      [[0], np.sort(rng.integers(0, free + 1, size=regions))]))
  centres, answer_symbol = {}, {}
  position = 0
  for gap, r in zip(gaps, order):
    position += int(gap)
    alphabet = list(REGION_ALPHABETS[r])
    dominant = int(rng.integers(len(alphabet)))
    while True:
      others = rng.choice([i for i in range(len(alphabet)) if i != dominant],
                          size=region_len)
      symbols = np.where(rng.random(region_len) < DOMINANT_PROBABILITY,
                         dominant, others)
      counts = np.bincount(symbols, minlength=len(alphabet))
      if counts[dominant] > np.delete(counts, dominant).max():
        break
    text[position:position + region_len] = [alphabet[s] for s in symbols]
    centres[r] = position + region_len // 2
    answer_symbol[r] = alphabet[dominant]
    position += region_len
  answers = []
  query = length - queries_len
  for r in rng.permutation(regions):
    text[query:query + 3] = ['?', REGION_TAGS[r], answer_symbol[r]]
    answers.append((query + 2, query + 3, query - centres[r], 0.0))
    query += 3
  return ''.join(text), sorted(answers)


# Accuracy of guessing: a value digit; two value digits; a symbol of the
# region's alphabet of eight.
CHANCE = {'associative_recall': 0.1, 'fact_retrieval': 0.01,
          'frequent_symbol': 0.125}

GENERATORS: Dict[str, Callable[[np.random.Generator, int],
                               Tuple[str, List[Answer]]]] = {
    'associative_recall': associative_recall,
    'fact_retrieval': fact_retrieval,
    'frequent_symbol': frequent_symbol,
}
SPLIT_CODES = {'train': 0, 'validation': 1, 'test': 2}


def example(task: str, split: str, index: int, length: int,
            seed: int = 0) -> Tuple[str, List[Answer]]:
  """Example `index` of `split`: the same inputs give the same example."""
  rng = np.random.default_rng(
      [seed, SPLIT_CODES[split], index, length,
       list(GENERATORS).index(task)])
  return GENERATORS[task](rng, length)
