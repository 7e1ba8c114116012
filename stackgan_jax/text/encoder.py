"""The text-encoder interface and the shape-bucketed, jit-compiled runner behind every encoder.

An encoder turns captions into fixed-size vectors: ``encode(list[str]) -> float32[N, dim]``.
Each concrete encoder supplies a tokenizer (text -> integer ids) and a pure forward function
(params, int32[B, T] -> float32[B, dim]); `BucketedEncoder` pads every batch to a shape taken from
a small fixed set, so after those shapes are compiled once, encoding new text never recompiles.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import jax
import numpy as np

from stackgan_jax.weights import Params

Tokenizer = Callable[[Sequence[str]], list[np.ndarray]]
ForwardFn = Callable[[Params, jax.Array], jax.Array]


class TextEncoder(Protocol):
    """What the rest of the project relies on: a name, an output size and `encode`."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeds captions.

        Args:
          texts: captions, any length (the empty list included).

        Returns:
          float32[len(texts), dim].
        """
        ...


def power_of_two_buckets(largest: int) -> tuple[int, ...]:
    """Powers of two below `largest`, then `largest` itself.

    Args:
      largest: the biggest size a bucket must hold.

    Returns:
      Ascending bucket sizes; the last one is `largest`.
    """
    buckets = []
    size = 1
    while size < largest:
        buckets.append(size)
        size *= 2
    return (*buckets, largest)


def bucket_for(size: int, buckets: Sequence[int]) -> int:
    """The smallest bucket that holds `size` items.

    Args:
      size: number of items (rows or tokens).
      buckets: ascending bucket sizes.

    Returns:
      The bucket to pad to.

    Raises:
      ValueError: if `size` exceeds the largest bucket.
    """
    for bucket in buckets:
        if size <= bucket:
            return bucket
    raise ValueError(f"size {size} exceeds the largest bucket {buckets[-1]}")


def length_sorted_chunks(lengths: Sequence[int], chunk_size: int) -> Iterator[np.ndarray]:
    """Splits row indices into chunks of similar length, longest first.

    Grouping captions of similar length keeps the padding, and so the wasted compute, small.

    Args:
      lengths: token count of each row.
      chunk_size: most rows per chunk.

    Yields:
      int arrays of row indices, each at most `chunk_size` long, covering every row once.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    for start in range(0, len(order), chunk_size):
        yield order[start : start + chunk_size]


def pad_batch(
    sequences: Sequence[np.ndarray],
    batch_buckets: Sequence[int],
    length_buckets: Sequence[int],
    pad_id: int,
) -> np.ndarray:
    """Packs sequences into an array whose both sizes are buckets, filled up with `pad_id`.

    Args:
      sequences: int token ids, one array per row.
      batch_buckets: allowed row counts.
      length_buckets: allowed sequence lengths.
      pad_id: the filler.

    Returns:
      int32[batch bucket, length bucket]; row i starts with sequences[i].
    """
    length = bucket_for(max(len(ids) for ids in sequences), length_buckets)
    batch = np.full((bucket_for(len(sequences), batch_buckets), length), pad_id, np.int32)
    for row, ids in enumerate(sequences):
        batch[row, : len(ids)] = ids
    return batch


@dataclasses.dataclass
class BucketedEncoder:
    """A `TextEncoder` built from a tokenizer and a jit-compiled forward function.

    Attributes:
      name: registry name of the encoder.
      dim: size of each output vector.
      tokenize: texts -> one int array of token ids per text (already truncated).
      forward: (params, int32[B, T]) -> float32[B, dim]; rows padded with `pad_id` must not
        affect the other rows.
      params: the weights passed to `forward`.
      length_buckets: ascending sequence lengths a batch is padded to; the last is the maximum.
      max_batch: most rows per forward call; larger inputs are split.
      pad_id: token id used for padding.
    """

    name: str
    dim: int
    tokenize: Tokenizer
    forward: ForwardFn
    params: Params
    length_buckets: tuple[int, ...]
    max_batch: int = 256
    pad_id: int = 0
    batch_buckets: tuple[int, ...] = dataclasses.field(init=False)

    def __post_init__(self):
        self.batch_buckets = power_of_two_buckets(self.max_batch)
        self.params = jax.device_put(self.params)
        # Params are an argument, not a closure constant: constants would be baked into every
        # compiled program, one copy of the weights per (batch, length) bucket.
        self._forward = jax.jit(self.forward)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embeds captions, longest first in chunks of `max_batch`, padded to bucketed shapes.

        Args:
          texts: captions (a list, not a single string).

        Returns:
          float32[len(texts), dim], row i belonging to texts[i].
        """
        if isinstance(texts, str):
            raise TypeError("encode() takes a list of captions, not a single string")
        token_ids = self.tokenize(list(texts))
        embeddings = np.zeros((len(token_ids), self.dim), np.float32)
        # Dispatch every chunk before reading any result back, so host-side padding of the next
        # chunk overlaps device compute of the previous one.
        pending = []
        for rows in length_sorted_chunks([len(ids) for ids in token_ids], self.max_batch):
            batch = pad_batch(
                [token_ids[r] for r in rows], self.batch_buckets, self.length_buckets, self.pad_id
            )
            pending.append((rows, self._forward(self.params, batch)))
        for rows, batch_embeddings in pending:
            embeddings[rows] = np.asarray(batch_embeddings)[: len(rows)]
        return embeddings

    def warmup(
        self, batch_sizes: Sequence[int] | None = None, lengths: Sequence[int] | None = None
    ) -> None:
        """Compiles the forward pass for every bucket that the given sizes fall into.

        Args:
          batch_sizes: batch sizes to prepare for (default: every batch bucket).
          lengths: token counts to prepare for (default: every length bucket).
        """
        batch_buckets = {
            bucket_for(b, self.batch_buckets) for b in batch_sizes or self.batch_buckets
        }
        length_buckets = {
            bucket_for(t, self.length_buckets) for t in lengths or self.length_buckets
        }
        for batch in sorted(batch_buckets):
            for length in sorted(length_buckets):
                ids = np.full((batch, length), self.pad_id, np.int32)
                self._forward(self.params, ids).block_until_ready()

    def compiled_shapes(self) -> int:
        """Number of (batch, length) shapes compiled so far; constant once warmed up."""
        return self._forward._cache_size()
