"""Text encoders: captions -> float32[N, dim] vectors that condition the generator.

encoder = get_encoder("minilm")             # or get_encoder("char_cnn_rnn", weights=npz)
vectors = encoder.encode(["a small red bird with a short beak"])  # float32[1, encoder.dim]
"""

from stackgan_jax.text.encoder import BucketedEncoder, TextEncoder
from stackgan_jax.text.registry import ENCODERS, get_encoder

__all__ = ["ENCODERS", "BucketedEncoder", "TextEncoder", "get_encoder"]
