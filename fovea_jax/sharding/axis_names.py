"""Logical axis names: the one place they are spelled.

Every parameter is created with these names (`param_with_axes(..., axes=(VOCAB,
EMBED))`) and every block-boundary activation is constrained with them; one rules
table (`STANDARD_RULES`) maps them onto the `(data, model)` mesh. Names follow
T5X so that its rules and checkpoints line up with ours.
"""

# Mesh axes.
DATA = 'data'
MODEL = 'model'
# Splits one sequence over devices (context parallelism); on the mesh only
# when `Partitioner(num_sequence_partitions > 1)`.
SEQUENCE = 'sequence'

# Logical axes of parameters and activations.
BATCH = 'batch'
LENGTH = 'length'
EMBED = 'embed'
VOCAB = 'vocab'
MLP = 'mlp'
HEADS = 'heads'
KV = 'kv'
JOINED_KV = 'joined_kv'
RELPOS_BUCKETS = 'relpos_buckets'
LAYERS = 'layers'
CACHE_BATCH = 'cache_batch'
CACHE_HEADS = 'cache_heads'
CACHE_KV = 'cache_kv'
CACHE_LENGTH = 'cache_length'
# Learned FMA downsampling filters: [window, head_dim, rank].
DOWNSAMPLE_WINDOW = 'downsample_window'
DOWNSAMPLE_RANK = 'downsample_rank'

# Prepended to the rules on a mesh with a sequence axis: activations (and so
# attention's queries, keys and values) are split along their length.
SEQUENCE_RULES = ((LENGTH, SEQUENCE),)

# T5X's standard rules as data: logical name -> mesh axis (None = replicated).
# Names not listed here are replicated.
STANDARD_RULES = (
    (BATCH, DATA),
    (VOCAB, MODEL),
    (MLP, MODEL),
    (HEADS, MODEL),
    (JOINED_KV, MODEL),
    (KV, None),
    (EMBED, None),
    (LENGTH, None),
    (RELPOS_BUCKETS, None),
    (LAYERS, None),
    (CACHE_BATCH, DATA),
    (CACHE_HEADS, MODEL),
    (CACHE_KV, None),
    (CACHE_LENGTH, None),
    (DOWNSAMPLE_WINDOW, None),
    (DOWNSAMPLE_RANK, None),
)
