"""The quality benchmark (does the selection pay?): for each task, selection seed
and budget k, every method's chain selection -> fine-tune -> held-out evaluation through the
asset graph, then ``quality_report``, which turns the per-row held-out losses into means,
intervals and paired differences (``infdist_core.maths.quality``).

From the UI: run ``benchmark_pool_job`` (per model) and ``benchmark_selection_job`` (per model x
task) with the ``settings`` resource's ``seed`` and ``k`` set in the launchpad, once per seed and
k, then materialise ``quality_report``. From the command line, ``benchmarks/bench_quality.py``
does exactly that through ``run_benchmark``, skipping every artefact already materialised with
the same settings, so an interrupted or extended benchmark resumes where it stopped.
"""



import html
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from infdist_assets.assets.markdown import table_md
from infdist_assets.resources import ArtefactStore
from infdist_assets.store import catalog, storage
from infdist_assets.store.step import MODEL_SIDE_ASSETS, artefact_path, is_materialised
from infdist_core import pipeline
from infdist_core.data import atomic
from infdist_core.maths.quality import QualitySummary, summarize

BENCH_METHODS = ("infdist", "uniform", "rds", "grad", "full")
"""The default benchmark: InfDist, the two baselines it must beat, and the two ceiling rows (Grad:
InfDist with exact scores; full: the whole pool). mid_ppl and landmarks (InfDist without the
propagation) run on request."""
BASELINES = ("uniform", "rds", "grad", "full", "landmarks")


def method_keys(method: str) -> list[str]:
    return [f"{method}/{a}" for a in ("selected_subset", "fine_tuned_model", "eval_scores")]


def needed_assets(assets, methods: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(model-side, model x task) assets that ``methods``' evaluations need, read off the asset
    graph's dependencies (a method's inputs are declared once, on its assets). Sorted by name:
    ``dg.materialize`` orders a selection itself."""
    keys = dg.AssetSelection.assets(*[k for m in methods for k in method_keys(m)]).upstream().resolve(assets)
    names = sorted(k.to_user_string() for k in keys)
    return [a for a in names if a in MODEL_SIDE_ASSETS], [a for a in names if a not in MODEL_SIDE_ASSETS]


def selection_stages(assets, methods: tuple[str, ...]) -> dict[str, list[str]]:
    """For each method, the assets its selection needs (its ``selected_subset`` and everything
    upstream of it), read off the asset graph: what its selection costs."""
    out = {}
    for m in methods:
        keys = dg.AssetSelection.assets(f"{m}/selected_subset").upstream().resolve(assets)
        out[m] = sorted(k.to_user_string() for k in keys)
    return out


ROW_COLUMNS = (("model", pa.string()), ("task", pa.string()), ("method", pa.string()), ("seed", pa.int64()),
               ("k", pa.int64()), ("row_id", pa.string()), ("loss", pa.float64()),
               *((c, pa.float64()) for c in pipeline.ROW_ACCURACY))


def read_rows(root: Path) -> pa.Table:
    """Every eval_scores' per-row held-out losses under ``root`` (task, method, seed, k, row_id,
    loss, and acc / acc_norm: null where the task has no choices or the file predates them)."""
    files = sorted(root.glob("assets/*/eval_scores/*/*/seed=*/k=*/rows.parquet"))
    tables = []
    for f in files:
        if not f.with_name("data.meta.json").exists():
            continue
        t = pq.read_table(f)
        tables.append(pa.table({c: t.column(c) if c in t.column_names else pa.nulls(t.num_rows, typ)
                                for c, typ in ROW_COLUMNS}))
    if not tables:
        return pa.table({c: pa.array([], typ) for c, typ in ROW_COLUMNS})
    return pa.concat_tables(tables).cast(pa.schema(ROW_COLUMNS))


def summaries(rows: pa.Table) -> dict[str, QualitySummary]:
    """The held-out loss summary (``loss``) and, over the rows that have them, the accuracy ones
    (``acc``, ``acc_norm``; higher is better)."""
    cols = lambda t: (t.column(c).to_pylist() for c in ("task", "method", "seed", "k", "row_id"))  # noqa: E731
    out = {"loss": summarize(*cols(rows), rows.column("loss").to_pylist(), baselines=BASELINES)}
    for metric in pipeline.ROW_ACCURACY:
        have = rows.filter(pc.is_valid(rows.column(metric)))
        if have.num_rows:
            out[metric] = summarize(*cols(have), have.column(metric).to_pylist(), baselines=BASELINES,
                                    higher_is_better=True)
    return out


def true_recovery(root: Path, model: str, task: str, cfg) -> float | None:
    """Spearman between InfDist's mean-target scores and the exact ones (every pool sample's true
    gradient, ``pool_gradients``, against the targets'), over the samples that are not landmarks:
    the shipped policy's recovery measured on samples it never saw. None until both exist."""
    from scipy import stats

    part = f"{model}|{task}"
    paths = {a: artefact_path(root, a, model if a == "pool_gradients" else part, cfg)
             for a in ("per_target_weights", "pool_gradients", "target_gradients")}
    if not all(storage.sidecar(p).exists() for p in paths.values()):
        return None
    w = pq.read_table(paths["per_target_weights"])
    G = storage.column_matrix(pq.read_table(paths["pool_gradients"]), "gradient").astype(np.float64)
    T = storage.column_matrix(pq.read_table(paths["target_gradients"]), "gradient").astype(np.float64)
    rest = ~w.column("is_landmark").to_numpy(False)
    exact = (G @ T.T).mean(1)
    return float(stats.spearmanr(w.column("mean_score").to_numpy()[rest], exact[rest]).statistic)


def landmark_picks(root: Path, model: str, task: str, cfg) -> tuple[int, int, float] | None:
    """How many of InfDist's picks are landmarks: (landmarks picked, picks, the landmarks' share of
    the pool). Landmarks carry exact scores, the others propagated ones; when the picks are mostly
    landmarks, the selection is mostly the landmarks' own (the ``landmarks`` method's) and says
    little about the propagation. None until both artefacts exist."""
    part = f"{model}|{task}"
    paths = [artefact_path(root, a, part, cfg) for a in ("per_target_weights", "infdist/selected_subset")]
    if not all(storage.sidecar(p).exists() for p in paths):
        return None
    is_landmark = pq.read_table(paths[0], columns=["is_landmark"]).column("is_landmark").to_numpy(False)
    picks = pq.read_table(paths[1], columns=["pool_index"]).column("pool_index").to_numpy()
    return int(is_landmark[picks].sum()), len(picks), float(is_landmark.mean())


def selection_costs(catalog_path: Path) -> list[tuple]:
    """(task, seed, k, method, seconds_without_warmup) from the catalog's ``selection_cost``."""
    con = catalog.connect_readonly(catalog_path)
    try:
        has = con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = 'selection_cost'").fetchone()[0]
        return con.execute("SELECT task, seed, k, method, seconds_without_warmup FROM selection_cost").fetchall() if has else []
    finally:
        con.close()


def read_scores(root: Path) -> pa.Table:
    """Every eval_scores table under ``root`` (one row per task, method, seed, k and metric)."""
    files = [f for f in sorted(root.glob("assets/*/eval_scores/*/*/seed=*/k=*/data.parquet")) if storage.sidecar(f).exists()]
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default") if files else pa.table({})


def interval_svg(rows: list[dict], width: int = 720) -> str:
    """Held-out loss by method with 95% intervals over seeds, one panel row per task and k (SVG)."""
    groups = sorted({(r["task"], r["k"]) for r in rows})
    methods = sorted({r["method"] for r in rows})
    lo = min(min(r["low"], r["heldout_loss"]) for r in rows if np.isfinite(r["heldout_loss"]))
    hi = max(max(r["high"], r["heldout_loss"]) for r in rows if np.isfinite(r["heldout_loss"]))
    lo, hi = (lo, hi) if hi > lo else (lo - 0.01, hi + 0.01)
    left, right, line = 170, 30, 16
    h = 40 + sum(len(methods) * line + 24 for _ in groups)
    x = lambda v: left + (width - left - right) * (v - lo) / (hi - lo)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h}" font-family="sans-serif" font-size="11">',
           f'<text x="{left}" y="14">held-out loss (lower is better), mean and 95% interval over seeds</text>',
           f'<text x="{left}" y="{h - 6}">{lo:.4f}</text><text x="{width - right - 40}" y="{h - 6}">{hi:.4f}</text>']
    y = 30
    for task, k in groups:
        out.append(f'<text x="4" y="{y + 10}" font-weight="bold">{html.escape(task)} k={k}</text>')
        y += 14
        for m in methods:
            r = next((r for r in rows if (r["task"], r["k"], r["method"]) == (task, k, m)), None)
            if r is not None:
                colour = "#c0392b" if m == "infdist" else "#34495e"
                if np.isfinite(r["low"]):
                    out.append(f'<line x1="{x(r["low"]):.1f}" x2="{x(r["high"]):.1f}" y1="{y + 4}" y2="{y + 4}" stroke="{colour}" stroke-width="2"/>')
                out.append(f'<circle cx="{x(r["heldout_loss"]):.1f}" cy="{y + 4}" r="3.5" fill="{colour}"/>'
                           f'<text x="24" y="{y + 8}">{html.escape(m)} (n={r["seeds"]})</text>')
            y += line
        y += 10
    out.append("</svg>")
    return "\n".join(out)


def interval_text(rows: list[dict], width: int = 48) -> str:
    """The plot of ``interval_svg`` as text (the UI renders metadata markdown, not SVG files):
    per task and k, one line per method, ``[---*---]`` on a shared held-out-loss axis."""
    lines = []
    for task, k in sorted({(r["task"], r["k"]) for r in rows}):
        group = [r for r in rows if (r["task"], r["k"]) == (task, k)]
        ends = [v for r in group for v in (r["low"], r["high"], r["heldout_loss"]) if np.isfinite(v)]
        lo, hi = min(ends), max(ends)
        span = hi - lo if hi > lo else 1.0
        pos = lambda v: int(round((width - 1) * (v - lo) / span))  # noqa: E731
        lines.append(f"{task} k={k}   {lo:.4f} .. {hi:.4f}")
        for r in sorted(group, key=lambda r: r["heldout_loss"]):
            bar = [" "] * width
            if np.isfinite(r["low"]):
                for i in range(pos(r["low"]), pos(r["high"]) + 1):
                    bar[i] = "-"
                bar[pos(r["low"])], bar[pos(r["high"])] = "[", "]"
            bar[pos(r["heldout_loss"])] = "*"
            lines.append(f"  {r['method']:>8} |{''.join(bar)}| {r['heldout_loss']:.4f}")
    return "```\n" + "\n".join(lines) + "\n```"


def frontier(s: QualitySummary, costs: list[tuple]) -> list[dict]:
    """Figure 1's points: per method, the cold selection cost (seconds before fine-tuning, warm-up
    excluded as in the paper; the first seed's run, which computed the pool side, median over
    tasks) against the mean over tasks of its held-out loss minus uniform's (at the largest k;
    negative is better). ``costs``: (task, seed, k, method, seconds_without_warmup) rows of the
    catalog's ``selection_cost``."""
    k = max((r["k"] for r in s.methods), default=None)
    loss = {(r["task"], r["method"]): r["heldout_loss"] for r in s.methods if r["k"] == k}
    first = {}
    for task, seed, kk, method, sec in costs:
        if kk == k and ((task, method) not in first or seed < first[(task, method)][0]):
            first[(task, method)] = (seed, sec)
    out = []
    for m in sorted({m for _, m in loss}):
        tasks = [t for t, mm in loss if mm == m and (t, "uniform") in loss]
        secs = [first[(t, m)][1] for t in tasks if (t, m) in first]
        if tasks:
            out.append({"method": m, "selection_seconds": float(np.median(secs)) if secs else float("nan"),
                        "delta_vs_uniform": float(np.mean([loss[(t, m)] - loss[(t, "uniform")] for t in tasks])),
                        "tasks": len(tasks)})
    return out


def frontier_text(points: list[dict], width: int = 48, height: int = 12) -> str:
    """``frontier``'s points as a text scatter: selection seconds across, held-out loss minus
    uniform's down the page (the most negative, i.e. the best, at the top), one letter per method
    with a legend."""
    pts = [p for p in points if np.isfinite(p["selection_seconds"])]
    if not pts:
        return "no selection costs recorded"
    xs, ys = [p["selection_seconds"] for p in pts], [p["delta_vs_uniform"] for p in pts]
    x0, x1 = 0.0, max(xs) * 1.05 or 1.0
    y0, y1 = min(ys + [0.0]), max(ys + [0.0])
    y1 = y1 if y1 > y0 else y0 + 1e-3
    grid = [[" "] * width for _ in range(height)]
    row = lambda v: int(round((height - 1) * (v - y0) / (y1 - y0)))  # noqa: E731
    for c in range(width):
        grid[row(0.0)][c] = "."  # uniform's level
    legend = []
    for i, p in enumerate(sorted(pts, key=lambda p: p["selection_seconds"])):
        mark = chr(ord("A") + i)
        grid[row(p["delta_vs_uniform"])][int(round((width - 1) * (p["selection_seconds"] - x0) / (x1 - x0)))] = mark
        legend.append(f"{mark} {p['method']}: {p['selection_seconds']:.0f} s, {p['delta_vs_uniform']:+.4f}")
    lines = [f"{y0 + (y1 - y0) * r / (height - 1):+.3f} |{''.join(grid[r])}" for r in range(height)]
    lines.append(" " * 7 + "+" + "-" * width)
    lines.append(" " * 8 + f"0 s{' ' * (width - 12)}{x1:.0f} s")
    return "```\nheld-out loss minus uniform's (negative = better, at the top) vs selection seconds\n" + "\n".join(lines + legend) + "\n```"


def _fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) and np.isfinite(v) else ("-inf" if v == -np.inf else "+inf" if v == np.inf else "n/a")


def _differences_md(s: QualitySummary) -> str:
    diffs = [{**d, "delta": _fmt(d["delta"]), "95% CI (seeds x rows)": f"[{_fmt(d['low'])}, {_fmt(d['high'])}]",
              "95% CI (seeds)": f"[{_fmt(d['seed_low'])}, {_fmt(d['seed_high'])}]",
              "detectable": _fmt(d["detectable"])} for d in s.differences]
    return table_md(diffs, ["task", "k", "method", "baseline", "seeds", "rows", "delta", "95% CI (seeds x rows)", "95% CI (seeds)",
                            "detectable", "verdict"])


def summary_markdown(s: QualitySummary, accuracy: dict[str, QualitySummary] | None = None) -> str:
    """The loss tables (methods with intervals, InfDist's paired differences with the smallest
    difference the run detects at 80% power), the ceiling table (``gap_closed``) and, for choice
    tasks, the same tables on accuracy."""
    methods = [{**r, "heldout_loss": _fmt(r["heldout_loss"]), "95% CI (seeds)": f"[{_fmt(r['low'])}, {_fmt(r['high'])}]"}
               for r in s.methods]
    out = ("### Held-out loss per method (mean, 95% interval over seeds; lower is better)\n\n" +
           interval_text(s.methods) + "\n\n" +
           table_md(methods, ["task", "k", "method", "seeds", "rows", "heldout_loss", "95% CI (seeds)"]) +
           "\n\n### InfDist (and the ceiling, Grad) minus baseline (negative: better)\n\n" + _differences_md(s))
    if s.gaps:
        gaps = [{**g, "infdist_gain": _fmt(g["infdist_gain"]), "grad_gain": _fmt(g["grad_gain"]),
                 "gap_closed": _fmt(g["gap_closed"]), "95% CI (Fieller)": f"[{_fmt(g['low'])}, {_fmt(g['high'])}]"}
                for g in s.gaps]
        out += ("\n\n### How much of the ceiling's gain InfDist captures (gap_closed = (uniform - infdist) / "
                "(uniform - grad))\n\n" +
                table_md(gaps, ["task", "k", "seeds", "rows", "infdist_gain", "grad_gain", "gap_closed", "95% CI (Fieller)"]))
    for metric, a in (accuracy or {}).items():
        rows = [{**r, metric: _fmt(r["heldout_loss"]), "95% CI (seeds)": f"[{_fmt(r['low'])}, {_fmt(r['high'])}]"}
                for r in a.methods]
        out += (f"\n\n### Held-out {metric} per method (choice tasks; higher is better)\n\n" +
                table_md(rows, ["task", "k", "method", "seeds", "rows", metric, "95% CI (seeds)"]) +
                f"\n\n### InfDist minus baseline, {metric} (positive: InfDist better)\n\n" + _differences_md(a))
    return out


def headline(s: QualitySummary, tasks: list[str], seeds: list[int]) -> dict:
    """The JSON line of bench_quality.py (at the largest k measured)."""
    vu, vr = s.verdicts("uniform"), s.verdicts("rds")
    ks = [d["k"] for d in s.differences]
    at = max(ks) if ks else None
    mine = [d for d in s.differences if d.get("method", "infdist") == "infdist" and d["k"] == at]
    delta = lambda b: float(np.mean([d["delta"] for d in mine if d["baseline"] == b])) \
        if any(d["baseline"] == b for d in mine) else None  # noqa: E731
    gaps = [g["gap_closed"] for g in s.gaps if g["k"] == at and np.isfinite(g["gap_closed"])]
    return {"tasks": tasks, "seeds": seeds, "k": at, "wins_vs_uniform": sum(v == "win" for v in vu.values()),
            "losses_vs_uniform": sum(v == "loss" for v in vu.values()), "wins_vs_rds": sum(v == "win" for v in vr.values()),
            "losses_vs_rds": sum(v == "loss" for v in vr.values()),
            "grad_vs_uniform": s.verdicts("uniform", method="grad"),
            "landmarks_vs_uniform": s.verdicts("uniform", method="landmarks"), "infdist_vs_landmarks": s.verdicts("landmarks"),
            "grad_delta_vs_uniform": {d["task"]: d["delta"] for d in s.differences
                                      if d.get("method") == "grad" and d["baseline"] == "uniform" and d["k"] == at},
            "gap_closed_vs_grad": float(np.mean(gaps)) if gaps else None,
            "gap_closed_by_task": {g["task"]: g["gap_closed"] for g in s.gaps if g["k"] == at},
            "detectable_vs_uniform": {d["task"]: d["detectable"] for d in mine if d["baseline"] == "uniform"},
            "mean_delta_heldout_loss_vs_uniform": delta("uniform"), "mean_delta_heldout_loss_vs_rds": delta("rds")}


def build() -> list:
    @dg.asset(group_name="benchmark", kinds={"parquet", "duckdb"},
              description="The quality benchmark's verdict over every materialised eval_scores: held-out loss per task, "
                          "method and k with 95% intervals over seeds, and InfDist's paired differences to uniform and "
                          "RDS+ (intervals over seeds and evaluation rows; a win only when the interval excludes 0).")
    def quality_report(context: dg.AssetExecutionContext, store: ArtefactStore) -> dg.MaterializeResult:
        root = store.path
        rows = read_rows(root)
        if rows.num_rows == 0:
            raise dg.Failure(description=f"no eval_scores with per-row held-out losses under {root}/assets: "
                                         "materialise the methods' eval_scores first (benchmarks/bench_quality.py)")
        by_metric = summaries(rows)
        s = by_metric.pop("loss")
        scores = read_scores(root)
        out = root / "assets" / "quality_report"
        keep = [c for c in ("model", "task", "method", "seed", "k", "metric", "value", "run_id") if c in scores.column_names]
        storage.write_table(scores.select(keep), out / "data.parquet", {"run_id": context.run.run_id, "asset": "quality_report"})
        summary = [row for metric, m in {"loss": s, **by_metric}.items()
                   for row in ([{"kind": "method", "metric": metric, **r} for r in m.methods] +
                               [{"kind": "difference", "metric": metric, **d} for d in m.differences] +
                               [{"kind": "gap", "metric": metric, "method": "infdist", **g} for g in m.gaps])]
        columns = list(dict.fromkeys(c for r in summary for c in r))  # from_pylist would keep the first row's keys only
        storage.write_table(pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in summary]),
                            out / "summary.parquet", {"run_id": context.run.run_id})
        svg = out / "heldout_loss.svg"
        atomic.write_text(svg, interval_svg(s.methods))
        catalog.rebuild(root, store.catalog_path, store.asset_keys, store.selection_stages)
        points = frontier(s, selection_costs(store.catalog_path))
        tasks = sorted({r["task"] for r in s.methods})
        seeds = sorted(set(rows.column("seed").to_pylist()))
        return dg.MaterializeResult(metadata={
            "summary": dg.MetadataValue.md(summary_markdown(s, by_metric)), "plot": dg.MetadataValue.path(str(svg)),
            "headline": dg.MetadataValue.json(headline(s, tasks, seeds)), "rows": dg.MetadataValue.int(rows.num_rows),
            "quality_vs_cost": dg.MetadataValue.md(frontier_text(points))})

    return [quality_report]


def jobs(assets: list, methods: tuple[str, ...] = BENCH_METHODS) -> list:
    pool, target = needed_assets(assets, methods)
    return [
        dg.define_asset_job("benchmark_pool_job", selection=dg.AssetSelection.assets(*[dg.AssetKey.from_user_string(a) for a in pool]),
                            description="Pool side of the quality benchmark for one model and one selection seed "
                                        "(set settings.selection.seed in the launchpad)."),
        dg.define_asset_job("benchmark_selection_job",
                            selection=dg.AssetSelection.assets(*[dg.AssetKey.from_user_string(a) for a in target]),
                            description="Selection, fine-tuning and held-out evaluation of every benchmark method for one "
                                        "model x task, seed and k (set settings.selection.seed and settings.selection.k)."),
        dg.define_asset_job("quality_report_job", selection=dg.AssetSelection.assets("quality_report"),
                            description="Recompute the benchmark's statistics from every materialised evaluation."),
    ]


@dataclass
class BenchmarkPlan:
    model: str
    tasks: list[str]
    seeds: list[int]
    ks: list[int]
    methods: tuple[str, ...] = BENCH_METHODS
    settings: dict = field(default_factory=dict)


@dataclass
class BenchmarkRun:
    runs: list[str]
    """Dagster run ids started, in order (the last one computes ``quality_report``)."""
    complete: bool
    """False when the time budget ran out first: run the same plan again to continue."""


def run_benchmark(defs: dg.Definitions, plan: BenchmarkPlan, instance: dg.DagsterInstance, store: ArtefactStore,
                  settings_cls, log: Callable[[str], None] = print, deadline: float | None = None) -> BenchmarkRun:
    """Materialise what ``plan`` needs and is not materialised yet (same settings), seed by seed,
    then ``quality_report``. No new run starts after ``deadline`` (a ``time.time()``); the report
    then covers what is done, and the same call later continues where this one stopped."""
    assets = list(defs.assets)
    runs: list[str] = []

    def go(selection: list[str], partition, cfg_kwargs: dict) -> bool:
        if deadline is not None and time.time() > deadline:
            return False
        res = dg.materialize(assets, selection=selection, partition_key=partition, instance=instance,
                             resources={"store": store, "settings": settings_cls.of(**cfg_kwargs)})
        runs.append(res.run_id)
        return True

    pool_assets, target_assets = needed_assets(assets, plan.methods)
    complete = True
    for seed in plan.seeds:
        for k in plan.ks:
            kw = {**plan.settings, "seed": seed, "k": k}
            cfg = settings_cls.of(**kw).to_core()
            pool = [a for a in pool_assets if not is_materialised(store.path, a, plan.model, None, cfg)]
            if pool:
                log(f"[bench] seed={seed} k={k} {plan.model}: pool side {pool}")
                complete = complete and go(pool, plan.model, kw)
            for task in plan.tasks:
                todo = [a for a in target_assets if not is_materialised(store.path, a, plan.model, task, cfg)]
                if todo and complete:
                    log(f"[bench] seed={seed} k={k} {plan.model} x {task}: {len(todo)} assets")
                    complete = go(todo, dg.MultiPartitionKey({"model": plan.model, "task": task}), kw)
                elif todo:
                    complete = False
    if not complete:
        log("[bench] time budget used up: the report covers what is done; run the same command again to continue")
    res = dg.materialize(assets, selection=["quality_report"], instance=instance,
                         resources={"store": store, "settings": settings_cls.of(**plan.settings)})
    runs.append(res.run_id)
    return BenchmarkRun(runs, complete)
