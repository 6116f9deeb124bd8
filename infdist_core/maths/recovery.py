"""How well a proxy embedding carries landmark influence: cross-validation on the landmarks.

Landmark gradients exist anyway, so holding out a fraction of them and propagating to them from
the rest (Eq. 10, with the gradients or the scores as right-hand sides) measures the
approximation at almost no cost. Metrics on the held-out landmarks, averaged over folds:

- ``grad_cosine``: mean cosine between KRR-propagated and true gradients (the paper's Fig. 7)
- ``mean_cosine``: the same for the trivial predictor "mean landmark gradient" (the bar to beat)
- ``spearman``: mean over targets of Spearman(p_hat, p), p = G g_t
- ``top10_overlap``: share of the true top-10% held-out samples found in the predicted top-10%

``calibration_slope``: whether propagated scores are on the exact scores' scale (slope about 1),
which decides how a top-k mixes exact landmark scores with propagated ones.

Without target gradients (pool-side, task-independent choice) the targets are pseudo-targets:
means of random groups of training-fold landmark gradients. Single pool gradients are nearly
orthogonal to each other at this scale (pairwise cosine ~0.03 on SmolLM2-135M), so one of them
is a target with almost nothing to predict; a real target set (8 GSM8K exemplars, say) shares a
direction, and so does a group mean.

A setting with ``direct=True`` adds the linear part of ``landmarks.DirectTerm`` to the score
regression (gradient proxies only); a pseudo-target's embedding is then its group's mean embedding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy.stats import spearmanr

from infdist_core.data.seeding import derive_seed
from infdist_core.maths.landmarks import DirectTerm, krr_fit
from infdist_core.maths.preconditioning import unit_rows


@dataclass(frozen=True)
class KernelSetting:
    bandwidth_scale: float = 1.0
    damping: float = 0.01
    center: bool = True
    direct: bool = False


DEFAULT_SETTINGS = (KernelSetting(), KernelSetting(center=False), KernelSetting(bandwidth_scale=0.5),
                    KernelSetting(bandwidth_scale=2.0), KernelSetting(damping=0.1))


def settings_for(slices: tuple, base: tuple[KernelSetting, ...] = DEFAULT_SETTINGS) -> tuple[KernelSetting, ...]:
    """``base``, plus each with the direct term when the embedding has gradient parts."""
    if not slices:
        return base
    return tuple(dict.fromkeys((*base, *(replace(s, direct=True) for s in base))))


def _pseudo_targets(G_train: np.ndarray, count: int, rng: np.random.Generator, group: int = 8):
    """``count`` unit-norm means of random groups of ``group`` training-fold gradients, and the groups."""
    size = min(group, len(G_train))
    groups = [rng.choice(len(G_train), size, replace=False) for _ in range(count)]
    T = np.stack([G_train[g].mean(0) for g in groups])
    return unit_rows(T), groups


def _spearman_cols(pred: np.ndarray, true: np.ndarray) -> float:
    vals = []
    for j in range(true.shape[1]):
        if np.ptp(true[:, j]) == 0 or np.ptp(pred[:, j]) == 0:
            vals.append(0.0)
        else:
            vals.append(float(spearmanr(pred[:, j], true[:, j]).statistic))
    return float(np.mean(vals))


def _top_overlap(pred: np.ndarray, true: np.ndarray, frac: float = 0.1) -> float:
    m = max(1, int(round(frac * len(true))))
    vals = [len(set(np.argsort(-pred[:, j])[:m]) & set(np.argsort(-true[:, j])[:m])) / m for j in range(true.shape[1])]
    return float(np.mean(vals))


def _rowcos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    return float(np.mean((a * b).sum(1) / np.maximum(na * nb, 1e-30)))


def calibration_slope(E: np.ndarray, P: np.ndarray, setting: KernelSetting, splits: int = 30, seed: int = 0) -> float:
    """Median over ``splits`` random quarters of the landmarks of the least-squares slope of their
    exact scores ``P`` (shape (l,)) on the scores the regression fitted on the other landmarks'
    embeddings ``E`` propagates to them (no direct term). About 1: a propagated score is what the
    sample's exact score is expected to be given its embedding; above 1: the regression shrinks
    too much; below: too little."""
    E, P = np.asarray(E, np.float64), np.asarray(P, np.float64)
    out = max(2, len(P) // 4)
    if len(P) - out < 2:
        raise ValueError(f"{len(P)} landmarks are too few for a calibration slope (need at least {out + 2})")
    rng = np.random.default_rng(derive_seed(seed, "calibration", len(P)))
    slopes = []
    for _ in range(splits):
        perm = rng.permutation(len(P))
        test, train = perm[:out], perm[out:]
        model = krr_fit(E[train], P[train], damping=setting.damping, bandwidth_scale=setting.bandwidth_scale,
                        center=setting.center)
        slopes.append(np.polyfit(model.predict(E[test]).ravel(), P[test], 1)[0])
    return float(np.median(slopes))


def stretch_propagated(scores: np.ndarray, landmarks: np.ndarray, slope: float) -> np.ndarray:
    """Per-target scores (n, t) with the propagated rows stretched by ``slope`` about the
    landmarks' per-target mean, the landmarks' exact rows unchanged: what correcting the
    regression's shrinkage by its ``calibration_slope`` does to the scores."""
    out = np.array(scores, dtype=np.float64)
    rest = np.setdiff1d(np.arange(len(out)), landmarks)
    mean = out[landmarks].mean(0)
    out[rest] = mean + slope * (out[rest] - mean)
    return out


def cross_validate(
    E: np.ndarray,
    G: np.ndarray,
    targets: np.ndarray | None = None,
    settings: tuple[KernelSetting, ...] = (KernelSetting(),),
    holdout: float = 0.25,
    folds: int = 3,
    seed: int = 0,
    n_pseudo_targets: int = 8,
    slices: tuple[tuple[int, int], ...] = (),
    target_embeddings: np.ndarray | None = None,
) -> list[dict]:
    """Held-out quality of propagating landmark influence through embeddings ``E``.

    Parameters
    ----------
    E : array of shape (l, e), proxy embeddings of the landmarks
    G : array of shape (l, d), their (projected, normalised) gradients
    targets : array of shape (t, d), target gradients; None for pseudo-targets
    slices : column ranges of ``E``'s gradient parts (``landmarks.part_slices``), for ``direct`` settings
    target_embeddings : array of shape (t, e), the targets' proxy embeddings, for ``direct`` settings
        with real targets
    """
    E, G = np.asarray(E, np.float64), np.asarray(G, np.float64)
    if len(E) != len(G):
        raise ValueError(f"E has {len(E)} rows but G has {len(G)}")
    l = len(E)
    n_out = max(2, int(round(holdout * l)))
    if l - n_out < 2:
        raise ValueError(f"{l} landmarks are too few to cross-validate (need at least {n_out + 2})")
    if any(s.direct for s in settings):
        if not slices:
            raise ValueError("a direct setting needs the embedding's gradient parts (slices)")
        if targets is not None and (target_embeddings is None or len(target_embeddings) != len(targets)):
            raise ValueError("a direct setting with real targets needs one proxy embedding per target")
    rows = []
    for s in settings:
        acc: dict[str, list[float]] = {"grad_cosine": [], "mean_cosine": [], "spearman": [], "top10_overlap": []}
        for f in range(folds):
            rng = np.random.default_rng(derive_seed(seed, "recovery-fold", f, l))
            perm = rng.permutation(l)
            test, train = perm[:n_out], perm[n_out:]
            if targets is not None:
                T, TE = targets, target_embeddings
            else:
                T, groups = _pseudo_targets(G[train], n_pseudo_targets, rng)
                TE = np.stack([E[train][g].mean(0) for g in groups])
            kw = dict(damping=s.damping, bandwidth_scale=s.bandwidth_scale, center=s.center)
            pred = krr_fit(E[train], np.concatenate([G[train], G[train] @ T.T], axis=1), **kw).predict(E[test])
            g_hat, p_hat = pred[:, : G.shape[1]], pred[:, G.shape[1]:]
            if s.direct:  # the scores again, with the linear part (the gradients never take it)
                direct = DirectTerm(np.asarray(TE, np.float64), slices)
                p_hat = krr_fit(E[train], G[train] @ T.T, direct=direct, **kw).predict(E[test])
            p_true = G[test] @ T.T
            acc["grad_cosine"].append(_rowcos(g_hat, G[test]))
            acc["mean_cosine"].append(_rowcos(np.broadcast_to(G[train].mean(0), G[test].shape), G[test]))
            acc["spearman"].append(_spearman_cols(p_hat, p_true))
            acc["top10_overlap"].append(_top_overlap(p_hat, p_true))
        rows.append({**asdict(s), **{k: float(np.mean(v)) for k, v in acc.items()}, "n_landmarks": l,
                     "n_holdout": n_out, "folds": folds, "pseudo_targets": targets is None})
    return rows


def landmark_report(candidates: dict[str, np.ndarray], G: np.ndarray, targets: np.ndarray, used: KernelSetting,
                    seed: int = 0, sizes: tuple[int, ...] = (16, 32, 64, 128, 256, 512),
                    slices: dict[str, tuple] | None = None,
                    target_embeddings: dict[str, np.ndarray] | None = None) -> list[dict]:
    """Cross-validation rows for every candidate embedding of the landmarks: every kernel setting
    at the full landmark count (each also with the direct term where the candidate has gradient
    parts in ``slices`` and its targets' embeddings are given), and ``used`` at smaller counts
    (quality vs number of landmarks)."""
    l = len(G)
    slices, target_embeddings = slices or {}, target_embeddings or {}
    rows = []
    for spec, E in sorted(candidates.items()):
        sl = slices.get(spec, ()) if spec in target_embeddings else ()
        mine = used if sl else replace(used, direct=False)
        settings = settings_for(sl, tuple(dict.fromkeys((mine, *DEFAULT_SETTINGS))))
        kw = dict(seed=seed, slices=sl, target_embeddings=target_embeddings.get(spec))
        for n in sorted({s for s in (*sizes, l) if 8 <= s <= l}):
            for r in cross_validate(E[:n], G[:n], targets, settings if n == l else (mine,), **kw):
                rows.append({"embedding": spec, **r})
    return rows


def choose_embedding(results: dict[str, dict], costs: dict[str, float], tolerance: float = 0.02,
                     prior: tuple[str, ...] = (), min_spearman: float = 0.1) -> tuple[str, str]:
    """Pick a proxy by held-out Spearman per unit cost.

    Among candidates whose Spearman is within ``tolerance`` of the best, the cheapest wins. When
    no candidate reaches ``min_spearman`` the cross-validation is inconclusive (too few landmarks
    to tell signal from noise), and the first candidate of ``prior`` (an order measured
    beforehand, e.g. by ``benchmarks/bench_recovery.py``) is taken instead.
    ``results`` maps spec -> best cross-validation row; returns (spec, reason).
    """
    if not results:
        raise ValueError("no candidate embeddings to choose from")
    best = max(r["spearman"] for r in results.values())
    summary = ", ".join(f"{s}: rho={r['spearman']:.3f} @ {costs.get(s, float('nan')):.3f}s" for s, r in results.items())
    ranked = [s for s in prior if s in results]
    if best < min_spearman and ranked:
        return ranked[0], (f"cross-validation inconclusive (best held-out Spearman {best:.3f} < {min_spearman}); "
                           f"took {ranked[0]}, first in the measured ranking {list(prior)}. Candidates: {summary}")
    near = [s for s, r in results.items() if r["spearman"] >= best - tolerance]
    pick = min(near, key=lambda s: (costs.get(s, np.inf), s))
    reason = (f"best held-out Spearman {best:.3f}; {pick} is the cheapest within {tolerance} of it "
              f"({results[pick]['spearman']:.3f}, {costs.get(pick, float('nan')):.3f} s/sample). Candidates: {summary}")
    return pick, reason
