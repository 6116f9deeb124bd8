"""`make demo`: the default job end to end for one partition (smollm2-135m x gsm8k), recorded in
the Dagster instance under <data>/dagster_home so that `make ui` shows the runs."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import dagster as dg

from infdist_core.methods import DEFAULT_METHODS
from infdist_assets.automation import POOL_SIDE_DEFAULT, TARGET_SIDE_DEFAULT


def run_partition(defs: dg.Definitions, model: str, task: str, instance: dg.DagsterInstance,
                  methods: tuple[str, ...] = DEFAULT_METHODS, resources: dict | None = None) -> list[dg.ExecuteInProcessResult]:
    """Materialise the pool side for ``model`` (skipping nothing), then the target side for ``model x task``."""
    assets = list(defs.assets)
    res = resources or dict(defs.resources)
    pool = dg.materialize(assets, selection=POOL_SIDE_DEFAULT, partition_key=model, instance=instance, resources=res)
    target_keys = TARGET_SIDE_DEFAULT + [f"{m}/{a}" for m in methods for a in ("selected_subset", "fine_tuned_model", "eval_scores")]
    target = dg.materialize(assets, selection=target_keys, instance=instance, resources=res,
                            partition_key=dg.MultiPartitionKey({"model": model, "task": task}))
    return [pool, target]


def up_to_date_run(catalog: Path, settings, model: str, task: str) -> str | None:
    """The run id of the last InfDist eval for this partition if made with these settings and code."""
    import duckdb

    from infdist_assets.catalog import connect_readonly
    from infdist_assets.step import code_version

    if not catalog.exists():
        return None
    try:
        con = connect_readonly(catalog)
        row = con.execute("SELECT run_id FROM lineage WHERE asset = 'infdist/eval_scores' AND partition = ? "
                          "AND config_hash = ? AND code_version = ? ORDER BY finished_at DESC LIMIT 1",
                          [f"{model}|{task}", settings.digest(), code_version()]).fetchone()
        con.close()
    except duckdb.Error:  # no lineage yet, or an older catalog: recompute
        return None
    return row[0] if row else None


def use_data_root(data: str | Path) -> Path:
    """Point this process at a data root and its Dagster instance (``<data>/dagster_home``, which
    ``make ui`` serves), before the definitions are imported. Returns the resolved root."""
    root = Path(data).resolve()
    os.environ.setdefault("INFDIST_DATA", str(root))
    home = root / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="data")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--task", default="gsm8k")
    ap.add_argument("--force", action="store_true", help="recompute even if this partition is up to date")
    args = ap.parse_args()
    data = use_data_root(args.data)
    from infdist_assets.definitions import defs
    from infdist_assets.catalog import connect_readonly
    from infdist_assets.run_liveness import reap_dead_runs

    t0 = time.time()
    catalog = data / "infdist.duckdb"
    previous = up_to_date_run(catalog, defs.resources["settings"].to_core(), args.model, args.task)
    if previous and not args.force:
        print(f"{args.model} x {args.task} is up to date (run {previous}, same settings and code); "
              "showing its results (--force recomputes).")
    else:
        with dg.DagsterInstance.get() as instance:
            for run_id in reap_dead_runs(instance):
                print(f"run {run_id} of an earlier demo was killed: marked failed (its finished artefacts are kept)")
            run_partition(defs, args.model, args.task, instance)
    con = connect_readonly(catalog)
    cfg = defs.resources["settings"].to_core()
    scores = con.execute("SELECT method, metric, round(value, 4) FROM eval_scores WHERE model = ? AND task = ? "
                         "AND seed = ? AND k = ? ORDER BY metric, method", [args.model, args.task, cfg.seed, cfg.k]).fetchall()
    rec = con.execute("SELECT embedding, round(spearman, 3), round(grad_cosine, 3), round(mean_cosine, 3) FROM recovery "
                      "WHERE model = ? AND task = ? AND seed = ? AND chosen AND n_landmarks = (SELECT max(n_landmarks) FROM recovery) "
                      "ORDER BY spearman DESC LIMIT 1", [args.model, args.task, cfg.seed]).fetchall()
    con.close()
    print(f"\nInfluence Distillation demo finished in {time.time() - t0:.0f} s ({args.model} x {args.task}).")
    print("eval scores (method, metric, value):")
    for row in scores:
        note = "   (in-sample: the targets the selection was made for; not evidence of quality)" \
            if row[1] == "target_loss" else ""
        print("  ", *row, note)
    print("  held-out evidence with seeds and intervals: benchmarks/bench_quality.py (README, 'Does the selection pay?')")
    if rec:
        print(f"landmark recovery (embedding, Spearman, grad cosine, mean-landmark cosine): {rec[0]}")
    where = f"{args.model}/{args.task}/seed={cfg.seed}/k={cfg.k}"
    print(f"selection:  {data}/assets/infdist/selected_subset/{where}/data.parquet")
    print(f"eval:       {data}/assets/infdist/eval_scores/{where}/data.parquet")
    print(f"catalog:    {catalog}   e.g.  duckdb -readonly {catalog} \"SELECT * FROM eval_scores\"")
    print("UI:         make ui   then open http://127.0.0.1:3000 (runs of this demo are listed there)")


if __name__ == "__main__":
    main()
