"""Re-selection after the pool grew by 10%: the incremental run's seconds over a from-scratch run's.

On the embedded default (SmolLM2-135M, GSM8K targets, the default settings with
``pool_sampling=stable``), through the asset graph, runs of the pool side and the InfDist
selection (sampled pool -> warm-up -> landmark gradients -> pool embeddings -> KRR -> target
gradients -> per-target weights -> selected subset; fine-tuning and evaluation are the same work
either way and are left out):

1. ``base``: a fresh store, a pool file of the default pool's first ``--rows`` lines, a sample
   of ``--pool-size``.
2. ``incremental@g``: a copy of the base store after the file grew by ``g`` (the next lines) and
   the sample with it: the warm-up is kept while ``pool_refresh`` allows, rows computed before are
   reused.
3. ``scratch@g``: a fresh store on the grown file: everything computed, a warm-up trained on the
   grown sample.

The landmarks are the same in both (stable sampling draws them by id), so the two selections
differ only through the warm-up: their overlap is what keeping the warm-up costs at that growth
(with the same warm-up the selection is the same bit for bit, which
``tests/assets/test_incremental.py`` checks). Prints each run's seconds and rows computed/reused
per asset, and last line JSON: ``incremental_over_full`` (goal <= 0.2), ``selection_overlap``,
the seconds, for the first growth, and ``by_growth``. Resumable: each finished run is recorded
in ``<work>/runs.json`` and not repeated. About 50 minutes on a slow 2-core CPU for one growth.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ["sampled_pool", "warmup_checkpoint", "landmark_gradients", "pool_embeddings", "krr_coefficients",
          "target_gradients", "per_target_weights", "infdist/selected_subset"]


def make_root(root: Path, data: Path, lines: list[str]) -> Path:
    """A data root with the first ``lines`` of the pool, the model and the targets (linked)."""
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("models", "targets"):
        if not (root / sub).exists():
            os.symlink((data / sub).resolve(), root / sub)
    tmp = root / "pool.jsonl.tmp"
    tmp.write_text("".join(lines))
    tmp.replace(root / "pool.jsonl")
    reg = root / "registry.yaml"
    reg.write_text("pool: pool.jsonl\nmodels:\n  smollm2-135m: {path: models/smollm2-135m}\n"
                   "tasks:\n  gsm8k: {targets: targets/gsm8k.jsonl}\n")
    return reg


def select(root: Path, reg: Path, settings: dict) -> dict:
    """Materialise the pool side and the InfDist selection; seconds, per-asset row counts, the picks."""
    import dagster as dg
    import pyarrow.parquet as pq

    from infdist_assets.definitions import build_definitions
    from infdist_assets.resources import SelectionSettings

    defs = build_definitions(str(reg), str(root))
    res = {**defs.resources, "settings": SelectionSettings.of(**settings)}
    instance = dg.DagsterInstance.ephemeral()
    t0 = time.time()
    runs = [dg.materialize(list(defs.assets), selection=ASSETS[:5], partition_key="smollm2-135m", instance=instance,
                           resources=res)]
    pool_seconds = time.time() - t0
    runs.append(dg.materialize(list(defs.assets), selection=ASSETS[5:], instance=instance, resources=res,
                               partition_key=dg.MultiPartitionKey({"model": "smollm2-135m", "task": "gsm8k"})))
    seconds = time.time() - t0
    rows = {}
    for r in runs:
        for e in r.get_asset_materialization_events():
            md = {k: v.value for k, v in e.materialization.metadata.items()}
            rows[e.asset_key.to_user_string()] = {k: md[k] for k in ("rows_computed", "rows_reused", "warmup") if k in md}
    k = settings.get("k", 30)
    picked = pq.read_table(root / "assets/infdist/selected_subset/smollm2-135m/gsm8k" / f"seed=0/k={k}" / "data.parquet")
    return {"seconds": round(seconds, 1), "pool_side_seconds": round(pool_seconds, 1), "rows": rows,
            "picked": picked.column("sample_id").to_pylist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT / "data"), help="the data root holding the default pool, model, targets")
    ap.add_argument("--work", default="/tmp/infdist_bench_incremental", help="where the three stores are made (resumable)")
    ap.add_argument("--rows", type=int, default=820,
                    help="pool file lines before growth (603 usable at max_length 128; 902 lines: 666)")
    ap.add_argument("--pool-size", type=int, default=600, help="the sample before growth")
    ap.add_argument("--growth", type=float, nargs="+", default=[0.10],
                    help="growths of the pool file and the sample, each from the same base store (e.g. 0.1 0.5 1.0: "
                         "how far a kept warm-up may go)")
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="other SelectionConfig settings (JSON values)")
    args = ap.parse_args()

    data, work = Path(args.data).resolve(), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    top = max(args.growth)
    with open(data / "pools" / "sharegpt.jsonl") as f:
        lines = [line for _, line in zip(range(int(round(args.rows * (1 + top))) + 1), f)]
    settings = {"pool_sampling": "stable"}
    for item in args.set:
        field, value = item.split("=", 1)
        settings[field] = json.loads(value)
    state_file = work / "runs.json"
    state = json.loads(state_file.read_text()) if state_file.exists() else {}
    fixed = {k: v for k, v in vars(args).items() if k != "growth"}
    if state.get("args") not in (None, fixed):
        raise SystemExit(f"{work} holds runs made with other arguments ({state['args']}): pass another --work")
    state["args"] = fixed

    def record(name: str, root: Path, n_lines: int, size: int, copy_from: Path | None = None) -> None:
        if name in state:
            print(f"[bench_incremental] {name}: done before ({state[name]['seconds']} s)", flush=True)
            return
        if root.exists():
            shutil.rmtree(root)  # an interrupted run: start that store afresh
        if copy_from is not None:  # the base store as the base run left it (outside the timed run)
            shutil.copytree(copy_from, root, symlinks=True)
        reg = make_root(root, data, lines[:n_lines])
        print(f"[bench_incremental] {name}: {n_lines} pool lines, pool_size {size}", flush=True)
        state[name] = select(root, reg, {**settings, "pool_size": size})
        tmp = state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(state_file)

    record("base", work / "base", args.rows, args.pool_size)
    results = []
    for g in args.growth:
        n1, size1 = int(round(args.rows * (1 + g))), int(round(args.pool_size * (1 + g)))
        record(f"incremental@{g}", work / f"incremental@{g}", n1, size1, copy_from=work / "base")
        record(f"scratch@{g}", work / f"scratch@{g}", n1, size1)
        inc, full = state[f"incremental@{g}"], state[f"scratch@{g}"]
        overlap = len(set(inc["picked"]) & set(full["picked"])) / max(len(full["picked"]), 1)
        results.append({"growth": g, "pool_lines": [args.rows, n1], "pool_size": [args.pool_size, size1],
                        "incremental_over_full": round(inc["seconds"] / full["seconds"], 3),
                        "pool_side_incremental_over_full": round(inc["pool_side_seconds"] / full["pool_side_seconds"], 3),
                        "selection_overlap": round(overlap, 3), "incremental_seconds": inc["seconds"],
                        "full_seconds": full["seconds"],
                        "warmup": inc["rows"].get("warmup_checkpoint", {}).get("warmup")})

    for name, r in state.items():
        if name == "args":
            continue
        print(f"\n{name}: {r['seconds']} s (pool side {r['pool_side_seconds']} s)")
        for asset, v in r["rows"].items():
            print(f"  {asset:28s} {json.dumps(v)}")
    print()
    for r in results:
        print(f"growth {r['growth']:.0%} ({r['pool_size'][0]} -> {r['pool_size'][1]} samples, warm-up {r['warmup']}): "
              f"incremental / from scratch {r['incremental_over_full']:.3f} (pool side "
              f"{r['pool_side_incremental_over_full']:.3f}); selection overlap {r['selection_overlap']:.3f}")
    first = results[0]
    print(json.dumps({**{k: first[k] for k in ("incremental_over_full", "pool_side_incremental_over_full",
                                               "selection_overlap", "incremental_seconds", "full_seconds")},
                      "growth": first["growth"], "base_seconds": state["base"]["seconds"], "by_growth": results,
                      "settings": settings}))

if __name__ == "__main__":
    main()
