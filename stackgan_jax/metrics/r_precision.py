"""R-precision as AttnGAN / DM-GAN compute it: the maths, free of networks and files.

DM-GAN's `sampling` (code/trainer.py lines 417-493 of MinfengZhu/DM-GAN, commit d515995 "add
R-precision") and `TextDataset.get_mis_caption` (code/datasets.py lines 310-330):

* for each generated image, 99 mismatched captions: a test image drawn uniformly, drawn again
  while it has the generated image's class (`class_info.pickle`; COCO has none, so only the image
  itself is excluded), then one of its captions drawn uniformly;
* the image's DAMSM code (`cnn_code`) is scored against the sentence embeddings of its own caption
  (row 0) and of the 99 by cosine similarity, `(a . b) / max(|a| |b|, 1e-8)`; a trial is a hit
  when `torch.argmax` of the 100 scores is 0 (its first maximum, so a tie with the true caption is
  a hit);
* 30,000 trials `R`, shuffled (`np.random.shuffle`), cut into 10 groups of 3,000; each group's
  score is `np.average(R[i * 3000:(i + 1) * 3000 - 1])`, i.e. over its first 2,999 trials (the
  `- 1` drops one per group), and the report is the mean and the population standard deviation
  (`np.std`) of the 10 group scores. `grouped_mean_std` keeps that slice exactly.
"""

from __future__ import annotations

import numpy as np

MISMATCHED = 99
GROUPS = 10


def cosine_scores(image_codes: np.ndarray, caption_codes: np.ndarray) -> np.ndarray:
    """Each image's cosine similarity with its candidate captions, as DM-GAN computes it.

    Args:
        image_codes: float [N, D].
        caption_codes: float [N, C, D], the true caption first.

    Returns:
        float64 [N, C]: `(a . b) / max(|a| |b|, 1e-8)`.
    """
    image = np.asarray(image_codes, np.float64)
    captions = np.asarray(caption_codes, np.float64)
    dots = np.einsum("nd,ncd->nc", image, captions)
    norms = np.linalg.norm(image, axis=-1)[:, None] * np.linalg.norm(captions, axis=-1)
    return dots / np.maximum(norms, 1e-8)


def top1_hits(image_codes: np.ndarray, caption_codes: np.ndarray) -> np.ndarray:
    """Whether each image scores its true caption (index 0) highest; a tie goes to index 0.

    Args:
        image_codes: float [N, D].
        caption_codes: float [N, C, D], the true caption first.

    Returns:
        bool [N].
    """
    return np.argmax(cosine_scores(image_codes, caption_codes), axis=1) == 0


def pooled_hits(
    image_codes: np.ndarray,
    true_codes: np.ndarray,
    pool_codes: np.ndarray,
    mismatched_rows: np.ndarray,
    chunk: int = 1024,
) -> np.ndarray:
    """`top1_hits` with the mismatched captions given as rows of a table of sentence codes.

    Args:
        image_codes: float [N, D].
        true_codes: float [N, D], each image's own caption.
        pool_codes: float [M, D], sentence codes of the captions the mismatches are drawn from.
        mismatched_rows: int [N, K], each trial's mismatched captions as rows of `pool_codes`.
        chunk: trials scored at once (memory is chunk × (K + 1) × D).

    Returns:
        bool [N].
    """
    hits = []
    for start in range(0, len(image_codes), chunk):
        rows = slice(start, start + chunk)
        candidates = np.concatenate(
            [true_codes[rows, None], pool_codes[mismatched_rows[rows]]], axis=1
        )
        hits.append(top1_hits(image_codes[rows], candidates))
    return np.concatenate(hits) if hits else np.zeros(0, bool)


def grouped_mean_std(
    hits: np.ndarray, rng: np.random.Generator, groups: int = GROUPS
) -> tuple[float, float]:
    """DM-GAN's report: mean and std over `groups` groups of the shuffled trials.

    Each group of `n // groups` trials is scored over all but its last trial, as DM-GAN's slice
    `R[i * 3000:(i + 1) * 3000 - 1]` does (see the module docstring); trials past `groups` whole
    groups are left out.

    Args:
        hits: bool or float [n], one per trial; n >= 2 * groups.
        rng: shuffles the trials.
        groups: number of groups (10).

    Returns:
        (mean, population standard deviation) of the group scores, as fractions.

    Raises:
        ValueError: fewer than two trials per group.
    """
    size = len(hits) // groups
    if size < 2:
        raise ValueError(f"R-precision needs at least {2 * groups} trials, got {len(hits)}")
    shuffled = rng.permutation(np.asarray(hits, np.float64))
    scores = [np.mean(shuffled[i * size : (i + 1) * size - 1]) for i in range(groups)]
    return float(np.mean(scores)), float(np.std(scores))


def draw_mismatched(
    image_classes: np.ndarray,
    pool_classes: np.ndarray,
    pool_counts: np.ndarray,
    rng: np.random.Generator,
    count: int = MISMATCHED,
) -> tuple[np.ndarray, np.ndarray]:
    """DM-GAN's `get_mis_caption` draws for every trial at once.

    Args:
        image_classes: int [N], the class of each trial's image.
        pool_classes: int [M], the class of each image whose captions can be drawn.
        pool_counts: int [M], how many captions each of those images has (>= 1).
        rng: the draws' generator.
        count: mismatched captions per trial (99).

    Returns:
        (images int [N, count], captions int [N, count]): the drawn image of each mismatch, never
        of the trial's class, and which of its captions.

    Raises:
        ValueError: a trial's class is the only class in the pool.
    """
    image_classes, pool_classes = np.asarray(image_classes), np.asarray(pool_classes)
    distinct = np.unique(pool_classes)
    if len(distinct) == 0 or (len(distinct) == 1 and np.any(image_classes == distinct[0])):
        raise ValueError("no image of another class to draw mismatched captions from")
    images = rng.integers(0, len(pool_classes), (len(image_classes), count))
    # Redraw the same-class draws until none is left, as the reference's `while` loop does.
    same = pool_classes[images] == image_classes[:, None]
    while same.any():
        images[same] = rng.integers(0, len(pool_classes), int(same.sum()))
        same = pool_classes[images] == image_classes[:, None]
    captions = rng.integers(0, np.asarray(pool_counts)[images])
    return images, captions
