"""The shared encoder interface: registry, shape buckets, no recompilation, the embed CLI."""

import subprocess
import sys

import jax
import numpy as np
import pytest

from stackgan_jax.text import ENCODERS, char_cnn_rnn, encoder, get_encoder
from stackgan_jax.weights import MissingWeightsError


def test_registry_names_and_errors(tmp_path):
    assert sorted(ENCODERS) == ["char_cnn_rnn", "minilm"]
    with pytest.raises(ValueError, match="char_cnn_rnn.*minilm"):
        get_encoder("clip")
    with pytest.raises(MissingWeightsError):
        get_encoder("minilm", weights=str(tmp_path))
    with pytest.raises(MissingWeightsError):
        get_encoder("char_cnn_rnn")


def test_buckets():
    assert encoder.power_of_two_buckets(256) == (1, 2, 4, 8, 16, 32, 64, 128, 256)
    assert encoder.power_of_two_buckets(100) == (1, 2, 4, 8, 16, 32, 64, 100)
    assert encoder.power_of_two_buckets(1) == (1,)
    assert [encoder.bucket_for(n, (16, 24, 32)) for n in (1, 16, 17, 25, 32)] == [16] * 2 + [
        24,
        32,
        32,
    ]
    with pytest.raises(ValueError):
        encoder.bucket_for(33, (16, 24, 32))
    chunks = list(encoder.length_sorted_chunks([3, 9, 1, 9, 5], chunk_size=2))
    assert [c.tolist() for c in chunks] == [[1, 3], [4, 0], [2]]
    batch = encoder.pad_batch([np.array([5, 6, 7]), np.array([8])], (1, 4), (4, 8), pad_id=-1)
    assert batch.tolist() == [[5, 6, 7, -1], [8, -1, -1, -1], [-1] * 4, [-1] * 4]


@pytest.fixture(scope="module")
def small_char_encoder(tmp_path_factory):
    model = char_cnn_rnn.CharCnnRnn(conv_features=(8, 8, 8), embedding_dim=4)
    char_ids = np.zeros((1, char_cnn_rnn.DOC_LENGTH), np.int32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), char_ids)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: rng.normal(0, 0.3, s.shape).astype(np.float32), shapes)
    path = tmp_path_factory.mktemp("weights") / "small.npz"
    char_cnn_rnn.save_params(path, params)
    return char_cnn_rnn.load_char_cnn_rnn(str(path), max_batch=4)


def captions(count, words):
    return [" ".join(f"bird{i}" for i in range(words + row % 3)) for row in range(count)]


def test_no_recompilation_after_warmup_char_cnn_rnn(small_char_encoder):
    small_char_encoder.warmup()
    compiled = small_char_encoder.compiled_shapes()
    assert compiled >= 3  # batch buckets 1, 2, 4 at the one document length
    for count in (1, 2, 3, 4, 5, 7, 9):
        assert small_char_encoder.encode(captions(count, words=count)).shape == (count, 4)
    assert small_char_encoder.compiled_shapes() == compiled


def test_no_recompilation_after_warmup_minilm():
    minilm = get_encoder("minilm", max_batch=4)
    minilm.warmup(batch_sizes=[1, 3], lengths=[12])  # shapes (1, 16) and (4, 16)
    compiled = minilm.compiled_shapes()
    assert compiled == 2
    for count in (1, 3, 4, 5, 8, 11):  # chunks of 4 rows, then 1 or 3 left over
        for words in (1, 3, 5):  # at most 16 tokens
            assert minilm.encode(captions(count, words)).shape == (count, 384)
    assert minilm.compiled_shapes() == compiled
    minilm.encode(captions(1, words=12))  # ~26 tokens in a 1-row batch: a new shape
    assert minilm.compiled_shapes() == compiled + 1


def test_rejects_a_single_string(small_char_encoder):
    with pytest.raises(TypeError, match="list of captions"):
        small_char_encoder.encode("a bird")


def test_embed_cli(tmp_path):
    lines = ["a small bird with a red head", "", "A YELLOW FLOWER", "bird 🐦 çà"]
    (tmp_path / "captions.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "stackgan_jax.text.embed",
            "--encoder=minilm",
            f"--input={tmp_path / 'captions.txt'}",
            f"--output={tmp_path / 'embeddings.npy'}",
            "--batch_size=4",
        ],
        check=True,
    )
    embeddings = np.load(tmp_path / "embeddings.npy")
    assert embeddings.shape == (4, 384) and embeddings.dtype == np.float32
    expected = get_encoder("minilm", max_batch=4).encode(lines)
    np.testing.assert_allclose(embeddings, expected, atol=1e-6)
