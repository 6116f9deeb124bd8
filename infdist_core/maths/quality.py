"""The quality benchmark's verdict (the paper's Table 1 on held-out data): per task, budget k and
method, the held-out loss over selection seeds; per task and k, InfDist's paired difference to
each baseline with an interval that treats seeds and evaluation rows as random
(``statistics.crossed_interval``). A difference is a win only when its interval excludes 0.

Input is one row per (task, method, seed, k, evaluation row) with that row's held-out loss (or,
with ``higher_is_better``, its accuracy), as the ``eval_scores`` assets write them
(``rows.parquet``); the loss on the selection's own targets never enters.

Two further readings, from the same paired seeds x rows model:

- ``gap_closed``: how much of the ceiling's gain over uniform InfDist captures,
  ``(uniform - infdist) / (uniform - grad)``, with Fieller's interval: the set of ratios ``r`` for
  which the crossed interval of ``(U - I) - r (U - G)`` contains 0 (unbounded when the ceiling's
  own gain is not distinguishable from 0).
- ``detectable``: the smallest true difference the run detects with 80% power at the 5% level,
  ``(t_0.975 + t_0.80) * se`` with the crossed model's standard error and degrees of freedom.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from infdist_core.maths.statistics import crossed_interval, t_interval

METHOD = "infdist"
CEILING = "grad"
REFERENCES = (CEILING, "landmarks")
"""Methods compared with uniform too (does any selection pay? do the landmarks alone?)."""


@dataclass
class QualitySummary:
    methods: list[dict] = field(default_factory=list)
    """Per task, k, method: seeds, rows, mean held-out loss and its 95% interval over seeds."""
    differences: list[dict] = field(default_factory=list)
    """Per task, k, method and baseline: InfDist (or a reference row, against uniform) minus the
    baseline, crossed and seed-only intervals, verdict, and the smallest difference the run
    detects (``detectable``)."""
    gaps: list[dict] = field(default_factory=list)
    """Per task and k where uniform and the ceiling (Grad) ran: ``gap_closed`` with its interval."""

    def verdicts(self, baseline: str, k: int | None = None, method: str = METHOD) -> dict[str, str]:
        """task -> 'win' | 'loss' | 'tie' of ``method`` against ``baseline`` (at budget ``k``;
        default the largest)."""
        mine = [d for d in self.differences if d["baseline"] == baseline and d.get("method", METHOD) == method]
        if not mine:
            return {}
        k = max(d["k"] for d in mine) if k is None else k
        return {d["task"]: d["verdict"] for d in mine if d["k"] == k}


def _aligned(cells: dict[int, dict[str, float]], seeds: list[int], row_ids: list[str]) -> np.ndarray:
    return np.array([[cells[s][r] for r in row_ids] for s in seeds])


def detectable(crossed, level: float = 0.95, power: float = 0.8) -> float:
    """The smallest true difference a two-sided test at ``1 - level`` detects with ``power``,
    given the crossed interval of an observed difference (its half-width fixes the standard error)."""
    if not np.isfinite(crossed.df) or not np.isfinite(crossed.high):
        return float("nan")
    t_a = stats.t.ppf(0.5 + level / 2, crossed.df)
    se = (crossed.high - crossed.mean) / t_a
    return float((t_a + stats.t.ppf(power, crossed.df)) * se)


def ratio_interval(A: np.ndarray, B: np.ndarray, level: float = 0.95, limit: float = 20.0,
                   steps: int = 4001) -> tuple[float, float]:
    """Fieller's interval of ``mean(A) / mean(B)`` for paired (seeds, rows) matrices under the
    crossed model: the ratios ``r`` whose ``A - r B`` has a crossed interval containing 0, on a
    grid over [-limit, limit]. Unbounded (an end at the grid's edge, or two rays, i.e. the
    denominator not distinguishable from 0) is reported as -inf / +inf; nan when no ratio in the
    grid is accepted."""
    def accepted(r: float) -> bool:
        c = crossed_interval(A - r * B, level)
        return bool(c.low <= 0 <= c.high)

    def edge(inside: float, outside: float) -> float:  # bisection to 1e-6 between neighbours
        while abs(outside - inside) > 1e-6:
            mid = (inside + outside) / 2
            inside, outside = (mid, outside) if accepted(mid) else (inside, mid)
        return inside

    grid = np.linspace(-limit, limit, steps)
    where = np.flatnonzero([accepted(r) for r in grid])
    if not len(where):
        return float("nan"), float("nan")
    if where[-1] - where[0] + 1 != len(where):  # two rays: the complement of an interval
        return -np.inf, np.inf
    lo = -np.inf if where[0] == 0 else edge(grid[where[0]], grid[where[0] - 1])
    hi = np.inf if where[-1] == steps - 1 else edge(grid[where[-1]], grid[where[-1] + 1])
    return float(lo), float(hi)


def summarize(task: list[str], method: list[str], seed: list[int], k: list[int], row_id: list[str], loss: list[float],
              baselines: tuple[str, ...] = ("uniform", "rds"), level: float = 0.95,
              higher_is_better: bool = False) -> QualitySummary:
    """Means, intervals and paired differences from per-row held-out losses (equal-length lists);
    with ``higher_is_better`` the values are accuracies and a win is a difference above 0.

    Differences pair InfDist and a baseline on the seeds both have and the rows both scored."""
    cells: dict[tuple, dict[int, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for t, m, s, kk, r, v in zip(task, method, seed, k, row_id, loss):
        cells[(t, int(kk), m)][int(s)][str(r)] = float(v)
    out = QualitySummary()
    for (t, kk, m), by_seed in sorted(cells.items()):
        per_seed = np.array([np.mean(list(rows.values())) for _, rows in sorted(by_seed.items())])
        ci = t_interval(per_seed, level)
        out.methods.append({"task": t, "k": kk, "method": m, "seeds": len(per_seed),
                            "rows": int(np.mean([len(r) for r in by_seed.values()])), "heldout_loss": ci.mean,
                            "low": ci.low, "high": ci.high})
    for (t, kk, m), ours in sorted(cells.items()):
        if m != METHOD and m not in REFERENCES:
            continue  # InfDist against every baseline; the reference rows against uniform
        for b in (baselines if m == METHOD else ("uniform",)):
            theirs = cells.get((t, kk, b))
            if not theirs:
                continue
            seeds = sorted(set(ours) & set(theirs))
            if not seeds:
                continue
            row_ids = sorted(set.intersection(*(set(ours[s]) & set(theirs[s]) for s in seeds)))
            if not row_ids:
                continue
            D = _aligned(ours, seeds, row_ids) - _aligned(theirs, seeds, row_ids)
            crossed = crossed_interval(D, level)
            by_seed = t_interval(D.mean(1), level)
            better, worse = (crossed.low > 0, crossed.high < 0) if higher_is_better else (crossed.high < 0, crossed.low > 0)
            verdict = "win" if better else "loss" if worse else "tie"
            out.differences.append({"task": t, "k": kk, "method": m, "baseline": b, "seeds": len(seeds), "rows": len(row_ids),
                                    "delta": crossed.mean, "low": crossed.low, "high": crossed.high, "df": crossed.df,
                                    "seed_low": by_seed.low, "seed_high": by_seed.high, "verdict": verdict,
                                    "detectable": detectable(crossed, level)})
    for (t, kk, m), ours in sorted(cells.items()):
        uni, top = cells.get((t, kk, "uniform")), cells.get((t, kk, CEILING))
        if m != METHOD or not uni or not top:
            continue
        seeds = sorted(set(ours) & set(uni) & set(top))
        row_ids = sorted(set.intersection(*(set(ours[s]) & set(uni[s]) & set(top[s]) for s in seeds))) if seeds else []
        if not row_ids:
            continue
        I, U, G = (_aligned(c, seeds, row_ids) for c in (ours, uni, top))
        A, B = U - I, U - G  # InfDist's gain and the ceiling's gain over uniform (a loss: lower is better)
        if higher_is_better:
            A, B = -A, -B
        lo, hi = ratio_interval(A, B, level)
        out.gaps.append({"task": t, "k": kk, "seeds": len(seeds), "rows": len(row_ids), "infdist_gain": float(A.mean()),
                         "grad_gain": float(B.mean()), "gap_closed": float(A.mean() / B.mean()) if B.mean() else float("nan"),
                         "low": lo, "high": hi})
    return out
