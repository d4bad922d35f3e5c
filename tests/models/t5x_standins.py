"""Stand-ins for the T5X names fovea_jax/t5x_compat/gin/*.gin configure, so that
those files are parsed and bound without T5X (it is not on the package index).

Each stand-in has the parameters of the T5X object it replaces (google-research/
t5x: models.EncoderDecoderModel, models.DecoderOnlyModel, models.DecoderParams,
adafactor.Adafactor, decoding.temperature_sample / beam_search,
partitioning.standard_logical_axis_rules, utils.DatasetConfig), so a binding of
a name T5X does not have fails here as it would there; the objects only record
what they were given.
"""
import dataclasses
import enum
import types
from typing import Any, Optional


class FactorDim(enum.Enum):
  NONE = None
  BATCH = 1
  ROW = 2
  COLUMN = 3


def standard_logical_factor_rules():
  return {'vocab': FactorDim.COLUMN, 'embed': FactorDim.ROW,
          'mlp': FactorDim.COLUMN, 'heads': FactorDim.COLUMN,
          'kv': FactorDim.COLUMN, 'joined_kv': FactorDim.COLUMN,
          'relpos_buckets': FactorDim.NONE, 'layers': FactorDim.BATCH}


def factor_name_to_factordim(name):
  return {'row': FactorDim.ROW, 'col': FactorDim.COLUMN,
          'column': FactorDim.COLUMN, 'batch': FactorDim.BATCH,
          'none': FactorDim.NONE, 'unfactorized': FactorDim.NONE}[name.lower()]


class Adafactor:

  def __init__(self, learning_rate=None, factored=True,
               multiply_by_parameter_scale=True, beta1=None, decay_rate=0.8,
               step_offset=0, clipping_threshold=1.0, weight_decay_rate=None,
               min_dim_size_to_factor=128, epsilon1=1e-30, epsilon2=1e-3,
               dtype_momentum=None, factor_map=None, logical_factor_rules=None,
               weight_decay_rate_lr_exponent=None,
               global_norm_clip_threshold=None, max_parameter_scale=None,
               skip_nan_updates=False):
    self.decay_rate = decay_rate
    self.step_offset = step_offset
    self.logical_factor_rules = logical_factor_rules
    del (learning_rate, factored, multiply_by_parameter_scale, beta1,
         clipping_threshold, weight_decay_rate, min_dim_size_to_factor,
         epsilon1, epsilon2, dtype_momentum, factor_map,
         weight_decay_rate_lr_exponent, global_norm_clip_threshold,
         max_parameter_scale, skip_nan_updates)


def temperature_sample(inputs=None, cache=None, tokens_to_logits=None,
                       eos_id=None, decode_rng=None, num_decodes=1,
                       temperature=1.0, topk=1, topp=0.0, cache_offset=0,
                       initial_index=None, max_decode_steps=None,
                       max_decode_steps_hard_limit=None, rescale_log_probs=True,
                       state_callback_fn=None, logit_callback_fn=None):
  """Returns what it was called with instead of decoding."""
  del inputs, cache, tokens_to_logits, eos_id, decode_rng, cache_offset
  del max_decode_steps, max_decode_steps_hard_limit, rescale_log_probs
  del state_callback_fn, logit_callback_fn
  return {'num_decodes': num_decodes, 'temperature': temperature,
          'topk': topk, 'topp': topp, 'initial_index': initial_index}


def beam_search(inputs=None, cache=None, tokens_to_logits=None, eos_id=None,
                num_decodes=4, alpha=0.6, max_decode_len=None,
                max_decode_step=-1, min_log_prob=None, decode_rng=None,
                cache_offset=0, initial_index=None):
  del inputs, cache, tokens_to_logits, eos_id, max_decode_len
  del max_decode_step, min_log_prob, decode_rng, cache_offset
  return {'num_decodes': num_decodes, 'alpha': alpha,
          'initial_index': initial_index}


@dataclasses.dataclass(frozen=True)
class DecoderParams:
  return_all_decodes: bool = False
  num_decodes: int = 1


class _BaseTransformerModel:

  def __init__(self, module, input_vocabulary, output_vocabulary,
               optimizer_def, decode_fn, label_smoothing, z_loss,
               loss_normalizing_factor):
    self.module = module
    self.input_vocabulary = input_vocabulary
    self.output_vocabulary = output_vocabulary
    self.optimizer_def = optimizer_def
    self._decode_fn = decode_fn
    self.label_smoothing = label_smoothing
    self.z_loss = z_loss
    self.loss_normalizing_factor = loss_normalizing_factor


class EncoderDecoderModel(_BaseTransformerModel):

  def __init__(self, module, input_vocabulary, output_vocabulary,
               optimizer_def, decode_fn=beam_search, feature_converter_cls=None,
               label_smoothing=0.0, z_loss=0.0, loss_normalizing_factor=None,
               default_decoder_params: Optional[DecoderParams] = None):
    del feature_converter_cls
    self.default_decoder_params = default_decoder_params or DecoderParams()
    super().__init__(module, input_vocabulary, output_vocabulary,
                     optimizer_def, decode_fn, label_smoothing, z_loss,
                     loss_normalizing_factor)


class DecoderOnlyModel(_BaseTransformerModel):

  def __init__(self, module, vocabulary, optimizer_def,
               decode_fn=temperature_sample,
               inputs_bidirectional_attention=False,
               feature_converter_cls=None, label_smoothing=0.0, z_loss=0.0,
               loss_normalizing_factor=None):
    del inputs_bidirectional_attention, feature_converter_cls
    super().__init__(module, vocabulary, vocabulary, optimizer_def, decode_fn,
                     label_smoothing, z_loss, loss_normalizing_factor)


def remove_prefix(sequences, lengths):
  raise NotImplementedError('decoding needs T5X itself')  # never bound by gin


def standard_logical_axis_rules(activation_partitioning_dims=1,
                                parameter_partitioning_dims=1,
                                additional_rules=None):
  """T5X's rules are not copied here; the stand-in returns what gin adds."""
  del activation_partitioning_dims, parameter_partitioning_dims
  return list(additional_rules or [])


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
  mixture_or_task_name: Any
  task_feature_lengths: Any
  split: str
  batch_size: int
  shuffle: bool
  seed: Optional[int]
  use_cached: bool = False
  pack: bool = False
  use_custom_packing_ops: bool = False
  module: Optional[str] = None
  use_memory_cache: bool = True
  trim_output_features: bool = True


def modules() -> dict[str, types.ModuleType]:
  """{'t5x': ..., 't5x.models': ..., ...}: the stand-ins as importable modules."""
  contents = {
      'adafactor': dict(Adafactor=Adafactor, FactorDim=FactorDim,
                        standard_logical_factor_rules=(
                            standard_logical_factor_rules),
                        factor_name_to_factordim=factor_name_to_factordim),
      'decoding': dict(temperature_sample=temperature_sample,
                       beam_search=beam_search),
      'models': dict(EncoderDecoderModel=EncoderDecoderModel,
                     DecoderOnlyModel=DecoderOnlyModel,
                     DecoderParams=DecoderParams, remove_prefix=remove_prefix),
      'partitioning': dict(
          standard_logical_axis_rules=standard_logical_axis_rules),
      'utils': dict(DatasetConfig=DatasetConfig),
  }
  package = types.ModuleType('t5x')
  package.__path__ = []  # a package: `from t5x import models` works
  built = {'t5x': package}
  for name, attributes in contents.items():
    module = types.ModuleType(f't5x.{name}')
    for attribute, value in attributes.items():
      setattr(module, attribute, value)
    setattr(package, name, module)
    built[module.__name__] = module
  return built

