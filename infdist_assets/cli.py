"""The command line, at the top of the layer (nothing imports it):

    python -m infdist_assets.cli demo [--data data] [--model M] [--task T] [--force] [--full]
    python -m infdist_assets.cli catalog [--data data]    # rebuild the DuckDB catalog
    python -m infdist_assets.cli reap [--data data]       # mark failed the runs whose worker is gone

``demo`` is what `make demo` runs: the default job end to end for one partition (smollm2-135m x
gsm8k) at the demo's scale (``demo.DEMO_SETTINGS``; ``--full``: the default settings), recorded in the Dagster instance under ``<data>/dagster_home`` so that `make ui` shows
the runs. Each command points the process at its data root before the definitions load.
"""

from __future__ import annotations

import argparse
import time

import dagster as dg

from infdist_assets.operations.demo import DEMO_SETTINGS, run_partition, up_to_date_run, use_data_root


def demo(args: argparse.Namespace) -> None:
    data = use_data_root(args.data)
    from infdist_assets.definitions import defs
    from infdist_assets.resources import SelectionSettings
    from infdist_assets.store.catalog import connect_readonly
    from infdist_assets.store.run_liveness import reap_dead_runs

    t0 = time.time()
    catalog = data / "infdist.duckdb"
    settings = SelectionSettings.of(**({} if args.full else DEMO_SETTINGS))
    cfg = settings.to_core()
    previous = up_to_date_run(catalog, cfg, args.model, args.task)
    if previous and not args.force:
        print(f"{args.model} x {args.task} is up to date (run {previous}, same settings and code); "
              "showing its results (--force recomputes).")
    else:
        with dg.DagsterInstance.get() as instance:
            for run_id in reap_dead_runs(instance):
                print(f"run {run_id} of an earlier demo was killed: marked failed (its finished artefacts are kept)")
            run_partition(defs, args.model, args.task, instance, resources={**defs.resources, "settings": settings})
    con = connect_readonly(catalog)
    scores = con.execute("SELECT method, metric, round(value, 4) FROM eval_scores WHERE model = ? AND task = ? "
                         "AND seed = ? AND k = ? ORDER BY metric, method",
                         [args.model, args.task, cfg.selection.seed, cfg.selection.k]).fetchall()
    rec = con.execute("SELECT embedding, round(spearman, 3), round(grad_cosine, 3), round(mean_cosine, 3) FROM recovery "
                      "WHERE model = ? AND task = ? AND seed = ? AND chosen AND n_landmarks = (SELECT max(n_landmarks) FROM recovery) "
                      "ORDER BY spearman DESC LIMIT 1", [args.model, args.task, cfg.selection.seed]).fetchall()
    con.close()
    scale = "the default settings" if args.full else ", ".join(f"{k}={v}" for k, v in DEMO_SETTINGS.items())
    print(f"\nInfluence Distillation demo finished in {time.time() - t0:.0f} s ({args.model} x {args.task}; {scale}).")
    print("eval scores (method, metric, value):")
    for row in scores:
        note = "   (in-sample: the targets the selection was made for; not evidence of quality)" \
            if row[1] == "target_loss" else ""
        print("  ", *row, note)
    print("  held-out evidence with seeds and intervals: benchmarks/bench_quality.py (docs/results.md)")
    if rec:
        print(f"landmark recovery (embedding, Spearman, grad cosine, mean-landmark cosine): {rec[0]}")
    where = f"{args.model}/{args.task}/seed={cfg.selection.seed}/k={cfg.selection.k}"
    print(f"selection:  {data}/assets/infdist/selected_subset/{where}/data.parquet")
    print(f"eval:       {data}/assets/infdist/eval_scores/{where}/data.parquet")
    print(f"catalog:    {catalog}   e.g.  duckdb -readonly {catalog} \"SELECT * FROM eval_scores\"")
    print("UI:         make ui   then open http://127.0.0.1:3000 (runs of this demo are listed there)")


def catalog(args: argparse.Namespace) -> None:
    use_data_root(args.data)
    from infdist_assets.definitions import defs
    from infdist_assets.store import catalog as cat

    store = defs.resources["store"]
    names = cat.rebuild(store.path, store.catalog_path, store.asset_keys, store.selection_stages)
    print(f"{store.catalog_path}: {len(names)} relations")


def reap(args: argparse.Namespace) -> None:
    use_data_root(args.data)
    from infdist_assets.store.run_liveness import reap_dead_runs

    with dg.DagsterInstance.get() as instance:
        reaped = reap_dead_runs(instance)
    print(f"marked failed: {', '.join(reaped)}" if reaped else "no dead runs")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m infdist_assets.cli", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="the default job end to end for one partition")
    d.add_argument("--model", default="smollm2-135m")
    d.add_argument("--task", default="gsm8k")
    d.add_argument("--force", action="store_true", help="recompute even if this partition is up to date")
    d.add_argument("--full", action="store_true", help="the default settings instead of the demo's smaller scale")
    d.set_defaults(run=demo)
    sub.add_parser("catalog", help="rebuild the DuckDB catalog of the data root").set_defaults(run=catalog)
    sub.add_parser("reap", help="mark failed the runs whose worker process is gone").set_defaults(run=reap)
    for p in sub.choices.values():
        p.add_argument("--data", default="data", help="the data root (default ./data)")
    args = ap.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
