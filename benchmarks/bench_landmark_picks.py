"""Where do InfDist's picks come from, and are the propagated scores calibrated?

Reads a data root where selections were made (``bench_quality.py`` or the selection job) and,
for every stored InfDist selection (task x seed at budget ``--k``):

- how many of its picks are landmarks (exact scores) against the landmarks' share of the pool;
- the spread of the propagated mean-target scores relative to the landmarks' exact ones;
- calibration (``recovery.calibration_slope``): on held-out landmarks (a random quarter left out,
  ``--splits`` splits, the kernel setting the selection used), the slope of the exact mean-target
  score regressed on the propagated one. About 1: a propagated score is what the sample's exact score is expected to be
  given its proxy row, so a top-k drawn mostly from the landmarks is the right call, not a
  scaling fault. Computes nothing but the regression; seconds on a CPU.

Last line JSON: ``selections`` (one object per task and seed), ``picks_from_landmarks`` and
``landmark_share_of_pool`` (means), ``median_calibration_slope``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--k", type=int, default=30)
    ap.add_argument("--splits", type=int, default=30)
    args = ap.parse_args()

    from infdist_assets.assets.benchmark import landmark_picks
    from infdist_assets.store import storage
    from infdist_assets.store.step import artefact_path, stale_upstream
    from infdist_core.config import SelectionConfig
    from infdist_core.maths.influence import landmark_scores
    from infdist_core.maths.recovery import KernelSetting, calibration_slope

    rows = []
    for weights_path in sorted((args.data / "assets").glob(f"per_target_weights/{args.model}/*/seed=*/k={args.k}/data.parquet")):
        task = weights_path.parts[-4]
        meta = storage.read_meta(weights_path)
        cfg = SelectionConfig.of(**meta["config"])  # the settings the selection was made with
        picked = landmark_picks(args.data, args.model, task, cfg)
        if picked is None:
            continue
        if stale_upstream(args.data, meta, cfg) is not None:
            print(f"{task} seed={cfg.selection.seed}: skipped, its inputs have been re-made since (other settings)", flush=True)
            continue
        path = {a: artefact_path(args.data, a, args.model, cfg) for a in ("pool_embeddings", "landmark_gradients",
                                                                          "krr_coefficients")}
        w = pq.read_table(weights_path, columns=["is_landmark", "mean_score"])
        is_landmark = w.column("is_landmark").to_numpy(False)
        mean = w.column("mean_score").to_numpy()
        lg = pq.read_table(path["landmark_gradients"])
        valid = lg.column("valid").to_numpy(False)
        idx = lg.column("pool_index").to_numpy()[valid]
        G = storage.column_matrix(lg, "gradient")[valid]
        T = storage.column_matrix(pq.read_table(artefact_path(args.data, "target_gradients", f"{args.model}|{task}", cfg)),
                                  "gradient")
        E = storage.column_matrix(pq.read_table(path["pool_embeddings"]), "embedding").astype(np.float64)
        kernel = storage.read_meta(path["krr_coefficients"])["kernel"]
        row = {"task": task, "seed": cfg.selection.seed, "landmarks": len(idx), "picks": picked[1],
               "picks_from_landmarks": picked[0], "landmark_share_of_pool": picked[2],
               "spread_propagated_over_exact": float(mean[~is_landmark].std() / mean[is_landmark].std()),
               "calibration_slope": calibration_slope(E[idx], landmark_scores(G, T).mean(1), KernelSetting(
                   kernel["bandwidth_scale"], kernel["damping"], kernel["center"]), args.splits)}
        rows.append(row)
        print(f"{task} seed={row['seed']}: {row['picks_from_landmarks']}/{row['picks']} picks are landmarks "
              f"({row['landmarks']} landmarks, {row['landmark_share_of_pool']:.0%} of the pool); spread of propagated / "
              f"exact scores {row['spread_propagated_over_exact']:.2f}; calibration slope {row['calibration_slope']:.2f}",
              flush=True)
    if not rows:
        raise SystemExit(f"no InfDist selection at k={args.k} with its pool side under {args.data / 'assets'}")
    print(json.dumps({"selections": rows, "k": args.k, "splits": args.splits,
                      "picks_from_landmarks": float(np.mean([r["picks_from_landmarks"] / r["picks"] for r in rows])),
                      "landmark_share_of_pool": float(np.mean([r["landmark_share_of_pool"] for r in rows])),
                      "median_calibration_slope": float(np.median([r["calibration_slope"] for r in rows]))}))


if __name__ == "__main__":
    main()
