"""The registry of selection methods: what each needs and how it selects (Sec. 5.1's baselines
beside Influence Distillation). Adding a method is one entry here; the asset layer reads the
named inputs (``infdist_assets.store.loaders.SELECTION_INPUTS``) and builds its assets from ``METHODS``.

Inputs by name:

- ``influence``: ``pipeline.TargetScores`` (per-target scores and the mean target's weights)
- ``pool_losses``: (n,) per-sample losses of the base model
- ``rds_pool`` / ``rds_targets``: RDS+ embeddings of the pool and of the targets
- ``pool_gradients`` / ``target_gradients``: true projected gradients of the pool and the targets
- ``landmark_gradients``: (pool indices, gradients) of the valid landmarks, as InfDist uses them
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from infdist_core.config import SelectionConfig, SelectionSection
from infdist_core.maths import baselines
from infdist_core.maths.selection import round_robin, top_k


@dataclass(frozen=True)
class SelectionMethod:
    name: str
    needs: tuple[str, ...]
    select: Callable[..., np.ndarray | tuple[np.ndarray, np.ndarray]]
    """``(selection settings, n_pool, **needs) -> indices`` in pick order, or ``(indices, weights)``:
    a method sees the configuration's ``selection`` section only (budget, seed, round-robin)."""
    description: str
    whole_pool: bool = False  # selects every sample whatever k (the paper's ceiling row)


def _infdist(sel: SelectionSection, n_pool: int, influence) -> tuple[np.ndarray, np.ndarray]:
    idx = round_robin(influence.scores, sel.k, seed=sel.seed) if sel.per_target else top_k(influence.weights, sel.k)
    return idx, influence.weights[idx]


def _grad(sel: SelectionSection, n_pool: int, pool_gradients, target_gradients) -> tuple[np.ndarray, np.ndarray]:
    from infdist_core.pipeline import exact_scores  # torch and the model side: only when Grad runs

    return _infdist(sel, n_pool, exact_scores(pool_gradients, target_gradients, sel.k))


def _landmarks(sel: SelectionSection, n_pool: int, landmark_gradients, target_gradients) -> tuple[np.ndarray, np.ndarray]:
    from infdist_core.pipeline import exact_scores

    idx, G_L = landmark_gradients
    if sel.k > len(idx):
        raise ValueError(f"selection method 'landmarks' picks among the {len(idx)} valid landmarks, fewer than "
                         f"k={sel.k}: raise n_landmarks or lower k")
    picks, w = _infdist(sel, len(idx), exact_scores(G_L, target_gradients, sel.k))
    return np.asarray(idx)[picks], w * (n_pool / len(idx))  # Eq. 7's weights sum to the pool's size, as InfDist's


METHODS: dict[str, SelectionMethod] = {m.name: m for m in (
    SelectionMethod("infdist", ("influence",), _infdist,
                    "Influence Distillation: per-target round-robin over the propagated scores (Sec. 3.3), or top-k "
                    "of the robust weights"),
    SelectionMethod("uniform", (), lambda sel, n: baselines.uniform(n, sel.k, sel.seed), "k samples uniformly at random"),
    SelectionMethod("mid_ppl", ("pool_losses",), lambda sel, n, pool_losses: baselines.mid_perplexity(pool_losses, sel.k),
                    "the k samples in the middle of the base model's perplexity ranking"),
    SelectionMethod("rds", ("rds_pool", "rds_targets"),
                    lambda sel, n, rds_pool, rds_targets: baselines.similarity_round_robin(rds_pool, rds_targets, sel.k,
                                                                                           sel.seed),
                    "RDS+: per-target round-robin over cosines of position-weighted hidden means"),
    SelectionMethod("grad", ("pool_gradients", "target_gradients"), _grad,
                    "Grad: InfDist with a perfect approximation, i.e. the true projected gradient of every pool sample "
                    "(no landmarks, no regression), the same robust weights and per-target round-robin: the ceiling"),
    SelectionMethod("landmarks", ("landmark_gradients", "target_gradients"), _landmarks,
                    "InfDist without the propagation: the same weights and round-robin over the landmarks' exact scores "
                    "only, no proxy pass and no regression (what the landmarks alone select; k <= landmarks)"),
    SelectionMethod("full", (), lambda sel, n: np.arange(n), "the whole pool (the ceiling row)", whole_pool=True),
)}


DEFAULT_METHODS = ("infdist", "uniform")
"""What the selection job and the demo run per model x task (the others on demand and in the benchmark)."""


def select(method: str, cfg: SelectionConfig, n_pool: int, **inputs) -> tuple[np.ndarray, np.ndarray]:
    """Indices (in pick order) and their weights (ones for methods without weights)."""
    if method not in METHODS:
        raise ValueError(f"unknown selection method {method!r}; use one of {sorted(METHODS)}")
    m = METHODS[method]
    missing = set(m.needs) - set(inputs)
    if missing:
        raise ValueError(f"selection method {method!r} needs {sorted(missing)}")
    out = m.select(cfg.selection, n_pool, **{k: inputs[k] for k in m.needs})
    idx, w = out if isinstance(out, tuple) else (out, np.ones(len(out)))
    return np.asarray(idx, np.int64), np.asarray(w, np.float64)
