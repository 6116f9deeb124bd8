"""Core-maths benchmark: projection vs memcpy, and the solver / KRR / round-robin at paper scale.

Prints a table, then one JSON line. Sizes are the paper's defaults (n = 200,000 pool samples,
l = 4,096 landmarks, t = 500 targets, k = 10,000); ``--embed-dim`` sets the proxy width.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from infdist_core.maths.landmarks import krr_fit
from infdist_core.maths.projection import HadamardProjector
from infdist_core.maths.selection import round_robin
from infdist_core.maths.weights import robust_weights


def best_of(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure_projection(log2: int, out_dim: int, result: dict) -> None:
    x = torch.randn(1 << log2)
    y = torch.empty_like(x)
    proj = HadamardProjector(1 << log2, min(out_dim, 1 << log2), seed=0)
    t_copy = best_of(lambda: y.copy_(x))
    t_proj = best_of(lambda: proj(x))
    # the signed load (x * signs into the workspace) replaces the copy that flattening
    # per-parameter gradients needs anyway (HadamardProjector.project_parts)
    t_load = best_of(lambda: torch.mul(x, proj.signs, out=y))
    ratio = t_proj / t_copy
    result[f"projection_over_memcpy_2^{log2}"] = round(ratio, 3)
    result[f"transform_beyond_load_over_memcpy_2^{log2}"] = round((t_proj - t_load) / t_copy, 3)
    print(f"{log2:>7} {t_copy:>10.4f} {t_proj:>10.4f} {ratio:>7.2f} {(t_proj - t_load) / t_copy:>19.2f}   backend={proj.backend}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--landmarks", type=int, default=4096)
    ap.add_argument("--targets", type=int, default=500)
    ap.add_argument("--k", type=int, default=10_000)
    ap.add_argument("--embed-dim", type=int, default=512)
    ap.add_argument("--out-dim", type=int, default=8192)
    ap.add_argument("--max-log2", type=int, default=27)
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch threads: {torch.get_num_threads()}")
    result: dict[str, float] = {}
    print(f"{'log2 n':>7} {'memcpy s':>10} {'project s':>10} {'ratio':>7} {'beyond signed load':>19}")
    for log2 in range(20, args.max_log2 + 1):
        measure_projection(log2, args.out_dim, result)
    result["projection_over_memcpy"] = result[f"projection_over_memcpy_2^{args.max_log2}"]
    result["transform_beyond_load_over_memcpy"] = result[f"transform_beyond_load_over_memcpy_2^{args.max_log2}"]

    rng = np.random.default_rng(0)
    n, l, t, k = args.n, args.landmarks, args.targets, args.k
    E = rng.standard_normal((n, args.embed_dim)).astype(np.float32)
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    lm = rng.choice(n, l, replace=False)
    P_L = rng.standard_normal((l, t))
    t0 = time.perf_counter()
    model = krr_fit(E[lm], P_L, damping=0.01)
    P_hat = model.predict(E)
    result["krr_seconds"] = time.perf_counter() - t0
    print(f"KRR: n={n} l={l} t={t} e={args.embed_dim}: {result['krr_seconds']:.2f} s")

    t0 = time.perf_counter()
    robust_weights(P_hat.mean(1), k=k)
    result["solver_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for j in range(t):
        robust_weights(P_hat[:, j], k=max(1, k // t))
    result["solver_per_target_seconds"] = time.perf_counter() - t0
    print(f"robust weights, mean target, exact k={k}: {result['solver_seconds']:.3f} s; all {t} targets: {result['solver_per_target_seconds']:.2f} s")

    t0 = time.perf_counter()
    picks = round_robin(P_hat, k, seed=0)
    result["round_robin_seconds"] = time.perf_counter() - t0
    assert len(set(picks)) == k
    print(f"round robin: k={k} from n={n}, t={t}: {result['round_robin_seconds']:.2f} s")
    print(json.dumps({key: round(v, 4) for key, v in result.items()}))


if __name__ == "__main__":
    main()
