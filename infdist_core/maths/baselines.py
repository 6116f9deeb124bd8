"""Baseline selections on the same machinery (Sec. 5.1): uniform, mid-perplexity (Yin & Rush),
RDS+ (cosine of position-weighted hidden means, per-target round-robin) and "Grad" (true
projected gradients of every sample, i.e. LESS-like)."""

from __future__ import annotations

import numpy as np
import torch

from infdist_core.data.seeding import generator
from infdist_core.data.validation import as_numpy, check_k
from infdist_core.maths.preconditioning import unit_rows
from infdist_core.maths.selection import round_robin


def uniform(n: int, k: int, seed: int) -> np.ndarray:
    """k distinct indices uniformly at random (seeded)."""
    k = check_k(k, n)
    return torch.randperm(n, generator=generator(seed, "uniform", n))[:k].numpy().astype(np.int64)


def mid_perplexity(losses: np.ndarray, k: int) -> np.ndarray:
    """The k samples in the middle of the perplexity ranking (ties by index)."""
    loss = as_numpy(losses, "losses", 1)
    k = check_k(k, len(loss))
    order = np.lexsort((np.arange(len(loss)), loss))
    start = (len(loss) - k) // 2
    return order[start : start + k].astype(np.int64)


def cosine_scores(E_pool: np.ndarray, E_targets: np.ndarray) -> np.ndarray:
    """Cosine similarity of every pool row to every target row, shape (n, t)."""
    A = as_numpy(E_pool, "E_pool", 2)
    B = as_numpy(E_targets, "E_targets", 2)
    return unit_rows(A) @ unit_rows(B).T


def similarity_round_robin(E_pool: np.ndarray, E_targets: np.ndarray, k: int, seed: int) -> np.ndarray:
    """RDS+ / Grad selection: per-target round-robin over cosine similarities."""
    return round_robin(cosine_scores(E_pool, E_targets), k, seed=seed)
