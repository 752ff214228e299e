"""Does a teacher's feature space carry structure about the text? The probe `repa-mdlm compare` runs on
the cached features of each teacher and of the random-init control (numpy only, no torch at import)."""

from __future__ import annotations

import math
import os

import numpy as np

from .stats import wilson_interval

PROBE_ROWS = 4096
"""Consecutive train sequences read for the teacher-feature probe."""


def feature_structure(features: np.ndarray, seed: int = 0) -> dict:
    """What a teacher's pooled features say about the text, on consecutive packed sequences
    (neighbours in the stream are mostly the same chapter, so related text). Content:

    - neighbour_top1: how often a sequence's nearest other sequence (cosine of centred
      features) is the one just before or after it; chance is about 2 / (n - 1);
    - adjacent_minus_random_cos: mean centred cosine of neighbours minus that of random pairs.

    Geometry:

    - anisotropy: mean raw cosine of random pairs (near 1: every vector points one way, as in
      a random network), with a normal 95 % interval over the pairs;
    - effective_rank: participation ratio (sum of eigenvalues)^2 / sum of squares of the centred
      covariance: how many directions carry the variance.
    """
    x = np.asarray(features, dtype=np.float64)
    n = len(x)
    if n < 4:
        raise ValueError(f"feature_structure needs at least 4 sequences, got {n}")
    unit = lambda a: a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    raw, centred = unit(x), unit(x - x.mean(axis=0))
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=4 * n)
    j = (i + rng.integers(2, n - 1, size=i.size)) % n  # never the same or an adjacent row
    raw_pairs = np.sum(raw[i] * raw[j], axis=1)
    anisotropy, half = float(raw_pairs.mean()), 1.96 * float(raw_pairs.std(ddof=1)) / math.sqrt(raw_pairs.size)
    adjacent = np.sum(centred[:-1] * centred[1:], axis=1)
    random_pairs = np.sum(centred[i] * centred[j], axis=1)
    eigenvalues = np.clip(np.linalg.eigvalsh(np.cov(x, rowvar=False)), 0.0, None)
    hits = 0
    for start in range(0, n, 1024):  # nearest neighbour in blocks: n x n never in memory at once
        sim = centred[start:start + 1024] @ centred.T
        rows = np.arange(start, min(start + 1024, n))
        sim[rows - start, rows] = -np.inf
        nearest = sim.argmax(axis=1)
        hits += int(np.sum(np.abs(nearest - rows) == 1))
    lo, hi = wilson_interval(hits, n)
    return {"sequences": n, "dim": int(x.shape[1]), "neighbour_top1": hits / n, "neighbour_top1_lo": lo,
            "neighbour_top1_hi": hi, "neighbour_hits": hits, "chance": 2.0 / (n - 1),
            "adjacent_cos": float(adjacent.mean()), "random_cos": float(random_pairs.mean()),
            "adjacent_minus_random_cos": float(adjacent.mean() - random_pairs.mean()),
            "anisotropy": anisotropy, "anisotropy_lo": anisotropy - half, "anisotropy_hi": anisotropy + half,
            "effective_rank": float(eigenvalues.sum() ** 2 / max(float(np.sum(eigenvalues ** 2)), 1e-300))}


def load_probe_features(path: str | os.PathLike, rows: int = PROBE_ROWS, teacher: str | None = None) -> np.ndarray:
    """The first `rows` sequences of a cached feature file (bfloat16 bits) as float32. teacher: the
    name whose features they must be (another teacher's cache copied there is refused)."""
    from ..teachers.teacher import FeatureCache

    cache = FeatureCache(path, teacher=teacher)  # checksummed: a flipped byte would move the probe silently
    return cache[slice(0, min(rows, len(cache.array)))].numpy()
