"""Adds our tasks to the seqio registry with the shared feature layouts."""
from fovea_jax.data import preprocessors
from fovea_jax.evaluation import metrics
from fovea_jax.tensorflow_runtime import seqio


def summarization_features(vocabulary: seqio.Vocabulary):
  return {
      'inputs': seqio.Feature(vocabulary=vocabulary, add_eos=True),
      'targets': seqio.Feature(vocabulary=vocabulary, add_eos=True),
  }


def language_model_features(vocabulary: seqio.Vocabulary):
  # Chunks are cut from running text: there is no end of sequence to predict.
  # A prompt `inputs` is cut too when TASK_FEATURE_LENGTHS gives it a length
  # (data.preprocessors.split_tokens_into_examples); it is no output feature since
  # seqio's Evaluator expects every output feature in every example.
  return {'targets': seqio.Feature(vocabulary=vocabulary, add_eos=False)}


def add_task(name: str, **task_kwargs) -> seqio.Task:
  """Registers `name`, replacing an earlier registration of the same name.

  Replacing (rather than failing) keeps `importlib.reload` of a task module and
  re-registration with new arguments in tests working.
  """
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(name, **task_kwargs)


def add_summarization_task(name, source, vocabulary, input_key, target_key):
  return add_task(
      name,
      source=source,
      preprocessors=preprocessors.summarization_preprocessors(
          input_key, target_key),
      output_features=summarization_features(vocabulary),
      metric_fns=[metrics.rouge])


def add_language_model_task(name, source, vocabulary, text_key):
  return add_task(
      name,
      source=source,
      preprocessors=preprocessors.language_model_preprocessors(text_key),
      output_features=language_model_features(vocabulary),
      metric_fns=metrics.language_model_metrics(vocabulary))
