"""The DAMSM text side against AttnGAN's own code (tests/fixtures/make_damsm_text_golden.py)."""

import pathlib
import pickle

import numpy as np
import pytest

from stackgan_jax.metrics import damsm_captions, damsm_text
from stackgan_jax.untrusted import RefusedFileError, torch_pickle

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
CAPTIONS = FIXTURES / "damsm_captions.pickle"
TEXT_ENCODER = FIXTURES / "damsm_text_encoder.pth"
WORDS_NUM = 25


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(FIXTURES / "damsm_golden.npz"))


@pytest.fixture(scope="module")
def vocabulary():
    return damsm_captions.load_captions(CAPTIONS)


def kept_captions(lines, wordtoix):
    """Each line's indices, for the lines AttnGAN's `load_captions` keeps (those with a token)."""
    indices = [damsm_captions.caption_indices(line, wordtoix) for line in lines]
    return [caption for caption in indices if caption][:10]


def test_tokenisation_gives_the_pickles_test_captions(golden, vocabulary):
    ours = [
        indices
        for lines in golden["test_lines"]
        for indices in kept_captions(list(lines), vocabulary.wordtoix)
    ]
    assert ours == vocabulary.test_captions
    assert vocabulary.num_words == len(vocabulary.wordtoix) == 242


def test_tokenise_rules():
    assert damsm_captions.tokenize("A Café's wing_bar, 2nd!  naïve\ufffd\ufffdbird") == [
        "a",
        "caf",
        "s",
        "wing_bar",
        "2nd",
        "nave",
        "bird",
    ]
    assert damsm_captions.tokenize("... !! é") == []
    assert damsm_captions.caption_indices("a B c", {"<end>": 0, "a": 1, "c": 2}) == [1, 2]


def test_pad_caption_pads_short_and_keeps_an_ordered_subset_of_long_captions():
    rng = np.random.default_rng(0)
    padded, length = damsm_captions.pad_caption([5, 6, 7], 5, rng)
    assert length == 3 and padded.tolist() == [5, 6, 7, 0, 0]
    long = list(range(1, 41))
    subsets = set()
    for _ in range(20):
        padded, length = damsm_captions.pad_caption(long, WORDS_NUM, rng)
        assert length == WORDS_NUM and len(set(padded)) == WORDS_NUM
        assert list(padded) == sorted(padded)  # the words keep their order
        subsets.add(tuple(padded))
    assert len(subsets) > 1
    with pytest.raises(ValueError, match="no word of the DAMSM vocabulary"):
        damsm_captions.pad_caption([], WORDS_NUM, rng)


def padded_test_captions(vocabulary):
    rows = [
        damsm_captions.pad_caption(c, WORDS_NUM, np.random.default_rng(0))
        for c in vocabulary.test_captions
    ]
    return np.stack([r[0] for r in rows]), np.array([r[1] for r in rows])


def test_sentence_and_word_embeddings_match_attngans_rnn_encoder(golden, vocabulary):
    encoder = damsm_text.load_text_encoder(TEXT_ENCODER)
    assert encoder.module.num_words == vocabulary.num_words
    # None is cut at random (`get_caption` keeps a random WORDS_NUM words of longer captions).
    assert max(len(c) for c in vocabulary.test_captions) == WORDS_NUM
    indices, lengths = padded_test_captions(vocabulary)
    words, sentences = encoder.encode(indices, lengths)
    scale = np.abs(golden["sentences"]).max()
    np.testing.assert_allclose(sentences, golden["sentences"], rtol=1e-4, atol=1e-5 * scale)
    rows = golden["word_rows"]
    want = golden["words"].transpose(0, 2, 1)  # [B, 256, T] -> [B, T, 256]
    np.testing.assert_allclose(words[rows, : want.shape[1]], want, rtol=1e-4, atol=1e-5 * scale)
    # Past each caption's length the outputs are zero, as pad_packed_sequence pads them.
    past = np.arange(WORDS_NUM)[None, :] >= lengths[:, None]
    assert np.all(words[past] == 0)
    assert lengths.min() == 1 and lengths.max() == WORDS_NUM


def test_a_state_dict_of_another_network_is_refused_naming_the_file(tmp_path):
    state = torch_pickle.load_state_dict(TEXT_ENCODER)
    del state["rnn.bias_hh_l0_reverse"]
    with pytest.raises(RefusedFileError, match=r"other\.pth is not an AttnGAN RNN_ENCODER"):
        damsm_text.text_encoder_from_state_dict(state, "other.pth")
    state = torch_pickle.load_state_dict(TEXT_ENCODER)
    state["rnn.weight_hh_l0"] = state["rnn.weight_hh_l0"][:, :64]
    with pytest.raises(RefusedFileError, match=r"rnn\.weight_ih_l0 is float32\[512, 300\]"):
        damsm_text.text_encoder_from_state_dict(state, "other.pth")


class Exploit:
    def __reduce__(self):
        return (print, ("ran",))


@pytest.mark.parametrize(
    "contents, message",
    [
        (Exploit(), r"bad\.pickle: refusing to load global __builtin__\.print"),
        ([[[1]], [[2]], {0: "<end>"}], r"not AttnGAN's captions\.pickle"),
        ([[[1]], [["a"]], {0: "<end>"}, {"<end>": 0}], "not lists of word indices"),
        ([[[1]], [[1]], {0: "<end>", 1: "b"}, {"<end>": 0, "a": 1}], "disagree"),
    ],
)
def test_a_wrong_captions_pickle_is_refused_naming_the_file(tmp_path, capsys, contents, message):
    path = tmp_path / "bad.pickle"
    path.write_bytes(pickle.dumps(contents, protocol=2))
    with pytest.raises(RefusedFileError, match=message):
        damsm_captions.load_captions(path)
    assert "ran" not in capsys.readouterr().out
