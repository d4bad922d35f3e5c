"""Networks: the LongT5-style encoder-decoder and the decoder-only LM.

`Config` (gin: `network.Config`) holds the dimensions and the attention scheme;
`schemes` is the registry of attention schemes by name.
"""
from fovea_jax.networks import schemes
from fovea_jax.networks.config import Config
from fovea_jax.networks.decoder_only import DecoderOnly
from fovea_jax.networks.encoder_decoder import EncoderDecoder

__all__ = ['Config', 'DecoderOnly', 'EncoderDecoder', 'schemes']
