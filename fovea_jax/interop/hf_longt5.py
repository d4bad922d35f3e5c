"""Hugging Face LongT5 / T5 weights <-> our EncoderDecoder param tree.

One name table (`name_map`) drives both directions: `import_hf_state_dict` (a
`safetensors` file of `transformers`' LongT5ForConditionalGeneration or
T5ForConditionalGeneration) and `export_hf_state_dict`. Torch `Linear` weights are
[out, in]; ours are [in, ...out] kernels split by heads, hence the transposes.

Warm-starting a fovea (or FMA, MASFormer) encoder from LongT5: the attention
scheme is only the computation between the same projections, so every LongT5
local weight lands unchanged; a transient-global checkpoint's extra pieces
(`global_input_layer_norm`, the side bias table) are only used when the target
scheme is transient-global and are otherwise reported as unused.
"""
import dataclasses
import json
import os
from typing import Callable, Dict, Iterator, Optional, Tuple

import flax
import gin
import numpy as np

from fovea_jax.layers import schemes
from fovea_jax.networks.network import Config

# Module name of the encoder self-attention in each transformers layout.
_ENCODER_ATTENTION = {'local': 'LocalSelfAttention',
                      'transient-global': 'TransientGlobalSelfAttention',
                      'dense': 'SelfAttention'}


@dataclasses.dataclass(frozen=True)
class NameMapping:
  """One tensor: HF name, our param path, and HF->ours / ours->HF transforms."""
  hf_name: str
  path: Tuple[str, ...]
  to_ours: Callable[[np.ndarray], np.ndarray]
  to_hf: Callable[[np.ndarray], np.ndarray]


def _same(x):
  return x


def _kernel(x):  # torch Linear [out, in] <-> our [in, out]
  return np.ascontiguousarray(x.T)


def _heads_in(heads, head_dim):  # q/k/v [H*D, d] <-> [d, H, D]
  return (lambda w: np.ascontiguousarray(w.T.reshape(-1, heads, head_dim)),
          lambda k: np.ascontiguousarray(k.reshape(k.shape[0], -1).T))


def _heads_out(heads, head_dim):  # o [d, H*D] <-> [H, D, d]
  return (lambda w: np.ascontiguousarray(w.T.reshape(heads, head_dim, -1)),
          lambda k: np.ascontiguousarray(k.reshape(-1, k.shape[-1]).T))


def name_map(config: Config, encoder_attention_type: str = 'local'
             ) -> Iterator[NameMapping]:
  """Every tensor of the HF checkpoint with its place in our param tree."""
  kv_heads = config.num_kv_heads or config.num_heads
  if kv_heads != config.num_heads:
    raise ValueError('Hugging Face LongT5/T5 have no grouped-query attention: '
                     'num_kv_heads must equal num_heads to map weights.')
  heads_in = _heads_in(config.num_heads, config.head_dim)
  heads_out = _heads_out(config.num_heads, config.head_dim)
  param = lambda hf, path, pair=(_same, _same): NameMapping(hf, path, *pair)
  kernel_pair = (_kernel, _kernel)

  def attention(hf_prefix, our_prefix):
    for proj, ours in (('q', 'query'), ('k', 'key'), ('v', 'value')):
      yield param(f'{hf_prefix}.{proj}.weight', our_prefix + (ours, 'kernel'),
                  heads_in)
    yield param(f'{hf_prefix}.o.weight', our_prefix + ('out', 'kernel'), heads_out)

  def mlp(hf_prefix, our_prefix):
    names = (['wi_0', 'wi_1'] if len(config.mlp_activations) > 1 else ['wi'])
    for name in names + ['wo']:
      yield param(f'{hf_prefix}.DenseReluDense.{name}.weight',
                  our_prefix + ('mlp', name, 'kernel'), kernel_pair)

  yield param('shared.weight', ('token_embedder', 'embedding'))
  if not config.logits_via_embedding:
    yield param('lm_head.weight', ('decoder', 'logits_dense', 'kernel'),
                kernel_pair)
  enc_attn = _ENCODER_ATTENTION[encoder_attention_type]
  for i in range(config.num_encoder_layers):
    hf, ours = f'encoder.block.{i}.layer', ('encoder', f'layers_{i}')
    yield from attention(f'{hf}.0.{enc_attn}', ours + ('attention',))
    yield param(f'{hf}.0.layer_norm.weight',
                ours + ('pre_attention_layer_norm', 'scale'))
    if encoder_attention_type == 'transient-global':
      yield param(f'{hf}.0.{enc_attn}.global_input_layer_norm.weight',
                  ours + ('attention', 'scheme', 'global_input_layer_norm',
                          'scale'))
    if i == 0:
      yield param(f'{hf}.0.{enc_attn}.relative_attention_bias.weight',
                  ours + ('relpos_bias', 'rel_embedding'))
      if encoder_attention_type == 'transient-global':
        yield param(f'{hf}.0.{enc_attn}.global_relative_attention_bias.weight',
                    ours + ('side_relpos_bias', 'rel_embedding'))
    yield from mlp(f'{hf}.1', ours)
    yield param(f'{hf}.1.layer_norm.weight', ours + ('pre_mlp_layer_norm', 'scale'))
  yield param('encoder.final_layer_norm.weight', ('encoder', 'encoder_norm', 'scale'))
  for i in range(config.num_decoder_layers):
    hf, ours = f'decoder.block.{i}.layer', ('decoder', f'layers_{i}')
    yield from attention(f'{hf}.0.SelfAttention', ours + ('self_attention',))
    yield param(f'{hf}.0.layer_norm.weight',
                ours + ('pre_self_attention_layer_norm', 'scale'))
    if i == 0:
      yield param(f'{hf}.0.SelfAttention.relative_attention_bias.weight',
                  ours + ('relpos_bias', 'rel_embedding'))
    yield from attention(f'{hf}.1.EncDecAttention',
                         ours + ('encoder_decoder_attention',))
    yield param(f'{hf}.1.layer_norm.weight',
                ours + ('pre_cross_attention_layer_norm', 'scale'))
    yield from mlp(f'{hf}.2', ours)
    yield param(f'{hf}.2.layer_norm.weight', ours + ('pre_mlp_layer_norm', 'scale'))
  yield param('decoder.final_layer_norm.weight', ('decoder', 'decoder_norm', 'scale'))


def config_from_hf(hf_config: dict, **overrides) -> Tuple[Config, str]:
  """Our Config (+ the HF encoder attention type) from a config.json dict.

  `overrides` replace fields, e.g. `attention=schemes.Fovea(block_len=128)` to
  warm-start a fovea encoder from LongT5.
  """
  model_type = hf_config.get('model_type')
  if model_type not in ('longt5', 't5'):
    raise ValueError(f"expected a LongT5 or T5 config.json (model_type 'longt5' "
                     f"or 't5'), got model_type={model_type!r}.")
  attention_type = (hf_config.get('encoder_attention_type', 'local')
                    if model_type == 'longt5' else 'dense')
  if attention_type == 'local':
    attention = schemes.Local(window=hf_config['local_radius'], block_len=None)
  elif attention_type == 'transient-global':
    attention = schemes.LongT5TransientGlobal(
        local_radius=hf_config['local_radius'],
        global_block_size=hf_config['global_block_size'])
  elif attention_type == 'dense':
    attention = schemes.Dense()
  else:
    raise ValueError(f'unknown LongT5 encoder_attention_type {attention_type!r}.')
  proj = hf_config.get('feed_forward_proj', 'relu')
  activations = {'gated-gelu': ('gelu', 'linear'), 'relu': ('relu',),
                 'gated-relu': ('relu', 'linear')}
  if proj not in activations:
    raise ValueError(f'unsupported feed_forward_proj {proj!r}; supported: '
                     f'{sorted(activations)}.')
  # transformers >= 5 records the v1.0 "tied and rescaled" head as
  # scale_decoder_outputs; older configs as tie_word_embeddings.
  scaled = hf_config.get('scale_decoder_outputs',
                         hf_config.get('tie_word_embeddings', True))
  fields = dict(
      vocab_size=hf_config['vocab_size'], emb_dim=hf_config['d_model'],
      num_heads=hf_config['num_heads'], head_dim=hf_config['d_kv'],
      mlp_dim=hf_config['d_ff'], num_encoder_layers=hf_config['num_layers'],
      num_decoder_layers=hf_config.get('num_decoder_layers') or
      hf_config['num_layers'],
      mlp_activations=activations[proj],
      dropout_rate=hf_config.get('dropout_rate', 0.1),
      logits_via_embedding=bool(scaled),
      relative_attention_num_buckets=hf_config.get(
          'relative_attention_num_buckets', 32),
      relative_attention_max_distance=hf_config.get(
          'relative_attention_max_distance', 128),
      layer_norm_epsilon=hf_config.get('layer_norm_epsilon', 1e-6),
      attention=attention)
  fields.update(overrides)
  return Config(**fields), attention_type


def _set(tree: dict, path, value):
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def import_hf_state_dict(state: Dict[str, np.ndarray], config: Config,
                         encoder_attention_type: str = 'local'):
  """Our params (nested dict of numpy) from HF tensors; returns (params, unused).

  Tensors the target scheme has no place for (TGlobal's extras when warm-starting
  another scheme) are returned in `unused`; missing tensors raise.
  """
  target_is_tglobal = isinstance(config.scheme, schemes.LongT5TransientGlobal)
  params, used, skipped = {}, set(), []
  for entry in name_map(config, encoder_attention_type):
    tglobal_only = ('global_input_layer_norm' in entry.path or
                    'side_relpos_bias' in entry.path)
    hf_name = entry.hf_name
    if hf_name == 'lm_head.weight' and hf_name not in state:
      hf_name = 'shared.weight'  # transformers >= 5 ties lm_head to shared
    if hf_name not in state:
      raise ValueError(f'tensor {hf_name!r} is missing from the checkpoint; is '
                       f'it a {encoder_attention_type} LongT5 with '
                       f'{config.num_encoder_layers}/{config.num_decoder_layers} '
                       'layers?')
    used.add(hf_name)
    if tglobal_only and not target_is_tglobal:
      skipped.append(hf_name)
      continue
    _set(params, entry.path, np.asarray(entry.to_ours(np.asarray(
        state[hf_name], np.float32))))
  if target_is_tglobal and encoder_attention_type != 'transient-global':
    raise ValueError('a transient-global encoder needs a transient-global '
                     'checkpoint (its global layer norms and side bias table).')
  tied_copies = {'encoder.embed_tokens.weight', 'decoder.embed_tokens.weight'}
  return params, sorted(set(state) - used - tied_copies) + skipped


def encoder_attention_type_of(config: Config) -> str:
  """The HF layout our encoder exports to: TGlobal and dense map to themselves;
  every other scheme (fovea, FMA, MASFormer, local) to LongT5 local, whose
  weights it shares (the Fovea paper warm-starts from LongT5)."""
  scheme = config.scheme
  if isinstance(scheme, schemes.LongT5TransientGlobal):
    return 'transient-global'
  return 'dense' if isinstance(scheme, schemes.Dense) else 'local'


def transformers_attention_of(config: Config) -> Optional[str]:
  """The HF encoder attention type that computes exactly our encoder's
  attention ('local', 'transient-global', 'dense'), or None for a scheme
  transformers does not have (fovea, FMA, MASFormer): their weights load into
  LongT5 local, but transformers would then compute other attention."""
  scheme = config.scheme
  if isinstance(scheme, schemes.LongT5TransientGlobal):
    return 'transient-global'
  if isinstance(scheme, schemes.Dense):
    return 'dense'
  # LongT5 local is a radius around each token; blocked local is ours only.
  if isinstance(scheme, schemes.Local) and scheme.block_len is None:
    return 'local'
  return None


def export_hf_state_dict(params, config: Config,
                         encoder_attention_type: Optional[str] = None):
  """HF-named numpy tensors for the parts of our tree that exist in LongT5/T5.

  Our params with no HF counterpart (FMA's learned filters) are left out.
  """
  encoder_attention_type = (encoder_attention_type or
                            encoder_attention_type_of(config))
  return {entry.hf_name: entry.to_hf(np.asarray(_get(params, entry.path),
                                                np.float32))
          for entry in name_map(config, encoder_attention_type)}


def hf_config_dict(config: Config,
                   encoder_attention_type: Optional[str] = None) -> dict:
  """The config.json that `transformers` needs to load an exported checkpoint."""
  encoder_attention_type = (encoder_attention_type or
                            encoder_attention_type_of(config))
  gated = len(config.mlp_activations) > 1
  act = {'gelu': 'gelu', 'relu': 'relu'}[config.mlp_activations[0]]
  result = dict(
      model_type='t5' if encoder_attention_type == 'dense' else 'longt5',
      architectures=['T5ForConditionalGeneration'
                     if encoder_attention_type == 'dense'
                     else 'LongT5ForConditionalGeneration'],
      vocab_size=config.vocab_size, d_model=config.emb_dim, d_kv=config.head_dim,
      d_ff=config.mlp_dim, num_layers=config.num_encoder_layers,
      num_decoder_layers=config.num_decoder_layers, num_heads=config.num_heads,
      relative_attention_num_buckets=config.relative_attention_num_buckets,
      relative_attention_max_distance=config.relative_attention_max_distance,
      dropout_rate=config.dropout_rate,
      layer_norm_epsilon=config.layer_norm_epsilon,
      feed_forward_proj=f'gated-{act}' if gated else act,
      tie_word_embeddings=config.logits_via_embedding,
      scale_decoder_outputs=config.logits_via_embedding,
      is_encoder_decoder=True, pad_token_id=0, eos_token_id=1,
      decoder_start_token_id=0)
  scheme = config.scheme
  if encoder_attention_type != 'dense':
    longt5 = schemes.LongT5TransientGlobal()  # LongT5's own settings
    # A sliding window's radius is its `window`; schemes LongT5 does not have
    # (fovea, FMA, ...) export LongT5's settings with their weights.
    radius = (scheme.window if isinstance(scheme, schemes.Local) and
              scheme.window is not None
              else getattr(scheme, 'local_radius', longt5.local_radius))
    result.update(encoder_attention_type=encoder_attention_type,
                  local_radius=radius,
                  global_block_size=getattr(scheme, 'global_block_size',
                                            longt5.global_block_size))
  return result


def save_hf_checkpoint(params, config: Config, directory: str):
  """Writes model.safetensors + config.json that `from_pretrained` loads."""
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  os.makedirs(directory, exist_ok=True)
  save_file(export_hf_state_dict(params, config),
            os.path.join(directory, 'model.safetensors'),
            metadata={'format': 'pt'})
  with open(os.path.join(directory, 'config.json'), 'w') as f:
    json.dump(hf_config_dict(config), f, indent=2)


@gin.configurable
@dataclasses.dataclass(frozen=True)
class HfNameMap:
  """`flat params ('/'-joined names) -> HF tensors`, for export's hf_name_map_fn.

  gin: `export_lib.export.hf_name_map_fn = @hf_longt5.HfNameMap()` with
  `hf_longt5.HfNameMap.config = @network.Config()`.
  """
  config: Config
  separator: str = '/'

  def __call__(self, flat):
    params = flax.traverse_util.unflatten_dict(
        {tuple(name.split(self.separator)): value for name, value in flat.items()})
    return export_hf_state_dict(params, self.config)


def load_hf_checkpoint(directory: str, **overrides):
  """(config, params, unused) from a `save_pretrained` directory (safetensors)."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  with open(os.path.join(directory, 'config.json')) as f:
    hf_config = json.load(f)
  config, attention_type = config_from_hf(hf_config, **overrides)
  path = os.path.join(directory, 'model.safetensors')
  if not os.path.exists(path):
    raise ValueError(f'{path} not found: save the model with '
                     'save_pretrained(..., safe_serialization=True).')
  params, unused = import_hf_state_dict(load_file(path), config, attention_type)
  return config, params, unused
