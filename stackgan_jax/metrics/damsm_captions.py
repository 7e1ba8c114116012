r"""AttnGAN's caption vocabulary (`captions.pickle`) and its tokenisation, for the DAMSM encoders.

AttnGAN's `TextDataset` (code/datasets.py in taoxugit/AttnGAN) turns a caption into word indices
in three steps, all reproduced here:

1. `load_captions` (lines 145-177): replace U+FFFD U+FFFD by a space, lower-case, split with
   nltk's `RegexpTokenizer(r'\w+')` (its `findall` of `\w+` under `re.UNICODE`), drop each
   token's non-ASCII characters and then empty tokens, keep the first `CAPTIONS_PER_IMAGE`
   captions that have a token;
2. `build_dictionary` (lines 179-217): index 0 is `<end>` (padding), every word of the train and
   test captions has an index; words missing from the dictionary are dropped (as `gen_example`
   in code/main.py does for new sentences);
3. `get_caption` (lines 269-287): pad with 0 to `WORDS_NUM` words, or, for a longer caption,
   keep a random `WORDS_NUM` of its words in their order (`np.random.shuffle` then `np.sort`).

`load_captions` (lines 219-249) pickles `[train_captions, test_captions, ixtoword, wordtoix]`
with protocol 2, from Python 2 in the release: lists of int lists and two dicts, so the file
names no global at all, and `untrusted.numpy_pickle` reads it as it is (any global is refused).
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import re
from typing import Any

import numpy as np

from stackgan_jax.untrusted import numpy_pickle
from stackgan_jax.untrusted.errors import RefusedFileError

END = "<end>"
# nltk's RegexpTokenizer compiles its pattern with UNICODE | MULTILINE | DOTALL and `tokenize` is
# the pattern's `findall`; only UNICODE matters for `\w+` (Python 3's default for str).
_TOKEN = re.compile(r"\w+", re.UNICODE | re.MULTILINE | re.DOTALL)


@dataclasses.dataclass(frozen=True)
class CaptionsFile:
    """The contents of AttnGAN's `captions.pickle`.

    Attributes:
        path: the file it was read from.
        train_captions: word indices of each train caption (image-major, 10 per CUB image).
        test_captions: the same for the test split.
        ixtoword: index -> word; 0 is `<end>`.
        wordtoix: word -> index.
    """

    path: str
    train_captions: list[list[int]]
    test_captions: list[list[int]]
    ixtoword: dict[int, str]
    wordtoix: dict[str, int]

    @property
    def num_words(self) -> int:
        """The vocabulary size, `n_words = len(ixtoword)`, the text encoder's `ntoken`."""
        return len(self.ixtoword)


def tokenize(caption: str) -> list[str]:
    """A caption's tokens as AttnGAN's `load_captions` makes them (see the module docstring)."""
    tokens = _TOKEN.findall(caption.replace("\ufffd\ufffd", " ").lower())
    ascii_tokens = (token.encode("ascii", "ignore").decode("ascii") for token in tokens)
    return [token for token in ascii_tokens if token]


def caption_indices(caption: str, wordtoix: dict[str, int]) -> list[int]:
    """The caption's word indices; words outside the vocabulary are dropped, as AttnGAN does."""
    return [wordtoix[token] for token in tokenize(caption) if token in wordtoix]


def pad_caption(
    indices: list[int], words_num: int, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """AttnGAN's `get_caption`: the indices padded with 0 (`<end>`), or a random ordered subset.

    Args:
        indices: a caption's word indices (`caption_indices`).
        words_num: `cfg.TEXT.WORDS_NUM` (AttnGAN/DM-GAN evaluate birds with 25, COCO with 20).
        rng: draws the kept words of a caption longer than `words_num`.

    Returns:
        (int32[words_num], length): the padded indices and min(len(indices), words_num).

    Raises:
        ValueError: an empty caption, which the reference's packed LSTM cannot take either.
    """
    if not indices:
        raise ValueError("a caption has no word of the DAMSM vocabulary")
    padded = np.zeros(words_num, np.int32)
    if len(indices) <= words_num:
        padded[: len(indices)] = indices
        return padded, len(indices)
    keep = np.sort(rng.permutation(len(indices))[:words_num])
    padded[:] = np.asarray(indices)[keep]
    return padded, words_num


def _is_index_lists(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(caption, list) and all(type(i) is int for i in caption) for caption in value
    )


def load_captions(path: str | os.PathLike[str]) -> CaptionsFile:
    """Reads AttnGAN's `captions.pickle` without running anything from it.

    Args:
        path: the `captions.pickle` of AttnGAN's `birds.zip` / `coco.zip` metadata.

    Returns:
        Its train and test captions and the two dictionaries.

    Raises:
        FileNotFoundError: no file there.
        RefusedFileError: the pickle names a global, or does not hold
            `[train_captions, test_captions, ixtoword, wordtoix]`; the message names the file.
    """
    path = os.fspath(path)
    try:
        contents = numpy_pickle.load_pickle(path)
    except RefusedFileError as e:
        raise RefusedFileError(f"{path}: {e}") from e
    except (pickle.UnpicklingError, EOFError, ValueError, IndexError, KeyError) as e:
        raise RefusedFileError(f"{path} is not a readable pickle: {e}") from e
    layout = "a list [train_captions, test_captions, ixtoword, wordtoix]"
    if not (isinstance(contents, list | tuple) and len(contents) == 4):
        raise RefusedFileError(f"{path} is not AttnGAN's captions.pickle: it should hold {layout}")
    train, test, ixtoword, wordtoix = contents
    if not (_is_index_lists(train) and _is_index_lists(test)):
        raise RefusedFileError(f"{path}: its captions are not lists of word indices ({layout})")
    if not (
        isinstance(ixtoword, dict)
        and isinstance(wordtoix, dict)
        and all(type(k) is int and isinstance(v, str) for k, v in ixtoword.items())
        and all(isinstance(k, str) and type(v) is int for k, v in wordtoix.items())
    ):
        raise RefusedFileError(f"{path}: its dictionaries are not index->word and word->index")
    if ixtoword.get(0) != END or any(ixtoword.get(i) != w for w, i in wordtoix.items()):
        raise RefusedFileError(f"{path}: ixtoword and wordtoix disagree, or 0 is not {END}")
    return CaptionsFile(path, train, test, ixtoword, wordtoix)
