"""The quality benchmark's verdict (the paper's Table 1 on held-out data): per task, budget k and
method, the held-out loss over selection seeds; per task and k, InfDist's paired difference to
each baseline with an interval that treats seeds and evaluation rows as random
(``statistics.crossed_interval``). A difference is a win only when its interval excludes 0.

Input is one row per (task, method, seed, k, evaluation row) with that row's held-out loss, as
the ``eval_scores`` assets write them (``rows.parquet``); the loss on the selection's own
targets never enters.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from infdist_core.statistics import crossed_interval, t_interval

METHOD = "infdist"


@dataclass
class QualitySummary:
    methods: list[dict] = field(default_factory=list)
    """Per task, k, method: seeds, rows, mean held-out loss and its 95% interval over seeds."""
    differences: list[dict] = field(default_factory=list)
    """Per task, k, baseline: InfDist - baseline held-out loss, crossed and seed-only intervals, verdict."""

    def verdicts(self, baseline: str, k: int | None = None) -> dict[str, str]:
        """task -> 'win' | 'loss' | 'tie' against ``baseline`` (at budget ``k``; default the largest)."""
        ks = [d["k"] for d in self.differences if d["baseline"] == baseline]
        if not ks:
            return {}
        k = max(ks) if k is None else k
        return {d["task"]: d["verdict"] for d in self.differences if d["baseline"] == baseline and d["k"] == k}


def _aligned(cells: dict[int, dict[str, float]], seeds: list[int], row_ids: list[str]) -> np.ndarray:
    return np.array([[cells[s][r] for r in row_ids] for s in seeds])


def summarize(task: list[str], method: list[str], seed: list[int], k: list[int], row_id: list[str], loss: list[float],
              baselines: tuple[str, ...] = ("uniform", "rds"), level: float = 0.95) -> QualitySummary:
    """Means, intervals and paired differences from per-row held-out losses (equal-length lists).

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
        if m != METHOD:
            continue
        for b in baselines:
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
            verdict = "win" if crossed.high < 0 else "loss" if crossed.low > 0 else "tie"
            out.differences.append({"task": t, "k": kk, "baseline": b, "seeds": len(seeds), "rows": len(row_ids),
                                    "delta": crossed.mean, "low": crossed.low, "high": crossed.high, "df": crossed.df,
                                    "seed_low": by_seed.low, "seed_high": by_seed.high, "verdict": verdict})
    return out
