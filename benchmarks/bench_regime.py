"""Which training budget lets a selection show its value? The regime search, on the dev split.

If the ceiling (Grad: every pool sample's true gradient) does not beat uniform, no selection can
show its value in that training regime, and the benchmark must train differently. This script
runs ``bench_quality.py`` once per candidate budget (settings such as ``train_epochs``,
``train_lr``, ``k``), each in its own data root under ``<data>/regime/`` that shares the main
root's model-side artefacts (``--reuse-pool-from``: the pool sample, warm-up, landmarks, proxy
rows and pool gradients are not recomputed), and always on the **dev split** of the held-out rows
(``heldout_split=dev``: disjoint from the test rows the quality benchmark reports), so the
choice never looks at the reported rows. It picks the cheapest budget (the order given) at which
Grad's held-out loss is significantly below uniform's on at least ``--need`` of the tasks.

Resumable like ``bench_quality.py`` (each budget's root keeps what it computed). Last line JSON:
``budgets`` (per budget: its settings and bench_quality's ``grad_vs_uniform``,
``grad_delta_vs_uniform``, ``wins_vs_uniform``, ``gap_closed_vs_grad``, ``complete``) and
``chosen`` (the first budget meeting the bar, or null).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_BUDGETS = ("train_epochs=2,train_lr=2e-5", "train_epochs=4,train_lr=2e-5", "train_epochs=2,train_lr=1e-4",
                   "train_epochs=4,train_lr=1e-4,k=60")
SHARED = ("models", "pools", "targets", "eval", "offline")


def parse_budget(text: str) -> dict:
    """``"train_epochs=4,train_lr=1e-4"`` -> {"train_epochs": 4, "train_lr": 0.0001} (JSON values)."""
    out = {}
    for item in text.split(","):
        field, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"budget {text!r}: {item!r} is not FIELD=VALUE")
        out[field.strip()] = json.loads(value)
    return out


def budget_root(data: Path, budget: dict) -> Path:
    slug = "_".join(f"{k}-{v}" for k, v in sorted(budget.items()))
    root = data / "regime" / slug
    root.mkdir(parents=True, exist_ok=True)
    for sub in SHARED:  # the model and the files, shared; artefacts stay per budget
        if (data / sub).exists() and not (root / sub).exists():
            os.symlink((data / sub).resolve(), root / sub)
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="data", type=Path)
    ap.add_argument("--tasks", nargs="+", default=["gsm8k", "mmlu"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=["infdist", "uniform", "grad"])
    ap.add_argument("--budgets", nargs="+", default=list(DEFAULT_BUDGETS), metavar="FIELD=VALUE,...",
                    help="candidate budgets, cheapest first")
    ap.add_argument("--heldout-rows", type=int, default=200)
    ap.add_argument("--need", type=int, default=None, help="tasks Grad must win on (default: half, rounded up)")
    ap.add_argument("--budget-minutes", type=float, default=80.0, help="start no new run after this long; rerun to continue")
    args = ap.parse_args()
    need = args.need or (len(args.tasks) + 1) // 2
    t0 = time.time()
    here = Path(__file__).resolve().parent
    rows, chosen = [], None
    for text in args.budgets:
        budget = parse_budget(text)
        left = args.budget_minutes - (time.time() - t0) / 60 if args.budget_minutes > 0 else 0
        if args.budget_minutes > 0 and left <= 0:
            rows.append({"budget": budget, "complete": False})
            continue
        root = budget_root(args.data.resolve(), budget)
        cmd = [sys.executable, str(here / "bench_quality.py"), "--data", str(root), "--reuse-pool-from", str(args.data),
               "--tasks", *args.tasks, "--seeds", *map(str, args.seeds), "--methods", *args.methods,
               "--heldout-rows", str(args.heldout_rows), "--budget-minutes", str(max(left, 0.01) if args.budget_minutes > 0 else 0),
               "--set", 'heldout_split="dev"', *(f"{k}={json.dumps(v)}" for k, v in budget.items())]
        print(f"[regime] {text}: {root}", flush=True)
        res = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        if res.returncode != 0 or not lines:
            raise SystemExit(f"[regime] bench_quality failed for {text}:\n{res.stderr[-3000:]}")
        out = json.loads(lines[-1])
        row = {"budget": budget, **{k: out.get(k) for k in ("grad_vs_uniform", "grad_delta_vs_uniform", "wins_vs_uniform",
                                                            "gap_closed_vs_grad", "complete")}}
        rows.append(row)
        wins = sum(v == "win" for v in (row["grad_vs_uniform"] or {}).values())
        print(f"[regime] {text}: Grad wins over uniform on {wins} of {len(args.tasks)} tasks "
              f"({row['grad_delta_vs_uniform']}); InfDist wins on {row['wins_vs_uniform']}; "
              f"gap closed {row['gap_closed_vs_grad']}", flush=True)
        if chosen is None and row["complete"] and wins >= need:
            chosen = budget
    print(json.dumps({"tasks": args.tasks, "seeds": args.seeds, "split": "dev", "need": need, "budgets": rows,
                      "chosen": chosen}))


if __name__ == "__main__":
    main()
