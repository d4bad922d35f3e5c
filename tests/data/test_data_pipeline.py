"""DatasetConfig checks, batching, sharding and the resumable iterator."""
import json

import numpy as np
import pytest

from fovea_jax import data
from fovea_jax.tensorflow_runtime import seqio

_SUMMARIES = dict(mixture_or_task_name='stdlib_summarization',
                  task_feature_lengths={'inputs': 512, 'targets': 32},
                  split='train', batch_size=4, shuffle=True, seed=7,
                  module='fovea_jax.tasks')


def _config(**overrides):
  return data.DatasetConfig(**{**_SUMMARIES, **overrides})


@pytest.mark.parametrize('lengths, problem', [
    ({'inputs': 512, 'targets': 0}, "'targets'"),
    ({'inputs': 512.0, 'targets': 32}, "'inputs'"),
    ({'inputs': True, 'targets': 32}, "'inputs'"),
    ({'inputs': None, 'targets': 32}, "'inputs'"),
    ({}, 'non-empty'),
])
def test_task_feature_lengths_must_be_positive_ints(lengths, problem):
  with pytest.raises(ValueError, match=problem):
    _config(task_feature_lengths=lengths)


def test_unknown_task_is_named_with_close_matches():
  cfg = _config(mixture_or_task_name='stdlib_summarisation')
  with pytest.raises(ValueError) as error:
    data.get_dataset(cfg)
  assert "'stdlib_summarisation'" in str(error.value)
  assert 'stdlib_summarization' in str(error.value)


def test_missing_task_name_or_module_is_explained():
  with pytest.raises(ValueError, match='MIXTURE_OR_TASK_NAME'):
    _config(mixture_or_task_name='')
  with pytest.raises(ValueError, match="module 'fovea_jax.taks'"):
    data.get_dataset(_config(module='fovea_jax.taks'))


def test_lengths_must_cover_the_task_features():
  with pytest.raises(ValueError, match="features \\['inputs', 'targets'\\]"):
    data.get_dataset(_config(task_feature_lengths={'targets': 32}))


def test_unknown_split_lists_the_tasks_splits():
  with pytest.raises(ValueError, match="no split 'dev'.*'validation'"):
    data.get_dataset(_config(split='dev'))


@pytest.mark.slow
def test_encoder_decoder_batches_and_packing():
  unpacked = next(data.DataIterator(_config(pack=False)))
  assert unpacked['encoder_input_tokens'].shape == (4, 512)
  assert unpacked['decoder_target_tokens'].shape == (4, 32)
  assert 'encoder_segment_ids' not in unpacked
  # Short modules are packed several to a row (long ones fill a row alone).
  packed = data.DataIterator(_config(
      pack=True, task_feature_lengths={'inputs': 4096, 'targets': 128}))
  assert max(next(packed)['encoder_segment_ids'].max() for _ in range(8)) > 1
  np.testing.assert_array_equal(  # Teacher forcing: inputs are shifted targets.
      unpacked['decoder_input_tokens'][:, 1:],
      unpacked['decoder_target_tokens'][:, :-1])


@pytest.mark.slow
def test_language_model_task_gets_the_lm_converter():
  cfg = _config(mixture_or_task_name='stdlib_lm', pack=True,
                task_feature_lengths={'targets': 256})
  batch = next(data.DataIterator(cfg))
  assert set(batch) == {'decoder_target_tokens', 'decoder_input_tokens',
                        'decoder_loss_weights', 'decoder_segment_ids',
                        'decoder_positions'}
  assert batch['decoder_target_tokens'].shape == (4, 256)
  assert batch['decoder_segment_ids'].min() >= 1  # Full 256-byte chunks.


@pytest.mark.slow
def test_language_model_task_with_a_prompt_length_gets_prefix_lm_features():
  cfg = _config(mixture_or_task_name='stdlib_lm', pack=False,
                task_feature_lengths={'inputs': 16, 'targets': 8})
  batch = next(data.DataIterator(cfg))
  assert batch['decoder_input_tokens'].shape == (4, 24)
  # BOS and the 16 prompt tokens; the loss on the 8 continuation tokens.
  np.testing.assert_array_equal(batch['decoder_causal_attention'],
                                np.repeat([[1] * 17 + [0] * 7], 4, axis=0))
  np.testing.assert_array_equal(batch['decoder_loss_weights'],
                                np.repeat([[0] * 16 + [1] * 8], 4, axis=0))
  # The prompt feature is optional, the targets are not.
  for lengths in ({'inputs': 16}, {'targets': 8, 'prompt': 16}):
    with pytest.raises(ValueError, match="\\['targets'\\] \\(and optionally "
                       "\\['inputs'\\]\\)"):
      data.get_dataset(_config(mixture_or_task_name='stdlib_lm',
                               task_feature_lengths=lengths))


@pytest.mark.slow
def test_resuming_from_a_saved_state_continues_identically():
  # The validation split (two dozen modules, about 6 batches an epoch): the
  # resumed run must also reproduce the next epoch's reshuffle.
  cfg = _config(split='validation', pack=True)
  uninterrupted = data.DataIterator(cfg)
  expected = [next(uninterrupted) for _ in range(9)]

  first_run = data.DataIterator(cfg)
  for _ in range(3):
    next(first_run)
  saved = json.dumps(first_run.get_state())  # As a checkpoint would store it.
  resumed = data.DataIterator(cfg, state=json.loads(saved))
  for want in expected[3:]:
    got = next(resumed)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])
  assert resumed.get_state()['batches_consumed'] == 9


@pytest.mark.slow
def test_unseeded_shuffle_picks_a_seed_and_keeps_it_in_the_state():
  cfg = _config(split='validation', seed=None)
  iterator = data.DataIterator(cfg)
  next(iterator)
  state = iterator.get_state()
  assert isinstance(state['seed'], int)
  want = next(iterator)
  got = next(data.DataIterator(cfg, state=state))
  np.testing.assert_array_equal(got['encoder_input_tokens'],
                                want['encoder_input_tokens'])


def test_restoring_into_a_different_pipeline_is_refused():
  state = data.DataIterator(_config()).get_state()
  with pytest.raises(ValueError, match='batch_size .saved 4, now 8'):
    data.DataIterator(_config(batch_size=8), state=state)


@pytest.mark.slow
def test_processes_read_disjoint_shards_of_half_the_batch():
  cfg = _config(split='validation', shuffle=False, batch_size=2)

  def summaries(cfg, shard_info):
    iterator = data.DataIterator(cfg, shard_info=shard_info, num_epochs=1)
    return iterator, [b['decoder_target_tokens'].tobytes() for b in iterator]

  _, whole = summaries(_config(split='validation', shuffle=False, batch_size=1),
                       seqio.ShardInfo(index=0, num_shards=1))
  halves = []
  for index in range(2):
    iterator, rows = summaries(cfg, seqio.ShardInfo(index=index, num_shards=2))
    assert iterator.per_process_batch_size == 1
    assert iterator.global_shapes_and_dtypes()['encoder_input_tokens'][0] == (
        2, 512)
    halves.append(rows)
  # Every example is read by exactly one of the two processes.
  assert halves[0] and halves[1]
  assert sorted(halves[0] + halves[1]) == sorted(whole)
  with pytest.raises(ValueError, match='not divisible'):
    data.get_dataset(_config(batch_size=3),
                     shard_info=seqio.ShardInfo(index=0, num_shards=2))


@pytest.mark.slow
def test_one_processes_saved_state_resumes_every_process():
  # Multi-host checkpoints keep the data state one process saved.
  cfg = _config(split='validation', batch_size=2)
  first, second = (seqio.ShardInfo(index=i, num_shards=2) for i in range(2))
  saver = data.DataIterator(cfg, shard_info=first)
  uninterrupted = data.DataIterator(cfg, shard_info=second)
  for _ in range(2):
    next(saver)
    next(uninterrupted)
  resumed = data.DataIterator(cfg, shard_info=second, state=saver.get_state())
  for _ in range(2):
    np.testing.assert_array_equal(next(resumed)['encoder_input_tokens'],
                                  next(uninterrupted)['encoder_input_tokens'])
  other_layout = seqio.ShardInfo(index=0, num_shards=4)
  with pytest.raises(ValueError, match='num_shards'):
    data.DataIterator(_config(split='validation', batch_size=4),
                      shard_info=other_layout, state=saver.get_state())
