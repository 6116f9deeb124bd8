"""The sharded pool side under Dagster's multiprocess executor: 1 shard vs 2 shards, one run.

The pool-side job (``infdist_assets.definitions.pool_side_job``) is executed with
``dg.execute_job`` (every step in its own process) on a data root of its own (``--out``), with the
embedded default's model and pool. The pool sample and the warm-up are materialised once; then
``landmark_gradients`` and ``pool_embeddings`` (the per-sample work) are timed three times:

- ``pool_shards=1``, ``max_concurrent=2``: one shard step with the thread share a step gets when
  two run at once (cores / 2), the baseline the sharded artefact must equal bit for bit;
- ``pool_shards=2``, ``max_concurrent=2``: two shard steps in parallel, same thread share;
- ``pool_shards=1``, ``max_concurrent=1``: the unsharded alternative, one step with every core
  (its artefact differs from the others by rounding: torch's CPU reductions depend on the
  thread count).

Last line JSON: ``shards_1_seconds``, ``shards_2_seconds``, ``speedup_2_shards``, ``identical``
(the two sharing a thread count), ``single_process_seconds``, ``speedup_over_single_process``,
plus the settings and the core count. On 2 cores the honest comparison is the last one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
TIMED = ("landmark_gradients", "pool_embeddings")

RUNNER = r"""
import json, sys, time
import dagster as dg
from infdist_assets.definitions import pool_side_job
config = json.loads(sys.argv[1])
keys = [dg.AssetKey(k) for k in json.loads(sys.argv[2])]
with dg.DagsterInstance.get() as instance:
    t0 = time.time()
    res = dg.execute_job(dg.reconstructable(pool_side_job), instance=instance, run_config=config,
                         tags={"dagster/partition": sys.argv[3]}, asset_selection=keys)
    print(json.dumps({"success": res.success, "seconds": time.time() - t0, "run_id": res.run_id}))
"""


def run(env: dict, settings: dict, keys, model: str, workers: int) -> dict:
    from infdist_core.config import nested

    config = {"resources": {"settings": {"config": nested(settings)}},
              "execution": {"config": {"multiprocess": {"max_concurrent": workers}}}}
    res = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(config), json.dumps(list(keys)), model],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    if res.returncode != 0 or '"success": true' not in res.stdout:
        sys.exit(f"bench_scale: the run failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def artefacts(out: Path, model: str) -> dict:
    """The gathered artefacts (read into memory: the next run replaces the files)."""
    (lg,) = (out / "assets" / "landmark_gradients" / model).rglob("data.parquet")
    (pe,) = (out / "assets" / "pool_embeddings" / model).rglob("data.parquet")
    return {"landmark_gradients": pq.read_table(lg), "pool_embeddings": pq.read_table(pe)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="data", help="the data root with the offline model and pool (make setup)")
    ap.add_argument("--out", default="data/bench_scale", help="a data root of the benchmark's own (recreated)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--pool-size", type=int, default=240)
    ap.add_argument("--landmarks", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    data, out = Path(args.data).resolve(), Path(args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    (out / "dagster_home").mkdir(parents=True)
    registry = out / "registry.yaml"
    registry.write_text(f"pool: {data}/pools/sharegpt.jsonl\nmodels:\n  {args.model}: {{path: {data}/models/{args.model}}}\n"
                        f"tasks:\n  gsm8k: {{targets: {data}/targets/gsm8k.jsonl}}\n")
    env = {**os.environ, "INFDIST_DATA": str(out), "INFDIST_REGISTRY": str(registry), "DAGSTER_HOME": str(out / "dagster_home")}
    settings = {"pool_size": args.pool_size, "n_landmarks": args.landmarks}
    first = run(env, settings, ["sampled_pool", "warmup_checkpoint"], args.model, args.workers)
    print(f"pool sample and warm-up: {first['seconds']:.1f} s (not timed below)", flush=True)
    seconds, tables = {}, {}
    for label, shards, workers in (("1", 1, args.workers), ("2", 2, args.workers), ("single", 1, 1)):
        r = run(env, {**settings, "pool_shards": shards}, TIMED, args.model, workers)
        seconds[label] = r["seconds"]
        tables[label] = artefacts(out, args.model)
        print(f"{shards} shard(s), max_concurrent {workers}: {r['seconds']:.1f} s for {', '.join(TIMED)} "
              f"(run {r['run_id'][:8]})", flush=True)
    identical = all(tables["1"][a].equals(tables["2"][a]) for a in TIMED)
    print(json.dumps({"shards_1_seconds": round(seconds["1"], 1), "shards_2_seconds": round(seconds["2"], 1),
                      "speedup_2_shards": round(seconds["1"] / seconds["2"], 3), "identical": identical,
                      "single_process_seconds": round(seconds["single"], 1),
                      "speedup_over_single_process": round(seconds["single"] / seconds["2"], 3),
                      "workers": args.workers, "cores": os.cpu_count(), "pool_size": args.pool_size,
                      "n_landmarks": args.landmarks, "model": args.model, "timed": list(TIMED), "executor": "multiprocess",
                      "measured_at": time.strftime("%Y-%m-%d")}))

if __name__ == "__main__":
    main()
