"""The quality benchmark: does InfDist's selection beat uniform and RDS+ on held-out data, and how
much of the ceiling's gain does it capture?

The paper's Table 1 on the embedded default (SmolLM2-135M-Instruct, 600-sample ShareGPT pool),
through the asset graph: for each selection seed and budget k, the pool side (once per seed;
the pool sample, warm-up, proxy rows and the true pool gradients are shared by every seed), then
per task every method's selection -> fine-tune -> held-out loss on ``heldout_rows`` evaluation
rows disjoint from the task's targets (choice tasks: also acc / acc_norm on the same rows), then
``quality_report`` (means, 95% intervals over seeds, paired differences with intervals over seeds
and rows, a win only when the interval excludes 0, the smallest difference detectable at 80%
power, and ``gap_closed = (uniform - infdist) / (uniform - grad)`` with Fieller's interval).

Methods: InfDist, uniform, RDS+, and two ceiling rows: Grad (InfDist with exact scores: every pool
sample's true gradient, the same weights and round-robin) and full (the whole pool); on request
mid_ppl and ``landmarks`` (InfDist without the propagation: the same rule over the landmarks' exact
scores only). Also printed: the shipped policy's landmark recovery measured on the non-landmark
samples against the exact scores (``spearman_l64``), and how many of InfDist's picks are
landmarks (``infdist_picks_from_landmarks``, against ``landmark_share_of_pool``).

Resumable: an artefact already materialised with the same settings is not recomputed, so a run
that was stopped, or one with more seeds, tasks or budgets, continues where the last one ended.
The defaults (4 tasks x 5 methods x 5 seeds, k = 30) take several hours on 2 CPU cores:
``--budget-minutes`` (80) starts no new run after that long, so one invocation ends within
90 minutes; the same command then continues (the JSON says ``"complete": false`` until done).
Runs are recorded in ``<data>/dagster_home`` (``make ui`` shows them). Prints the tables; last
line JSON (``tasks``, ``seeds``, ``wins_vs_uniform``, ``losses_vs_uniform``, ``wins_vs_rds``,
``losses_vs_rds``, ``gap_closed_vs_grad``, ``grad_vs_uniform``, ``spearman_l64``,
``infdist_picks_from_landmarks``, ``landmarks_vs_uniform``, ``infdist_vs_landmarks``,
``detectable_vs_uniform``, ``acc_wins_vs_uniform``, ``mean_delta_heldout_loss_vs_uniform``,
``selection_seconds_infdist_over_rds`` from the lineage timings of this data root, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def selection_seconds(con, model: str, task: str, seed: int, k: int) -> dict[str, tuple[float, float]]:
    """Per method, the seconds its selection took (with and without the warm-up) for one task, seed
    and budget, from the catalog's ``selection_cost`` (the stages each method needs are read off
    the asset graph). Give the first seed: later seeds reuse the pool sample, warm-up and proxy rows."""
    rows = con.execute("SELECT method, seconds, seconds_without_warmup FROM selection_cost "
                       "WHERE model = ? AND task = ? AND seed = ? AND k = ?", [model, task, seed, k]).fetchall()
    return {m: (float(a), float(b)) for m, a, b in rows}


def link_pool_side(src: Path, dst: Path, model: str) -> None:
    """Hard-link ``src``'s model-side artefacts (and target gradients) for ``model`` into ``dst``."""
    from infdist_assets.store.step import MODEL_SIDE_ASSETS

    for asset in sorted(MODEL_SIDE_ASSETS | {"target_gradients"}):
        for f in (src / "assets" / asset / model).rglob("*"):
            out = dst / f.relative_to(src)
            if f.is_file() and not out.exists():
                out.parent.mkdir(parents=True, exist_ok=True)
                os.link(f, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tasks", nargs="+", default=["gsm8k", "mmlu", "humaneval", "bbh"])
    ap.add_argument("--methods", nargs="+", default=["infdist", "uniform", "rds", "grad", "full"],
                    help="grad: InfDist with exact scores (true gradients of every pool sample, computed once per "
                         "model); full: the whole pool (trained once per seed, shared by every task); mid_ppl and landmarks "
                         "(the landmarks' exact scores alone) on request")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--k", nargs="+", type=int, default=[30], help="budgets (a second one spans a longer run)")
    ap.add_argument("--heldout-rows", type=int, default=200)
    ap.add_argument("--task-metrics", action="store_true", help="also compute the task metrics (slow generation)")
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="other SelectionConfig settings (JSON values)")
    ap.add_argument("--budget-minutes", type=float, default=80.0,
                    help="start no new run after this many minutes (the rest is left for the next invocation, which "
                         "resumes); 0 = no limit")
    ap.add_argument("--report-only", action="store_true",
                    help="compute nothing: summarise what is materialised for these tasks, methods, seeds and budgets")
    ap.add_argument("--reuse-pool-from", type=Path, default=None, metavar="DATA",
                    help="hard-link another data root's model-side artefacts (pool, warm-up, landmarks, embeddings, "
                         "baselines' inputs) and target gradients into --data first: a lever that changes only the "
                         "target side or training then costs only those (artefacts made with other settings are "
                         "still refused and recomputed)")
    args = ap.parse_args()
    if args.reuse_pool_from:
        link_pool_side(args.reuse_pool_from.resolve(), Path(args.data).resolve(), args.model)

    from infdist_assets.operations.demo import use_data_root

    data = use_data_root(args.data)
    import dagster as dg
    import pyarrow as pa
    import pyarrow.compute as pc

    from infdist_assets.assets.benchmark import (BenchmarkPlan, headline, landmark_picks, read_rows, run_benchmark,
                                                 summaries, summary_markdown, true_recovery)
    from infdist_assets.definitions import defs
    from infdist_assets.resources import SelectionSettings
    from infdist_assets.store.catalog import connect_readonly
    from infdist_core.config import SelectionConfig

    settings = {"heldout_rows": args.heldout_rows, "task_metrics": args.task_metrics}
    for item in args.set:
        field, value = item.split("=", 1)
        settings[field] = json.loads(value)
    unavailable = {t: why for t, why in defs.resources["store"].registry().unavailable.items() if t in args.tasks}
    for task, why in unavailable.items():
        print(f"[bench_quality] skipping task {task!r}, unavailable: {why}", flush=True)
    args.tasks = [t for t in args.tasks if t not in unavailable]
    if not args.tasks:
        raise SystemExit("[bench_quality] no task left to run: every requested task is unavailable (above)")
    plan = BenchmarkPlan(args.model, args.tasks, args.seeds, args.k, tuple(args.methods), settings)
    t0 = time.time()
    complete = True
    if not args.report_only:
        deadline = t0 + 60 * args.budget_minutes if args.budget_minutes > 0 else None
        with dg.DagsterInstance.get() as instance:
            complete = run_benchmark(defs, plan, instance, defs.resources["store"], SelectionSettings,
                                     deadline=deadline).complete
    wall = time.time() - t0

    con = connect_readonly(data / "infdist.duckdb")
    secs = selection_seconds(con, args.model, args.tasks[0], args.seeds[0], args.k[0])
    con.close()
    rows = read_rows(data)
    keep = pc.and_(pc.and_(pc.is_in(rows.column("task"), pa.array(args.tasks)),
                           pc.is_in(rows.column("method"), pa.array(list(plan.methods)))),
                   pc.and_(pc.is_in(rows.column("seed"), pa.array(args.seeds, pa.int64())),
                           pc.is_in(rows.column("k"), pa.array(args.k, pa.int64()))))
    by_metric = summaries(rows.filter(pc.and_(keep, pc.equal(rows.column("model"), args.model))))
    s = by_metric.pop("loss")
    print(summary_markdown(s, by_metric))
    recovery = {(t, seed): true_recovery(data, args.model, t, SelectionConfig.of(**{**settings, "seed": seed, "k": max(args.k)}))
                for t in args.tasks for seed in args.seeds}
    measured = [v for v in recovery.values() if v is not None]
    n_landmarks = SelectionConfig.of(**settings).pool.n_landmarks
    print(f"\nLandmark recovery of the shipped policy on non-landmark samples (Spearman of InfDist's mean-target scores "
          f"with the exact ones, {n_landmarks} landmarks): " +
          (", ".join(f"{t} seed {sd}: {v:.3f}" for (t, sd), v in sorted(recovery.items()) if v is not None)
           or "not measured (it needs the grad method's true gradients of every pool sample)"))
    picks = {(t, seed): landmark_picks(data, args.model, t, SelectionConfig.of(**{**settings, "seed": seed, "k": max(args.k)}))
             for t in args.tasks for seed in args.seeds}
    picks = {key: v for key, v in picks.items() if v is not None}
    if picks:
        print("InfDist's picks that are landmarks (exact scores; the rest propagated), against the landmarks' share of "
              "the pool: " + ", ".join(f"{t} seed {sd}: {a}/{b}" for (t, sd), (a, b, _) in sorted(picks.items())) +
              f" (landmarks are {next(iter(picks.values()))[2]:.0%} of the pool)")
    infdist_s, infdist_nowarm = secs.get("infdist", (0.0, 0.0))
    rds_s = secs["rds"][0] if "rds" in secs else None  # None: RDS+ was not run
    out = headline(s, args.tasks, args.seeds)
    for metric, a in by_metric.items():
        out[f"{metric}_wins_vs_uniform"] = sum(v == "win" for v in a.verdicts("uniform").values())
        out[f"{metric}_losses_vs_uniform"] = sum(v == "loss" for v in a.verdicts("uniform").values())
    out.update({f"spearman_l{n_landmarks}": float(np.mean(measured)) if measured else None,
                "infdist_picks_from_landmarks": float(np.mean([a / b for a, b, _ in picks.values()])) if picks else None,
                "landmark_share_of_pool": next(iter(picks.values()))[2] if picks else None,
                "unavailable_tasks": unavailable, "complete": complete, "ks": args.k, "methods": list(plan.methods), "heldout_rows": args.heldout_rows,
                "selection_seconds_infdist": round(infdist_s, 1), "selection_seconds_rds": round(rds_s, 1) if rds_s else None,
                "selection_seconds_infdist_over_rds": round(infdist_s / rds_s, 3) if rds_s else None,
                "selection_seconds_infdist_over_rds_without_warmup": round(infdist_nowarm / rds_s, 3) if rds_s else None,
                "wall_seconds_this_run": round(wall, 1)})
    print(f"\n(selection seconds for {args.tasks[0]}, seed {args.seeds[0]}, k={args.k[0]}, summed over the assets each "
          f"method needs before fine-tuning: InfDist {infdist_s:.0f} s ({infdist_nowarm:.0f} s without the warm-up), "
          + (f"RDS+ {rds_s:.0f} s)" if rds_s else "RDS+ not run)"))
    print(json.dumps(out, default=lambda v: None if isinstance(v, float) and not np.isfinite(v) else v))


if __name__ == "__main__":
    main()
