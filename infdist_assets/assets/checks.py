"""Asset checks, evaluated with each materialisation (so they work per partition). Blocking
checks stop downstream assets when they fail."""

from __future__ import annotations

import dagster as dg
import numpy as np


def spec(name: str, asset: str | list[str], description: str, blocking: bool = True) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(name, asset=dg.AssetKey(asset if isinstance(asset, list) else [asset]),
                             description=description, blocking=blocking)


def finite_matrix(name: str, X: np.ndarray, rows: int | None = None, dim: int | None = None) -> dg.AssetCheckResult:
    problems = []
    if not np.isfinite(X).all():
        problems.append(f"{int((~np.isfinite(X)).sum())} non-finite values")
    if rows is not None and X.shape[0] != rows:
        problems.append(f"{X.shape[0]} rows, configured {rows}")
    if dim is not None and X.shape[1] != dim:
        problems.append(f"dimension {X.shape[1]}, configured {dim}")
    return dg.AssetCheckResult(check_name=name, passed=not problems,
                               metadata={"rows": int(X.shape[0]), "dim": int(X.shape[1]), "problems": "; ".join(problems) or "none"})


def weights_valid(w: np.ndarray, n: int, k: int) -> dg.AssetCheckResult:
    nnz = int((w > 0).sum())
    ok = bool((w >= 0).all()) and abs(float(w.sum()) - n) <= 1e-6 * n and nnz == k
    return dg.AssetCheckResult(check_name="weights_valid", passed=ok,
                               metadata={"min": float(w.min()), "sum": float(w.sum()), "expected_sum": n,
                                         "nonzero": nnz, "k": k})


def selection_valid(idx: np.ndarray, k: int, n: int) -> dg.AssetCheckResult:
    ok = len(idx) == k and len(set(idx.tolist())) == k and bool(((idx >= 0) & (idx < n)).all())
    return dg.AssetCheckResult(check_name="exactly_k_distinct", passed=ok,
                               metadata={"selected": len(idx), "distinct": len(set(idx.tolist())), "k": k})


def beats_mean_landmark(grad_cosine: float, mean_cosine: float, spearman: float) -> dg.AssetCheckResult:
    ok = grad_cosine > mean_cosine
    return dg.AssetCheckResult(
        check_name="beats_mean_landmark", passed=bool(ok), severity=dg.AssetCheckSeverity.WARN,
        description=None if ok else "the propagated gradients are no closer to the truth than the mean landmark gradient",
        metadata={"grad_cosine": grad_cosine, "mean_landmark_cosine": mean_cosine, "spearman": spearman})
