"""fovea_jax's logical axis names in the form T5X's partitioner and Adafactor take.

T5X's `standard_logical_axis_rules()` already maps the T5 names (batch, vocab,
embed, mlp, heads, kv, joined_kv, relpos_buckets, length, layers); its
Adafactor raises a KeyError on any param axis missing from its factor rules.
"""
from fovea_jax.sharding import axis_names

# How Adafactor may factor our params' extra axes: FMA's filters
# [downsample_window, kv, downsample_rank] are small, so keep them whole.
_EXTRA_FACTOR_DIMS = {
    axis_names.DOWNSAMPLE_WINDOW: 'none',
    axis_names.DOWNSAMPLE_RANK: 'none',
}
# Names T5X's standard rules already cover (its values agree with ours).
_T5X_STANDARD_NAMES = frozenset({
    axis_names.BATCH, axis_names.VOCAB, axis_names.EMBED, axis_names.MLP,
    axis_names.HEADS, axis_names.KV, axis_names.JOINED_KV,
    axis_names.RELPOS_BUCKETS, axis_names.LENGTH, axis_names.LAYERS})


def additional_logical_axis_rules() -> list[tuple[str, str | None]]:
  """Our rules for names T5X does not know, for
  `partitioning.standard_logical_axis_rules.additional_rules`."""
  return [(name, mesh_axis) for name, mesh_axis in axis_names.STANDARD_RULES
          if name not in _T5X_STANDARD_NAMES]


def logical_factor_rules():
  """T5X's standard Adafactor factor rules plus our extra param axes."""
  from t5x import adafactor  # pylint: disable=g-import-not-at-top
  rules = dict(adafactor.standard_logical_factor_rules())
  rules.update({name: adafactor.factor_name_to_factordim(dim)
                for name, dim in _EXTRA_FACTOR_DIMS.items()})
  return rules
