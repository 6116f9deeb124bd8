"""Selecting the training subset from scores (Section 3.3, "Per-target Importance").

``round_robin``: targets take turns in a seeded order, each taking its best sample not yet
taken, until k are taken. Each target only ever needs its top ``ceil(k/t) + k - 1`` entries (it
takes at most ``ceil(k/t)`` and skips at most ``k - 1`` taken ones), found by a partition, so
memory is O(t * k) and time O(t n + t k log k), not O(k n) rescans.
Ties are broken by ascending pool index, everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from infdist_core.data.seeding import generator
from infdist_core.data.validation import as_numpy, check_k


def top_indices(col: np.ndarray, m: int) -> np.ndarray:
    """Indices of the ``m`` largest entries of ``col``, by descending value then ascending index."""
    n = len(col)
    if m == 0:
        return np.empty(0, dtype=np.intp)
    if m >= n:
        return np.lexsort((np.arange(n), -col))
    kth = np.partition(col, n - m)[n - m]  # the m-th largest value
    cand = np.flatnonzero(col >= kth)
    order = np.lexsort((cand, -col[cand]))
    return cand[order[:m]]


def target_order(t: int, seed: int) -> np.ndarray:
    return torch.randperm(t, generator=generator(seed, "round_robin", t)).numpy()


def round_robin(scores: np.ndarray | torch.Tensor, k: int, seed: int = 0) -> np.ndarray:
    """Per-target round-robin selection.

    Parameters
    ----------
    scores : array of shape (n, t)
        Influence of every pool sample on every target (higher is better).
    k : int
        Number of distinct samples to select, ``1 <= k <= n``.
    seed : int
        Seeds the order in which targets take turns.

    Returns
    -------
    int64 array of shape (k,): pool indices in pick order.
    """
    S = as_numpy(scores, "scores", (1, 2))
    S = S[:, None] if S.ndim == 1 else S
    n, t = S.shape
    k = check_k(k, n)
    if t == 0:
        raise ValueError("scores has no target columns")
    depth = min(n, math.ceil(k / t) + k - 1)
    ranked = [top_indices(S[:, j], depth) for j in range(t)]
    order = target_order(t, seed)
    taken = np.zeros(n, dtype=bool)
    cursor = np.zeros(t, dtype=np.int64)
    picks = np.empty(k, dtype=np.int64)
    count = 0
    while count < k:
        for j in order:
            lst, c = ranked[j], cursor[j]
            while taken[lst[c]]:
                c += 1
            idx = lst[c]
            taken[idx] = True
            cursor[j] = c + 1
            picks[count] = idx
            count += 1
            if count == k:
                break
    return picks


def round_robin_reference(scores: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """O(k n) oracle for ``round_robin``: rescan each target's column for its best untaken sample."""
    S = np.asarray(scores, dtype=np.float64)
    S = S[:, None] if S.ndim == 1 else S
    n, t = S.shape
    taken = np.zeros(n, dtype=bool)
    picks: list[int] = []
    order = target_order(t, seed)
    while len(picks) < k:
        for j in order:
            best = None
            for i in range(n):
                if not taken[i] and (best is None or S[i, j] > S[best, j]):
                    best = i
            taken[best] = True
            picks.append(best)
            if len(picks) == k:
                break
    return np.asarray(picks, dtype=np.int64)


def top_k(scores: np.ndarray | torch.Tensor, k: int) -> np.ndarray:
    """The k best samples of a 1-D score vector (mean-target selection), best first."""
    s = as_numpy(scores, "scores", 1)
    return top_indices(s, check_k(k, len(s))).astype(np.int64)


@dataclass(frozen=True)
class SelectionChange:
    """How a selection moved between two runs: the samples that entered, left and stayed, and the
    weight change of each sample present in either (absent = weight 0)."""

    entered: tuple[str, ...]
    left: tuple[str, ...]
    kept: tuple[str, ...]
    weight_change: dict[str, float]


def compare_selections(before: dict[str, float], after: dict[str, float]) -> SelectionChange:
    """``before`` / ``after``: sample id -> weight of two selections of the same partition."""
    entered = tuple(s for s in after if s not in before)
    left = tuple(s for s in before if s not in after)
    kept = tuple(s for s in after if s in before)
    change = {s: after.get(s, 0.0) - before.get(s, 0.0) for s in (*after, *left)}
    return SelectionChange(entered, left, kept, change)
