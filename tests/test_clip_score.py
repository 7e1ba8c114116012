"""GALIP's CLIP score: tokenizer, preprocessing, encoders and metric against OpenAI's/GALIP's code.

The references come from tests/fixtures/make_clip_golden.py: `clip.tokenize` with the real BPE
vocabulary, and a seeded tiny random CLIP saved as OpenAI's TorchScript archive and as a Hugging
Face directory, scored by GALIP's `calc_clip_sim` through `clip.load` and transformers.
"""

import json
import pathlib
import zipfile

import numpy as np
import pytest
import safetensors.numpy
from conftest import eval_config

from stackgan_jax.evaluation import clip_score as clip_score_metric
from stackgan_jax.evaluation import evaluator
from stackgan_jax.metrics import clip_score, clip_tokenizer, clip_weights
from stackgan_jax.untrusted import RefusedFileError, torch_pickle
from stackgan_jax.weights import MissingWeightsError

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "clip"
REAL_VOCAB = FIXTURES / "bpe_simple_vocab_16e6.txt.gz"
TINY_VOCAB = FIXTURES / "tiny_bpe_vocab.txt.gz"
OPENAI_PT = FIXTURES / "tiny_clip.pt"
HF_DIR = FIXTURES / "tiny_clip_hf"
# (weights, vocabulary, prefix of the reference arrays in golden.npz)
LAYOUTS = {"openai": (OPENAI_PT, TINY_VOCAB), "hf": (HF_DIR, None)}


@pytest.fixture(scope="module")
def golden():
    with np.load(FIXTURES / "golden.npz") as arrays:
        golden = dict(arrays)
    golden["captions"] = json.loads((FIXTURES / "golden_captions.json").read_text("utf-8"))
    return golden


@pytest.fixture(scope="module", params=list(LAYOUTS))
def layout(request):
    weights, vocab = LAYOUTS[request.param]
    return request.param, clip_weights.load_clip(str(weights), vocab and str(vocab))


def _relative_error(actual, expected):
    return np.abs(actual - expected).max() / np.abs(expected).max()


def test_tokens_match_clip_tokenize_with_the_real_vocabulary():
    golden = json.loads((FIXTURES / "tokens_golden.json").read_text("utf-8"))
    captions = golden["captions"]
    # The cases that matter: punctuation, capitals, curly quotes, non-ASCII, HTML entities,
    # full-width letters, an over-long caption.
    text = "".join(captions)
    assert any(c.isupper() for c in text) and "’" in text and "&amp;" in text and "ﬁ" in text
    assert any(ord(c) > 0x4E00 for c in text) and any(ord(c) > 0x1F000 for c in text)
    tokenizer = clip_tokenizer.load_tokenizer(REAL_VOCAB)
    tokens = tokenizer(captions)
    assert tokens.shape == (len(captions), 77) and tokens.dtype == np.int32
    for row, (caption, expected) in enumerate(zip(captions, golden["tokens"], strict=True)):
        assert tokens[row, : len(expected)].tolist() == expected, caption
        assert not tokens[row, len(expected) :].any(), caption
    longest = max(range(len(captions)), key=lambda i: len(captions[i]))
    assert len(golden["tokens"][longest]) == 77 and tokens[longest, -1] == tokenizer.end == 49407
    assert tokenizer.start == 49406


def test_the_ftfy_steps_matter_for_the_golden_captions():
    # Without them, curly quotes, ligatures, full-width letters and entities tokenize otherwise.
    assert (
        clip_tokenizer.clean("The Bird’s “ﬁne” ＢＩＲＤ &amp;#8217;")
        == "the bird's \"fine\" bird '"
    )
    # What is documented as left out: ftfy would repair this mojibake to "café".
    assert clip_tokenizer.clean("cafÃ©") == "cafã©"


def test_a_hugging_face_tokenizer_json_gives_the_same_tokens(golden):
    from_json = clip_tokenizer.load_tokenizer(HF_DIR / "tokenizer.json")
    from_gzip = clip_tokenizer.load_tokenizer(TINY_VOCAB)
    np.testing.assert_array_equal(from_json(golden["captions"]), golden["tokens"])
    np.testing.assert_array_equal(from_gzip(golden["captions"]), golden["tokens"])
    assert (golden["tokens"] > 0).sum(axis=1).max() == 77  # the long caption was cut


def test_preprocessing_is_galips_transf_to_clip_input(golden):
    for size in (64, 256):
        np.testing.assert_array_equal(
            clip_score.nearest_indices(size, 224), golden[f"nearest_{size}"]
        )
    images = golden["images"].astype(np.float32)
    assert np.isnan(images).any() and np.isinf(images).any()
    assert (np.abs(images[np.isfinite(images)]) > 1).any()
    got = np.asarray(clip_score.galip_clip_input(images))
    assert got.shape == (len(images), 224, 224, 3)
    np.testing.assert_allclose(got[0, ::7, ::7], golden["preprocessed_0"], atol=1e-6)
    assert np.isfinite(got).all()


def test_sizes_are_read_off_the_weights(layout):
    name, model = layout
    config = model.config
    assert (config.image_size, config.patch_size, config.embed_dim) == (224, 16, 64)
    assert (config.vocab_size, config.context_length) == (614, 77)
    assert config.vision.layers == config.text.layers == 2
    # OpenAI's layout implies 64-wide heads (build_model); Hugging Face's config.json says 2.
    heads = 1 if name == "openai" else 2
    assert config.vision.heads == config.text.heads == heads


def test_features_and_score_match_galips_calc_clip_sim(layout, golden):
    name, model = layout
    images = golden["images"].astype(np.float32)
    image_features, text_features = clip_score.features(model, images, golden["captions"], 3)
    assert _relative_error(image_features, golden[f"{name}_image_features"]) < 1e-4
    assert _relative_error(text_features, golden[f"{name}_text_features"]) < 1e-4
    score = clip_score.clip_score(model, images, golden["captions"], batch_size=3)
    assert score == pytest.approx(float(golden[f"{name}_score"]), rel=1e-3, abs=1e-6)
    # Image i is paired with caption i: the score with the captions rotated is the mean cosine
    # of the reference features rotated likewise.
    shuffled = golden["captions"][1:] + golden["captions"][:1]
    reference = clip_score.cosine_similarities(
        golden[f"{name}_image_features"], np.roll(golden[f"{name}_text_features"], -1, axis=0)
    ).mean()
    assert clip_score.clip_score(model, images, shuffled) == pytest.approx(reference, rel=1e-3)


def test_the_metric_scores_the_last_stage_against_the_context_captions(golden):
    captions = golden["captions"]
    config = eval_config(
        ["clip_score"], clip_weights=str(OPENAI_PT), clip_vocab=str(TINY_VOCAB), batch_size=2
    )
    context = evaluator.Context(None, captions, "birds", 2, 0, "unused")
    metric = clip_score_metric.make_metric(config, context)
    images = golden["images"].astype(np.float32)
    # Stage-I images are not scored at Stage-II; the 256-px ones are (resized as GALIP does).
    stage2 = np.repeat(np.repeat(images, 4, axis=1), 4, axis=2)
    report = metric({"stage1": np.zeros_like(images), "stage2": stage2})
    model = clip_weights.load_clip(str(OPENAI_PT), str(TINY_VOCAB))
    expected = clip_score.clip_score(model, stage2, captions)
    assert report["clip_score"] == pytest.approx(expected, rel=1e-5)
    assert report["stage"] == "stage2" and report["samples"] == len(captions)
    assert report["protocol"] == "galip" and report["weights"] == str(OPENAI_PT)
    assert (
        evaluator.scalars({"clip_score": report})["eval/clip_score/clip_score"]
        == (report["clip_score"])
    )


def test_missing_weights_stop_before_anything_with_the_file_and_flag(tmp_path, monkeypatch):
    context = evaluator.Context(None, ["a bird"], "birds", 1, 0, "unused")
    missing = tmp_path / "ViT-B-32.pt"
    config = eval_config(["clip_score"], clip_weights=str(missing))
    with pytest.raises(MissingWeightsError, match=rf"{missing}.*ViT-B-32\.pt.*--clip_weights"):
        clip_score_metric.make_metric(config, context)
    empty_directory = eval_config(["clip_score"], clip_weights=str(tmp_path))
    with pytest.raises(MissingWeightsError, match=r"model\.safetensors.*clip-vit-base-patch32"):
        clip_score_metric.make_metric(empty_directory, context)
    # OpenAI's .pt needs the BPE vocabulary: none beside it, none installed.
    monkeypatch.setattr(clip_weights, "installed_vocab", lambda: None)
    weights = tmp_path / "ViT-B-32.pt"
    weights.write_bytes(OPENAI_PT.read_bytes())
    vocab = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    with pytest.raises(MissingWeightsError, match=rf"{vocab}.*openai/CLIP.*--clip_vocab"):
        clip_score_metric.make_metric(
            eval_config(["clip_score"], clip_weights=str(weights)), context
        )
    # Beside the .pt, it is found.
    vocab.write_bytes(TINY_VOCAB.read_bytes())
    assert clip_weights.load_clip(str(weights)).vocab == str(vocab)


def test_a_file_that_is_not_a_clip_is_refused_naming_it(tmp_path):
    text = tmp_path / "ViT-B-32.pt"
    text.write_text("not a checkpoint")
    with pytest.raises(RefusedFileError, match=str(text)):
        clip_weights.load_clip(str(text), str(TINY_VOCAB))
    # A TorchScript archive of another network: one tensor missing.
    tensors = torch_pickle.script_state_dict(torch_pickle.read_torchscript(OPENAI_PT))
    del tensors["transformer.resblocks.1.mlp.c_fc.bias"]
    with pytest.raises(clip_weights.ClipWeightsError, match="no tensor transformer.resblocks.1"):
        clip_weights.flax_params(tensors, hf=False)
    # A Hugging Face directory whose safetensors are not, or hold extra tensors.
    directory = tmp_path / "hf"
    directory.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (directory / name).write_bytes((HF_DIR / name).read_bytes())
    (directory / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(clip_weights.ClipWeightsError, match=f"{directory}: model.safetensors"):
        clip_weights.load_clip(str(directory))
    extra = safetensors.numpy.load_file(str(HF_DIR / "model.safetensors"))
    extra["text_model.pooler.weight"] = np.zeros(3, np.float16)
    safetensors.numpy.save_file(extra, str(directory / "model.safetensors"))
    with pytest.raises(clip_weights.ClipWeightsError, match="not part of a ViT CLIP.*pooler"):
        clip_weights.load_clip(str(directory))


def test_a_vocabulary_larger_than_the_model_is_refused():
    with pytest.raises(clip_weights.ClipWeightsError, match="49408 tokens, more than the 614"):
        clip_weights.load_clip(str(OPENAI_PT), str(REAL_VOCAB))
    with pytest.raises(ValueError, match="not a gzip-compressed CLIP BPE vocabulary"):
        clip_tokenizer.load_tokenizer(OPENAI_PT)


def test_the_openai_fixture_is_laid_out_as_openais_archives():
    # What clip.load relies on: a TorchScript zip with code, float16 weights, and the sizes as
    # tensors at the root.
    assert torch_pickle.is_torchscript(OPENAI_PT)
    tensors = torch_pickle.script_state_dict(torch_pickle.read_torchscript(OPENAI_PT))
    assert tensors["visual.conv1.weight"].dtype == np.float16
    assert int(tensors["input_resolution"]) == 224 and int(tensors["context_length"]) == 77
    assert "visual.proj" in tensors and "transformer.resblocks.0.attn.in_proj_weight" in tensors
    with zipfile.ZipFile(OPENAI_PT) as archive:
        assert any("/code/" in name for name in archive.namelist())
