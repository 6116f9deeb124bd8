"""Pool-loading benchmark: peak memory and seconds to sample ``--keep`` rows from a synthetic
JSONL pool, before (``records.load_records``: every row a dict) and after (``pool_rows.PoolRows``:
Arrow through ``datasets``, memory-mapped, rows parsed on access).

Every measurement runs in a fresh interpreter that imports the same modules and loads the same
tokenizer first; it reports its peak resident memory (``ru_maxrss``) and the growth over that
baseline, and the growth of its resident anonymous memory at the end, with the sample held
(``RssAnon``: mapped file pages, which the peak counts, are page cache the kernel can reclaim). ``after`` is measured cold (the Arrow conversion included) and warm (the cache mapped
again, as a re-run does), at ``--rows`` and at a tenth of it, so the last line shows whether
memory grows with rows the sample never uses. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from infdist_core.config import SelectionConfig
from infdist_core.model.modeling import load_tokenizer
from infdist_core.pipeline import sample_pool
from infdist_core.data.pool_rows import PoolRows
from infdist_core.data.records import load_records
mode, path, cache, keep, model = sys.argv[1:6]
tok = load_tokenizer(model)
import datasets  # a fixed cost (~60 MB, 0.4 s) outside the measurement: the growth is what matters
def anon():  # resident anonymous memory: what cannot be reclaimed (mapped file pages can)
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("RssAnon")) / 1024
base, base_anon = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, anon()
t0 = time.perf_counter()
rows = load_records(path) if mode == "before" else PoolRows(path, cache) if mode == "after" else None
cfg = SelectionConfig.of(pool_size=int(keep), n_landmarks=2, k=1, max_length=512)
pool = sample_pool(rows, tok, cfg) if rows is not None else None
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_mb": peak / 1024, "growth_mb": (peak - base) / 1024,
                  "anon_growth_mb": anon() - base_anon,
                  "ids": [s.id for s in pool.samples] if pool else []}))
"""


def write_pool(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(5000)]
    with path.open("w") as f:
        for i in range(rows):
            q = " ".join(rng.choices(words, k=25))
            a = " ".join(rng.choices(words, k=40))
            f.write(json.dumps({"id": f"s{i}", "messages": [{"role": "user", "content": q},
                                                            {"role": "assistant", "content": a}]}) + "\n")


def measure(mode: str, path: Path, cache: Path, keep: int, model: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(cache), str(keep), model],
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{mode} on {path} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--keep", type=int, default=600)
    ap.add_argument("--model", default="data/models/smollm2-135m", help="a folder with the tokenizer to sample with")
    args = ap.parse_args()
    result: dict = {"rows": args.rows, "keep": args.keep}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small, large = tmp / "small.jsonl", tmp / "large.jsonl"
        t0 = time.perf_counter()
        write_pool(large, args.rows)
        write_pool(small, args.rows // 10)
        print(f"synthetic pools: {args.rows} and {args.rows // 10} rows, {large.stat().st_size / 2**20:.0f} MB "
              f"({time.perf_counter() - t0:.0f} s to write)", flush=True)
        runs = {
            "before": ("before", large, tmp / "unused"),
            "after_cold": ("after", large, tmp / "cache"),
            "after_warm": ("after", large, tmp / "cache"),
            "after_small_cold": ("after", small, tmp / "cache_small"),
            "after_small_warm": ("after", small, tmp / "cache_small"),
        }
        ids = {}
        print(f"{'run':<18} {'seconds':>8} {'peak MB':>8} {'growth MB':>10} {'anon growth MB':>15}")
        for name, (mode, path, cache) in runs.items():
            r = measure(mode, path, cache, args.keep, args.model)
            ids[name] = r.pop("ids")
            result.update({f"{name}_{k}": round(v, 2) for k, v in r.items()})
            print(f"{name:<18} {r['seconds']:>8.2f} {r['peak_mb']:>8.0f} {r['growth_mb']:>10.0f} {r['anon_growth_mb']:>15.0f}",
                  flush=True)
    result["same_sample"] = ids["before"] == ids["after_cold"] == ids["after_warm"]
    result["memory_ratio_before_over_after_warm"] = round(result["before_growth_mb"] / max(1.0, result["after_warm_growth_mb"]), 1)
    result["seconds_ratio_before_over_after_warm"] = round(result["before_seconds"] / result["after_warm_seconds"], 1)
    result["growth_mb_large_minus_small_warm"] = round(result["after_warm_growth_mb"] - result["after_small_warm_growth_mb"], 1)
    result["anon_mb_large_minus_small_warm"] = round(result["after_warm_anon_growth_mb"] - result["after_small_warm_anon_growth_mb"], 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
