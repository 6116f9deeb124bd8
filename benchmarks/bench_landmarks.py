"""Which landmarks recover InfDist's scores best, at the same count? Uniform draws (the paper's),
k-centre on the proxy rows, and ridge-leverage sampling (``infdist_core.maths.landmarks``).

Reads a data root where ``bench_quality.py`` ran with Grad (so every pool sample's true projected
gradient, ``pool_gradients``, exists beside the proxy rows, ``pool_embeddings``, and each task's
target gradients and target proxy rows): the exact scores are known, so each policy's landmarks
can be scored against them without computing anything but the regression. For each task,
policy and draw (``--draws`` seeds), the shipped target side runs as the pipeline runs it
(``fit_landmark_regression``: kernel setting by landmark cross-validation; ``score_targets``: the
direct term decided per task), and the Spearman of the mean-target scores with the exact ones is
taken over the samples that are not landmarks. Seconds: the policy's own choice time.

Last line JSON: ``spearman`` (policy -> task -> mean over draws), ``mean`` (policy -> mean over
tasks), ``best``, ``n_landmarks``, ``draws``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from scipy import stats


def load(root: Path, model: str, task: str, cfg):
    from infdist_assets.store import storage
    from infdist_assets.store.artefacts import TargetEmbeddings
    from infdist_assets.store.step import artefact_path

    emb_path = artefact_path(root, "pool_embeddings", model, cfg)
    spec = storage.read_meta(emb_path)["embedding"]
    E = storage.column_matrix(pq.read_table(emb_path), "embedding").astype(np.float64)
    G = storage.column_matrix(pq.read_table(artefact_path(root, "pool_gradients", model, cfg)), "gradient").astype(np.float64)
    part = f"{model}|{task}"
    T = storage.column_matrix(pq.read_table(artefact_path(root, "target_gradients", part, cfg)), "gradient").astype(np.float64)
    te = TargetEmbeddings.from_table(pq.read_table(artefact_path(root, "target_gradients", part, cfg, TargetEmbeddings.NAME)))
    return E, G, T, te.direct_term(spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data", type=Path, help="a data root where bench_quality.py ran with grad")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tasks", nargs="+", default=["gsm8k", "mmlu", "humaneval"])
    ap.add_argument("--policies", nargs="+", default=["uniform", "kcenter", "leverage"])
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--n-landmarks", type=int, default=64)
    args = ap.parse_args()

    from infdist_core import pipeline
    from infdist_core.config import SelectionConfig
    from infdist_core.maths.landmarks import LANDMARK_POLICIES

    cfg = SelectionConfig.of(n_landmarks=args.n_landmarks)
    table, secs = {}, {}
    for task in args.tasks:
        try:
            E, G, T, direct = load(args.data.resolve(), args.model, task, cfg)
        except Exception as err:  # noqa: BLE001 - a task the quality benchmark did not reach: say so, go on
            print(f"[landmarks] {task}: skipped ({err})", flush=True)
            continue
        exact = (G @ T.T).mean(1)
        for policy in args.policies:
            rhos = []
            for draw in range(args.draws):
                t0 = time.perf_counter()
                idx = LANDMARK_POLICIES[policy](E, args.n_landmarks, draw)
                secs.setdefault(policy, []).append(time.perf_counter() - t0)
                c = cfg.with_(seed=draw)
                reg = pipeline.fit_landmark_regression(E, idx, G[idx], c)
                res, _, _ = pipeline.score_targets(E, idx, G[idx], T, reg, c, direct)
                rest = np.setdiff1d(np.arange(len(E)), idx)
                rhos.append(float(stats.spearmanr(res.scores.mean(1)[rest], exact[rest]).statistic))
            table.setdefault(policy, {})[task] = float(np.mean(rhos))
            print(f"[landmarks] {task} {policy:>8}: Spearman {np.mean(rhos):.3f} (draws {', '.join(f'{r:.3f}' for r in rhos)})",
                  flush=True)
    means = {p: float(np.mean(list(v.values()))) for p, v in table.items() if v}
    print("\n| policy | " + " | ".join(args.tasks) + " | mean | seconds to choose |")
    print("|---|" + "---|" * (len(args.tasks) + 2))
    for p, v in table.items():
        print(f"| {p} | " + " | ".join(f"{v[t]:.3f}" if t in v else "n/a" for t in args.tasks)
              + f" | {means[p]:.3f} | {np.mean(secs[p]):.3f} |")
    print(json.dumps({"n_landmarks": args.n_landmarks, "draws": args.draws, "spearman": table, "mean": means,
                      "best": max(means, key=means.get) if means else None}))


if __name__ == "__main__":
    main()
