"""OpenAI CLIP's tokenizer (`clip.tokenize`), without ftfy, regex or torch.

Reproduces `clip.tokenize(texts, context_length=77, truncate=True)` of openai/CLIP
(`clip/clip.py`, `tokenize`; `clip/simple_tokenizer.py`, `SimpleTokenizer`), which GALIP calls for
its CLIP score (tobran/GALIP `code/lib/datasets.py` line 78: `clip.tokenize(caption,
truncate=True)`):

1. clean: `ftfy.fix_text`, `html.unescape` twice, strip; every whitespace run to one space;
   lower case (`basic_clean`, `whitespace_clean`, `SimpleTokenizer.encode`);
2. split with the pattern `_PATTERN` (words of letters, single digits, runs of other symbols,
   English contractions), each piece's UTF-8 bytes mapped to printable characters
   (`bytes_to_unicode`, the GPT-2 byte map);
3. byte-pair merges from `bpe_simple_vocab_16e6.txt.gz`, a word's last symbol marked `</w>`;
4. `<|startoftext|>` + ids + `<|endoftext|>`, cut to 77 with the last kept id replaced by
   `<|endoftext|>` (truncate=True), zero-padded to 77.

Steps 2 and 3 run in the `tokenizers` library (its BPE model with `end_of_word_suffix='</w>'`, as
Hugging Face's `CLIPTokenizerFast` does); the golden test compares the ids with `clip.tokenize`.

ftfy is not a dependency here. `_ftfy_subset` applies the parts of `ftfy.fix_text` (ftfy 6.3) that
change well-formed text: curly quotes to straight ones (so "bird’s" splits like "bird's"), Latin
ligatures and full-width forms to plain letters, control characters removed, HTML entities, NFC.
What it leaves out is ftfy's repair of broken text: mojibake ("cafÃ©" stays as written, ftfy makes
it "café"), C1 control characters read as Windows-1252, ANSI terminal escapes and lone surrogates.
Captions that are valid Unicode as written tokenize identically.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import html
import itertools
import json
import os
import pathlib
import re
import unicodedata
from collections.abc import Sequence

import numpy as np
import tokenizers

from stackgan_jax.errors import BadFileError

START = "<|startoftext|>"
END = "<|endoftext|>"
CONTEXT_LENGTH = 77
# `SimpleTokenizer.__init__`: the merges are lines 1 .. 48894 of the vocab file (line 0 is a
# version header), so that 256 bytes + 256 word-final bytes + the merges + 2 markers = 49408 ids.
_NUM_MERGES = 49152 - 256 - 2

# `SimpleTokenizer.pat`, which `regex` compiles with IGNORECASE (irrelevant: the text is lower
# case by then); `tokenizers` runs it with Oniguruma, which knows the same \p{L} and \p{N}.
_PATTERN = (
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"""
    r"""[^\s\p{L}\p{N}]+"""
)

# ftfy 6.3 `chardata`: curly quotes (`SINGLE_QUOTE_RE`, `DOUBLE_QUOTE_RE`), `LIGATURES`,
# `_build_width_map` and `_build_control_char_mapping`, as `str.translate` tables.
_QUOTES = {c: "'" for c in [0x02BC, *range(0x2018, 0x201C)]} | {
    c: '"' for c in range(0x201C, 0x2020)
}
_LIGATURES = {
    ord(ligature): letters
    for ligature, letters in zip(
        "ĲĳŉǱǲǳǄǅǆǇǈǉǊǋǌﬀﬁﬂﬃﬄﬅﬆ",
        ("IJ", "ij", "ʼn", "DZ", "Dz", "dz", "DŽ", "Dž", "dž", "LJ", "Lj", "lj", "NJ", "Nj", "nj")
        + ("ff", "fi", "fl", "ffi", "ffl", "ſt", "st"),
        strict=True,
    )
}
_WIDTH = {0x3000: " "} | {
    c: unicodedata.normalize("NFKC", chr(c))
    for c in range(0xFF01, 0xFFF0)
    if unicodedata.normalize("NFKC", chr(c)) != chr(c)
}
_CONTROL = dict.fromkeys(
    itertools.chain(
        range(0x00, 0x09),
        [0x0B],
        range(0x0E, 0x20),
        [0x7F],
        range(0x206A, 0x2070),
        [0xFEFF],
        range(0xFFF9, 0xFFFD),
    )
)


def _ftfy_subset(text: str) -> str:
    """The steps of `ftfy.fix_text` that change well-formed text, repeated until nothing changes.

    ftfy repeats its fixers until the text stops changing, each line on its own, and leaves HTML
    entities alone in a line that has a '<' (it may be markup); see the module docstring for what
    is left out.
    """
    lines = text.split("\n")
    for i, line in enumerate(lines):
        for _ in range(10):
            fixed = html.unescape(line) if "<" not in line else line
            for table in (_LIGATURES, _WIDTH, _QUOTES, _CONTROL):
                fixed = fixed.translate(table)
            fixed = unicodedata.normalize("NFC", fixed)
            if fixed == line:
                break
            line = fixed
        lines[i] = line
    return "\n".join(lines)


def clean(text: str) -> str:
    """CLIP's text cleaning: `whitespace_clean(basic_clean(text)).lower()`, ftfy as above."""
    text = html.unescape(html.unescape(_ftfy_subset(text))).strip()
    return re.sub(r"\s+", " ", text).strip().lower()


@functools.cache
def _bytes_to_unicode() -> dict[int, str]:
    """`simple_tokenizer.bytes_to_unicode`: each byte → a printable character, in id order."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    others = [b for b in range(256) if b not in printable]
    return {
        **{b: chr(b) for b in printable},
        **{b: chr(256 + n) for n, b in enumerate(others)},
    }


def _vocab_from_merges(merges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """`SimpleTokenizer.encoder`: bytes, word-final bytes, one token per merge, the 2 markers."""
    symbols = list(_bytes_to_unicode().values())
    tokens = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges), START, END]
    return {token: index for index, token in enumerate(tokens)}


def read_bpe_vocab(path: str | os.PathLike[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Reads OpenAI's `bpe_simple_vocab_16e6.txt.gz` as `SimpleTokenizer` does.

    Args:
        path: the gzip file of merges (from openai/CLIP's `clip/`, or the clip-anytorch and
            open_clip wheels).

    Returns:
        (token → id, merges in rank order).

    Raises:
        ValueError: the file is not a gzip file of merge pairs.
    """
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise BadFileError(f"{path} is not a gzip-compressed CLIP BPE vocabulary: {e}") from None
    merges = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]
    if not merges or any(len(m) != 2 for m in merges):
        raise BadFileError(f"{path} is not a CLIP BPE vocabulary: expected one merge pair a line")
    return _vocab_from_merges(merges), merges


def read_hf_vocab(path: str | os.PathLike[str]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Reads the BPE vocabulary and merges of a Hugging Face CLIP `tokenizer.json`.

    Only the model section is used: Hugging Face's normaliser skips ftfy and HTML unescaping,
    so `ClipTokenizer` replaces it with CLIP's own cleaning.

    Raises:
        ValueError: the file is not a BPE `tokenizer.json` with CLIP's markers.
    """
    try:
        model = json.loads(pathlib.Path(path).read_text("utf-8"))["model"]
        vocab, merges = model["vocab"], model["merges"]
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in merges]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise BadFileError(f"{path} is not a Hugging Face BPE tokenizer.json: {e!r}") from None
    if model.get("type") != "BPE" or START not in vocab or END not in vocab:
        raise BadFileError(f"{path} is not a CLIP BPE tokenizer ({START}, {END} and BPE needed)")
    return vocab, merges


@dataclasses.dataclass(frozen=True)
class ClipTokenizer:
    """`clip.tokenize` with a given vocabulary.

    Attributes:
        bpe: the byte-level BPE (split, byte map, merges) of `tokenizers`.
        start: id of `<|startoftext|>`.
        end: id of `<|endoftext|>`.
    """

    bpe: tokenizers.Tokenizer
    start: int
    end: int

    @classmethod
    def from_vocab(cls, vocab: dict[str, int], merges: Sequence[tuple[str, str]]) -> ClipTokenizer:
        """A tokenizer of `read_bpe_vocab`'s or `read_hf_vocab`'s vocabulary and merges."""
        model = tokenizers.models.BPE(
            vocab, list(merges), end_of_word_suffix="</w>", continuing_subword_prefix=""
        )
        bpe = tokenizers.Tokenizer(model)
        pieces = tokenizers.pre_tokenizers.Split(
            tokenizers.Regex(_PATTERN), behavior="removed", invert=True
        )
        to_bytes = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        bpe.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([pieces, to_bytes])
        # The markers, written in a caption, are one token each, as `SimpleTokenizer.cache` has
        # them.
        bpe.add_special_tokens([START, END])
        return cls(bpe, vocab[START], vocab[END])

    def encode(self, text: str) -> list[int]:
        """`SimpleTokenizer.encode`: the ids of a cleaned text, without the markers."""
        return self.bpe.encode(clean(text), add_special_tokens=False).ids

    def __call__(self, texts: Sequence[str], context_length: int = CONTEXT_LENGTH) -> np.ndarray:
        """`clip.tokenize(texts, context_length, truncate=True)` as int32[len(texts), context]."""
        result = np.zeros((len(texts), context_length), np.int32)
        for row, text in enumerate(texts):
            ids = [self.start, *self.encode(text), self.end][:context_length]
            ids[-1] = self.end
            result[row, : len(ids)] = ids
        return result


def load_tokenizer(path: str | os.PathLike[str]) -> ClipTokenizer:
    """CLIP's tokenizer from `bpe_simple_vocab_16e6.txt.gz` or a Hugging Face `tokenizer.json`.

    Args:
        path: OpenAI's gzip vocabulary (any name not ending in `.json`) or `tokenizer.json`.

    Raises:
        ValueError: the file is neither.
    """
    read = read_hf_vocab if os.fspath(path).endswith(".json") else read_bpe_vocab
    return ClipTokenizer.from_vocab(*read(path))
