"""Confidence intervals for the quality benchmark (paired comparisons of fine-tuned models).

A method's held-out loss is measured for S selection seeds on the same R evaluation rows, so a
difference between two methods is a matrix ``D`` of shape (S, R): seed s, row r. Two sources of
noise make it uncertain: which selection (and training order) the seed gave, and which rows the
evaluation set happens to hold. ``crossed_interval`` treats both as random (a two-way crossed
random-effects model, ``D_sr = mu + a_s + b_r + e_sr``), whose grand mean has variance

    Var(mean) = s2_seed / S + s2_row / R + s2_err / (S R)

with the components from the ANOVA mean squares (``E[MS_seed] = R s2_seed + s2_err``,
``E[MS_row] = S s2_row + s2_err``, ``E[MS_err] = s2_err``; negative estimates set to 0) and
Satterthwaite's degrees of freedom. With one seed it is the paired t interval over rows; with
one row, the paired t interval over seeds (``t_interval``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    df: float
    """Degrees of freedom of the t quantile (nan: no interval from one value)."""

    @property
    def excludes_zero(self) -> bool:
        return bool(self.low > 0 or self.high < 0)


def t_interval(x: np.ndarray, level: float = 0.95) -> Interval:
    """Student-t interval of the mean of ``x`` (shape (n,)); [mean, mean] with df nan when n < 2."""
    x = np.asarray(x, np.float64).ravel()
    if x.size == 0:
        raise ValueError("t_interval of no values")
    m = float(x.mean())
    if x.size < 2:
        return Interval(m, float("nan"), float("nan"), float("nan"))
    half = stats.t.ppf(0.5 + level / 2, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return Interval(m, m - half, m + half, float(x.size - 1))


def crossed_interval(D: np.ndarray, level: float = 0.95) -> Interval:
    """Interval of the grand mean of ``D`` (shape (seeds, rows)) with seeds and rows both random."""
    D = np.asarray(D, np.float64)
    if D.ndim != 2 or D.size == 0 or not np.isfinite(D).all():
        raise ValueError(f"crossed_interval needs a finite (seeds, rows) matrix, got shape {D.shape}")
    S, R = D.shape
    if S == 1:
        return t_interval(D[0], level)
    if R == 1:
        return t_interval(D[:, 0], level)
    m = D.mean()
    seed_means, row_means = D.mean(1), D.mean(0)
    ms_seed = R * ((seed_means - m) ** 2).sum() / (S - 1)
    ms_row = S * ((row_means - m) ** 2).sum() / (R - 1)
    resid = D - seed_means[:, None] - row_means[None, :] + m
    ms_err = (resid**2).sum() / ((S - 1) * (R - 1))
    # Var = c_seed MS_seed + c_row MS_row + c_err MS_err, each component floored at 0
    c_seed = 1.0 / (S * R) if ms_seed > ms_err else 0.0
    c_row = 1.0 / (S * R) if ms_row > ms_err else 0.0
    c_err = (1.0 - (c_seed > 0) - (c_row > 0)) / (S * R)
    terms = [(c_seed, ms_seed, S - 1), (c_row, ms_row, R - 1), (c_err, ms_err, (S - 1) * (R - 1))]
    var = sum(c * ms for c, ms, _ in terms)
    if var <= 0:
        return Interval(float(m), float(m), float(m), float("inf"))
    df = var**2 / sum((c * ms) ** 2 / d for c, ms, d in terms if c != 0)
    half = stats.t.ppf(0.5 + level / 2, df) * np.sqrt(var)
    return Interval(float(m), float(m - half), float(m + half), float(df))
