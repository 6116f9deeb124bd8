"""The exhaustive crash sweep: kill the demo's graph on the tiny world before each of its writes, in
turn, resume as a user would, and check the guarantee at every point.

For every crash point n (every file-system write or rename of an uninterrupted run under the data
root, Dagster's instance folder aside; ``tests/assets/fault_harness.py`` says how they are counted): the
run is SIGKILLed just before write n, the dead run is marked failed and re-executed from failure,
and the results are compared with the uninterrupted run's: byte-identical artefacts and
checkpoints, no finished artefact lost or recomputed (lineage run ids), no temporary read by
another process or left behind, the catalog opens read-only, the killed run marked failed.

About a minute per point on 2 CPU cores (a killed run and its resume); resumable: each point's
finding is appended to ``<out>/points.jsonl`` and a rerun skips the points already there
(``--budget-minutes`` starts no new point after that long). ``--sample N`` takes a seeded sample.
Last line JSON: ``crash_points`` (of the run), ``checked``, ``identical``, ``not_identical``,
``lost``, ``recomputed``, ``read_tmp``, ``leftovers``, ``resume_failed``, ``complete``, and the first
failing points with where they landed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.assets import fault_harness as harness  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / "data" / "bench_faults")
    ap.add_argument("--sample", type=int, default=0, help="check a seeded sample of this many points (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget-minutes", type=float, default=0.0, help="start no new point after this long (0: no limit)")
    args = ap.parse_args()
    t0 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out.resolve() / "data"
    ref_file = args.out / "reference.json"
    if ref_file.exists():
        ref = json.loads(ref_file.read_text())
    else:
        results, writes = harness.reference_run(data)
        ref = {"results": results, "writes": writes}
        ref_file.write_text(json.dumps(ref))
    if "pool_writes" not in ref:
        ref["pool_writes"] = harness.pool_side_snapshot(data, args.out.resolve() / "after-pool-side")
        ref_file.write_text(json.dumps(ref))
    snapshot = (args.out.resolve() / "after-pool-side", ref["pool_writes"])
    n = len(ref["writes"])
    points = list(range(1, n + 1))
    if args.sample:
        points = sorted(random.Random(args.seed).sample(points, min(args.sample, n)))
    done_file = args.out / "points.jsonl"
    done = {r["at"]: r for r in map(json.loads, done_file.read_text().splitlines())} if done_file.exists() else {}
    for at in points:
        if at in done:
            continue
        if args.budget_minutes and (time.time() - t0) / 60 > args.budget_minutes:
            break
        r = harness.crash_point(data, at, ref["results"], snapshot)
        r["failed_checks"] = harness.failed_checks(r)
        ok = r["ok"] = not r["failed_checks"]
        done[at] = r
        with done_file.open("a") as fh:
            fh.write(json.dumps(r) + "\n")
        print(f"[faults] point {at}/{n} {'ok' if ok else 'FAILED'}: {r['where']}", flush=True)
    checked = [done[a] for a in points if a in done]
    summary = {
        "crash_points": n, "checked": len(checked), "sampled": bool(args.sample),
        "identical": sum(r["identical"] for r in checked), "not_identical": sum(not r["identical"] for r in checked),
        "lost": sum(bool(r["lost"]) for r in checked), "recomputed": sum(bool(r["recomputed"]) for r in checked),
        "read_tmp": sum(bool(r["read_tmp"]) for r in checked), "leftovers": sum(bool(r["leftovers"]) for r in checked),
        "resume_failed": sum(not r["resumed"] for r in checked), "not_killed": sum(not r["killed"] for r in checked),
        "complete": len(checked) == len(points),
        "failures": [{"at": r["at"], "where": r["where"], "differs": r["differs"][:3], "recomputed": r["recomputed"][:3]}
                     for r in checked if not r["ok"]][:10],
        "seconds_this_run": round(time.time() - t0, 1),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
