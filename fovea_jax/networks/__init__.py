"""Networks: the LongT5-style encoder-decoder and the decoder-only LM.

`Config` (gin: `config.Config`) holds the dimensions and the attention scheme
(a `fovea_jax.layers.schemes` module).
"""
from fovea_jax.networks.network import Config
from fovea_jax.networks.decoder_only import DecoderOnly
from fovea_jax.networks.encoder_decoder import EncoderDecoder

__all__ = ['Config', 'DecoderOnly', 'EncoderDecoder']
