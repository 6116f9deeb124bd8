"""The Dagster graph end to end on a tiny model and small data, then the outputs through DuckDB.

One module-scoped run materialises the pool side for model `tiny` and the target side for two
tasks; the tests read its Parquet, lineage and catalog.
"""

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from infdist_assets.store.catalog import connect_readonly
from tests.conftest import write_world

ROOT = Path(__file__).resolve().parents[2]
N_POOL, K, L = 30, 5, 12
SETTINGS = dict(pool_size=N_POOL, max_length=64, n_landmarks=L, k=K, projection_dim=256, embedding_dim=64,
                warmup_samples=8, warmup_steps=2, adam_aware=True, train_epochs=1.0, train_micro_batch=2, train_grad_accum=1,
                eval_subset=2, task_metrics=True, max_new_tokens=8,
                embedding_candidates=["grad-last:1+grad-head", "jvp-hidden:2:2", "rds"])


@pytest.fixture(scope="module")
def world(tmp_path_factory, request):
    data = tmp_path_factory.mktemp("data")
    reg = write_world(data)
    from infdist_assets.definitions import build_definitions
    from infdist_assets.operations.demo import run_partition
    from infdist_assets.resources import SelectionSettings

    defs = build_definitions(str(reg), str(data))
    resources = {"store": defs.resources["store"], "settings": SelectionSettings.of(**SETTINGS)}
    instance = dg.DagsterInstance.ephemeral()
    first = run_partition(defs, "tiny", "math", instance, resources=resources)
    pool_files = {p: p.stat().st_mtime_ns for pattern in ("*/tiny/data.parquet", "*/tiny/seed=0/data.parquet")
                  for p in (data / "assets").glob(pattern)}
    second = dg.materialize(list(defs.assets), selection=["target_gradients", "per_target_weights", "infdist/selected_subset"],
                            partition_key=dg.MultiPartitionKey({"model": "tiny", "task": "code"}),
                            instance=instance, resources=resources)
    return dict(data=data, defs=defs, reg=reg, resources=resources, instance=instance, runs=first + [second],
                pool_files=pool_files)


def test_runs_succeed_and_checks_pass(world):
    for res in world["runs"]:
        assert res.success
        checks = res.get_asset_check_evaluations()
        failed = [c.check_name for c in checks if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR]
        assert not failed, f"blocking checks failed: {failed}"
    names = {c.check_name for r in world["runs"] for c in r.get_asset_check_evaluations()}
    assert {"weights_valid", "exactly_k_distinct", "gradients_finite", "embeddings_finite"} <= names


def test_parquet_outputs_are_consistent(world):
    d = world["data"] / "assets"
    w = pq.read_table(d / f"per_target_weights/tiny/math/seed=0/k={K}/data.parquet").to_pandas()
    assert len(w) == N_POOL and (w.weight >= 0).all() and np.isclose(w.weight.sum(), N_POOL)
    assert (w.weight > 0).sum() == K
    sel = pq.read_table(d / f"infdist/selected_subset/tiny/math/seed=0/k={K}/data.parquet").to_pandas()
    assert len(sel) == K and sel.sample_id.is_unique and list(sel["rank"]) == list(range(1, K + 1))
    lg = pq.read_table(d / "landmark_gradients/tiny/seed=0/data.parquet")
    assert lg.num_rows == L and lg.schema.field("gradient").type.list_size == 256
    ev = pq.read_table(d / f"infdist/eval_scores/tiny/math/seed=0/k={K}/data.parquet").to_pandas()
    assert {"target_loss", "heldout_loss", "exact_match,strict-match", "exact_match,flexible-extract"} <= set(ev.metric)
    se = ev.set_index("metric").stderr
    assert se["heldout_loss"] > 0 and se["exact_match,strict-match"] >= 0 and np.isnan(se["target_loss"])
    rows = pq.read_table(d / f"infdist/eval_scores/tiny/math/seed=0/k={K}/rows.parquet").to_pandas()
    assert len(rows) == 4 and np.isclose(rows.loss.mean(), ev.set_index("metric").value["heldout_loss"])
    ft = pq.read_table(d / f"infdist/fine_tuned_model/tiny/math/seed=0/k={K}/data.parquet").column("model_path")[0].as_py()
    assert (Path(ft) / "model.safetensors").exists()
    assert not list(Path(ft).parent.glob("*.trainer"))  # the Trainer's checkpoints go once the model is saved


def test_krr_coefficients_are_what_the_target_side_scored_with(world):
    """The stored C is the fitted regression: with the stored kernel setting, p_hat = C @ G_L G_T'
    for a task scored without the direct term (computed here with score_pool), and the scores
    per_target_weights wrote are exact on the landmarks and equal C's when the task did not use it."""
    from infdist_core.config import SelectionConfig
    from infdist_core.maths.recovery import KernelSetting
    from infdist_core.pipeline import LandmarkRegression, score_pool

    d = world["data"] / "assets"
    krr = d / "krr_coefficients/tiny/seed=0"
    C = np.asarray(pq.read_table(krr / "data.parquet").column("coefficients").to_pylist())
    kernel = json.loads((krr / "data.meta.json").read_text())["kernel"]
    reg = LandmarkRegression(KernelSetting(kernel["bandwidth_scale"], kernel["damping"], kernel["center"]), kernel["bandwidth2"])
    E = np.asarray(pq.read_table(d / "pool_embeddings/tiny/seed=0/data.parquet").column("embedding").to_pylist(), np.float64)
    lg = pq.read_table(d / "landmark_gradients/tiny/seed=0/data.parquet")
    valid = np.asarray(lg.column("valid").to_pylist())
    G_L = np.asarray(lg.column("gradient").to_pylist(), np.float64)[valid]
    lm = lg.column("pool_index").to_numpy()[valid]
    assert lm.tolist() == kernel["landmarks"]
    for task in ("math", "code"):
        folder = d / f"per_target_weights/tiny/{task}/seed=0/k={K}"
        scores = np.asarray(pq.read_table(folder / "data.parquet").column("scores").to_pylist())
        G_T = np.asarray(pq.read_table(d / f"target_gradients/tiny/{task}/data.parquet").column("gradient").to_pylist(), np.float64)
        P_L = G_L @ G_T.T
        without_direct = score_pool(E, lm, G_L, G_T, reg, SelectionConfig.of(pool_size=N_POOL, n_landmarks=L, k=K)).scores
        np.testing.assert_allclose(C @ P_L, without_direct, rtol=1e-6, atol=1e-9, err_msg=f"{task}: C @ P_L != p_hat")
        np.testing.assert_allclose(scores[lm], P_L, rtol=1e-5, atol=1e-6)
        if not json.loads((folder / "data.meta.json").read_text())["direct"]:
            np.testing.assert_allclose(scores, without_direct, rtol=1e-5, atol=1e-6)


def test_every_selection_method_is_built_from_its_registry_entry(world):
    """Each method's selected_subset depends on the pool and exactly the assets of the inputs its
    registry entry needs; every needed input has a reader."""
    from infdist_assets.store.loaders import SELECTION_INPUTS
    from infdist_core.methods import METHODS

    graph = world["defs"].resolve_asset_graph()
    for name, method in METHODS.items():
        assert set(method.needs) <= set(SELECTION_INPUTS), name
        want = {"sampled_pool"} | {(d.asset_key if isinstance(d, dg.AssetDep) else d).to_user_string()
                                   for n in method.needs for d in SELECTION_INPUTS[n].deps}
        got = {k.to_user_string() for k in graph.get(dg.AssetKey([name, "selected_subset"])).parent_keys}
        assert got == want, name


def test_second_task_reuses_pool_side_materializations(world):
    """Adding a task must cost only the target side: pool artefacts untouched, lineage points at run 1."""
    now = {p: p.stat().st_mtime_ns for p in world["pool_files"]}
    assert now == world["pool_files"], "pool-side files were rewritten by the second task"
    pool_run = world["runs"][0].run_id
    con = connect_readonly(world["data"] / "infdist.duckdb")
    ups = con.execute("SELECT upstream FROM lineage WHERE asset = 'per_target_weights' AND partition = 'tiny|code'").fetchone()[0]
    pool_runs = con.execute("SELECT count(DISTINCT run_id) FROM lineage WHERE partition = 'tiny'").fetchone()[0]
    con.close()
    used = {u["asset"]: u["run_id"] for u in json.loads(ups)}
    assert used["landmark_gradients"] == pool_run and used["pool_embeddings"] == pool_run
    assert pool_runs == 1


def test_duckdb_answers_the_readme_questions(world):
    con = connect_readonly(world["data"] / "infdist.duckdb")
    sel = con.execute("SELECT sample_id, rank, weight FROM selected_subset WHERE model='tiny' AND task='math' "
                      "AND method='infdist' ORDER BY rank").fetchall()
    assert len(sel) == K and sel[0][1] == 1
    methods = {r[0] for r in con.execute("SELECT DISTINCT method FROM eval_scores WHERE task='math'").fetchall()}
    assert methods == {"infdist", "uniform"}
    lin = con.execute("SELECT asset, code_version, config_hash, upstream FROM lineage "
                      "WHERE asset = 'infdist/selected_subset' AND partition = 'tiny|math'").fetchall()
    assert len(lin) == 1 and {u["asset"] for u in json.loads(lin[0][3])} == {"per_target_weights", "sampled_pool"}
    rec = con.execute("SELECT count(*), count(DISTINCT embedding) FROM recovery WHERE task='math'").fetchone()
    assert rec[0] > 0 and rec[1] == 3
    direct = con.execute("SELECT DISTINCT embedding FROM recovery WHERE direct AND task='math'").fetchall()
    assert direct == [("grad-last:1+grad-head",)], "the direct term is tried for gradient proxies only"
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert {"lineage", "selected_subset", "eval_scores", "recovery", "asset_sampled_pool", "asset_infdist__selected_subset"} <= views
    con.close()


def test_selection_cost_sums_the_latest_run_of_each_stage_the_graph_names(world):
    """selection_cost (the docs' cost query) against a direct computation from the lineage files:
    for each method, the stages its selected_subset needs per the asset graph, the latest
    materialisation of each for this partition, seed and k. Pool-side steps report their cost
    per sample and their peak memory in the lineage metrics."""
    import pyarrow.parquet as pq

    rows = [r for f in (world["data"] / "lineage").rglob("*.parquet") for r in pq.read_table(f).to_pylist()]
    latest = {}
    for r in sorted(rows, key=lambda r: r["finished_at"]):
        latest[(r["asset"], r["partition"], r["variant"] or "")] = (r["finished_at"] - r["started_at"]).total_seconds()
    ok = {("tiny", ""), ("tiny", "seed=0"), ("tiny|math", ""), ("tiny|math", f"seed=0/k={K}")}
    con = connect_readonly(world["data"] / "infdist.duckdb")
    got = dict(con.execute("SELECT method, seconds FROM selection_cost WHERE model = 'tiny' AND task = 'math' "
                           "AND seed = 0 AND k = ?", [K]).fetchall())
    con.close()
    assert set(got) == {"infdist", "uniform"}
    for method, seconds in got.items():
        stages = world["resources"]["store"].selection_stages[method]
        want = sum(v for (a, part, var), v in latest.items() if a in stages and (part, var) in ok)
        assert seconds == pytest.approx(want, rel=1e-6), method
    stages = world["resources"]["store"].selection_stages
    assert "landmark_gradients" in stages["infdist"] and "rds_embeddings" in stages["rds"]
    emb = next(json.loads(r["metrics"]) for r in rows if r["asset"] == "pool_embeddings")
    assert emb["peak_rss_mb"] > 50 and emb["samples_per_second"] * emb["wall_seconds_per_sample"] == pytest.approx(1, rel=1e-2)


def test_catalog_refresh_never_waits_for_an_open_reader(world):
    from infdist_assets.store import catalog

    path = world["data"] / "infdist.duckdb"
    reader = duckdb.connect(str(path), read_only=True)  # someone has the catalog open
    try:
        catalog.rebuild(world["data"], path, world["resources"]["store"].asset_keys)  # what every materialisation does
        assert reader.execute("SELECT count(*) FROM selected_subset").fetchone()[0] >= K
    finally:
        reader.close()


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(k=N_POOL + 1), "k=31 exceeds pool_size=30"),
        (dict(pool_size=100, n_landmarks=L), "pool file has 45 records, fewer than pool_size=100"),
        (dict(warmup_steps=-1), "'warmup_steps': -1"),
        (dict(device="gpu"), "device='gpu'"),
        (dict(embedding="grad-tail:2"), "unknown kind 'grad-tail'"),
    ],
)
def test_bad_settings_fail_with_a_clear_message_and_write_nothing(world, change, message):
    """Settings as the launchpad sends them (run config, by section): the step refuses them."""
    from infdist_core.config import nested

    before = sorted(p for p in world["data"].rglob("*") if p.is_file())
    res = dg.materialize(list(world["defs"].assets), selection=["sampled_pool"], partition_key="tiny",
                         instance=dg.DagsterInstance.ephemeral(), raise_on_error=False, resources=world["resources"],
                         run_config={"resources": {"settings": {"config": nested({**SETTINGS, **change})}}})
    assert not res.success
    failure = next(e for e in res.all_events if e.is_step_failure)
    assert message in str(failure.step_failure_data.error), str(failure.step_failure_data.error)
    assert sorted(p for p in world["data"].rglob("*") if p.is_file()) == before


def test_unknown_model_and_missing_target_file_are_named(world, tmp_path):
    from infdist_assets.definitions import build_definitions

    reg = tmp_path / "r.yaml"
    reg.write_text(world["reg"].read_text().replace("models/tiny", "models/nope").replace("math.jsonl", "missing.jsonl"))
    defs = build_definitions(str(reg), str(world["data"]))
    res = dg.materialize(list(defs.assets), selection=["sampled_pool"], partition_key="tiny", raise_on_error=False,
                         instance=dg.DagsterInstance.ephemeral(),
                         resources={**world["resources"], "store": defs.resources["store"]})
    err = str(next(e for e in res.all_events if e.is_step_failure).step_failure_data.error)
    assert "models/nope is not a Hugging Face model folder" in err
    with pytest.raises(Exception, match="missing.jsonl does not exist"):
        from infdist_assets.registry import load_registry

        load_registry(reg, world["data"]).task("math")


def test_definitions_validate_with_the_dagster_cli():
    env = {**os.environ, "INFDIST_DATA": str(ROOT / "data")}
    res = subprocess.run([str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


def test_definitions_have_the_graph_partitions_and_gpu_tags():
    from infdist_assets.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"sampled_pool", "warmup_checkpoint", "pool_embeddings", "landmark_gradients", "krr_coefficients",
            "per_target_weights", "infdist/selected_subset", "infdist/fine_tuned_model", "infdist/eval_scores"} <= keys
    node = graph.get(dg.AssetKey("per_target_weights"))
    assert set(node.partitions_def.partition_dimension_names) == {"model", "task"}
    assert dg.AssetKey("krr_coefficients") in node.parent_keys
    ops = {n.name: n for n in defs.get_assets_def("landmark_gradients").node_def.node_defs}
    assert set(ops) == {"landmark_gradients__plan", "landmark_gradients__shard", "landmark_gradients__gather"}
    shard = ops["landmark_gradients__shard"]
    k8s = shard.tags["dagster-k8s/config"]
    k8s = json.loads(k8s) if isinstance(k8s, str) else k8s
    assert k8s["container_config"]["resources"]["limits"]["nvidia.com/gpu"] == "1", "a GPU per shard step"
    assert shard.pool == "gpu"
    assert "dagster-k8s/config" not in ops["landmark_gradients__gather"].tags, "plan and gather need no GPU"
    assert "dagster-k8s/config" not in defs.get_assets_def("krr_coefficients").op.tags, "KRR runs on CPU"
    assert {s.name for s in defs.schedules} == {"reselection_schedule"}
    status = {s.name: s.default_status for s in defs.sensors}
    assert status.pop("dead_run_sensor") == dg.DefaultSensorStatus.RUNNING, "killed runs are reaped by default"
    assert set(status.values()) == {dg.DefaultSensorStatus.STOPPED}, "automation that starts runs is opt-in"


def test_core_never_imports_dagster_and_installs_without_it():
    """Every infdist_core module imports with dagster made unimportable, and the package's core
    requirements name no dagster package (the asset layer's are the ``dagster`` extra)."""
    import tomllib

    code = "import sys; sys.modules['dagster'] = None\n" \
           "import importlib, pkgutil, infdist_core\n" \
           "mods = [m.name for m in pkgutil.walk_packages(infdist_core.__path__, 'infdist_core.')]\n" \
           "[importlib.import_module(m) for m in mods]\n" \
           "print(len(mods))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    every = len(list((ROOT / "infdist_core").rglob("*.py"))) - 1  # every module and sub-package but the top
    assert out.stdout.strip() == str(every), out.stderr
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.lower().startswith("dagster")]
    assert {d.split("==")[0] for d in project["optional-dependencies"]["dagster"]} >= {"dagster", "dagster-webserver"}


def test_second_order_in_the_pipeline_is_refused_with_the_reason():
    from infdist_core.config import SelectionConfig

    with pytest.raises(ValueError, match="first-order Influence Distillation only"):
        SelectionConfig.of(eta=1e-5)


def test_target_side_refuses_pool_artefacts_made_with_other_settings(world):
    from infdist_assets.resources import SelectionSettings

    res = dg.materialize(list(world["defs"].assets), selection=["per_target_weights"], raise_on_error=False,
                         partition_key=dg.MultiPartitionKey({"model": "tiny", "task": "math"}),
                         instance=dg.DagsterInstance.ephemeral(),
                         resources={**world["resources"], "settings": SelectionSettings.of(**{**SETTINGS, "projection_dim": 128})})
    err = str(next(e for e in res.all_events if e.is_step_failure).step_failure_data.error)
    assert "was made with other settings" in err and "projection_dim" in err


def test_demo_recognises_an_up_to_date_partition(world):
    from infdist_assets.operations.demo import up_to_date_run
    from infdist_assets.resources import SelectionSettings

    catalog = world["data"] / "infdist.duckdb"
    same = SelectionSettings.of(**SETTINGS).to_core()
    assert up_to_date_run(catalog, same, "tiny", "math") == world["runs"][1].run_id
    assert up_to_date_run(catalog, same.with_(k=K + 1), "tiny", "math") is None
    assert up_to_date_run(catalog, same, "tiny", "code") is None  # no eval there


def test_a_reselection_keeps_the_previous_one_and_reports_what_moved(world):
    from infdist_assets.definitions import build_definitions

    defs = build_definitions(str(world["reg"]), str(world["data"]))
    res = dg.materialize(list(defs.assets), selection=["infdist/selected_subset"], instance=world["instance"],
                         partition_key=dg.MultiPartitionKey({"model": "tiny", "task": "math"}), resources=world["resources"])
    mat = next(e for e in res.get_asset_materialization_events()).materialization
    history = sorted((world["data"] / f"assets/infdist/selected_subset/tiny/math/seed=0/k={K}/history").glob("*.parquet"))
    assert len(history) >= 2, "the first selection was overwritten instead of kept"
    assert mat.metadata["entered"].value == 0 and mat.metadata["left"].value == 0, "same inputs, same selection"
    con = connect_readonly(world["data"] / "infdist.duckdb")
    changes = con.execute("SELECT change, count(*) FROM selection_changes WHERE model = 'tiny' AND task = 'math' "
                          "AND run_id = ? GROUP BY change", [res.run_id]).fetchall()
    con.close()
    assert changes == [("kept", K)]


def test_the_docs_sql_runs_against_the_catalog(world, bench):
    sql = (ROOT / "docs" / "inspecting.md").read_text().split("```sql")[1].split("```")[0]
    sql = sql.replace("smollm2-135m", "tiny").replace("gsm8k", "math").replace("k = 16", f"k = {K}")
    con = connect_readonly(world["data"] / "infdist.duckdb")
    counts = []
    for stmt in sql.split(";"):
        body = "\n".join(line for line in stmt.splitlines() if not line.strip().startswith("--")).strip()
        if body:
            counts.append(len(con.execute(body).fetchall()))
    con.close()
    assert len(counts) == 11 and all(counts), f"a docs/inspecting.md query returned nothing: {counts}"


@pytest.fixture(scope="module")
def bench(world):
    """The quality benchmark on the tiny world (two seeds x two budgets x seven methods): once past
    its deadline, then twice."""
    from infdist_assets.assets.benchmark import BenchmarkPlan, run_benchmark
    from infdist_assets.resources import SelectionSettings

    plan = BenchmarkPlan("tiny", ["math"], [0, 1], [K, K + 2],
                         ("infdist", "uniform", "mid_ppl", "rds", "grad", "full", "landmarks"),
                         {**SETTINGS, "heldout_rows": 0, "task_metrics": False})
    store = world["resources"]["store"]
    import time

    stopped = run_benchmark(world["defs"], plan, world["instance"], store, SelectionSettings, log=lambda m: None,
                            deadline=time.time() - 1)
    assert not stopped.complete and len(stopped.runs) == 1, "past the deadline only the report runs"
    first = run_benchmark(world["defs"], plan, world["instance"], store, SelectionSettings, log=lambda m: None)
    again = run_benchmark(world["defs"], plan, world["instance"], store, SelectionSettings, log=lambda m: None)
    assert first.complete and again.complete
    return first.runs, again.runs


def test_quality_benchmark_fills_the_catalog_and_resumes(world, bench):
    """The benchmark relation, the summary with paired differences, a plot; a second run
    recomputes nothing but the report."""
    first, again = bench
    assert len(first) > 2 and len(again) == 1, "a second run must only recompute quality_report"
    con = connect_readonly(world["data"] / "infdist.duckdb")
    got = con.execute("SELECT method, count(DISTINCT seed) FROM benchmark WHERE task = 'math' AND metric = 'heldout_loss' "
                      f"AND k = {K} GROUP BY method ORDER BY method").fetchall()
    diffs = con.execute("SELECT method, baseline, seeds, rows, delta, low, high, verdict FROM benchmark_summary "
                        "WHERE kind = 'difference' AND metric = 'loss' ORDER BY baseline").fetchall()
    gaps = con.execute("SELECT k, seeds, gap_closed, infdist_gain / grad_gain FROM benchmark_summary "
                       "WHERE kind = 'gap' ORDER BY k").fetchall()
    per_row = con.execute(f"SELECT count(*) FROM eval_rows WHERE task = 'math' AND method = 'uniform' AND k = {K}").fetchone()[0]
    con.close()
    assert got == [("full", 2), ("grad", 2), ("infdist", 2), ("landmarks", 2), ("mid_ppl", 2), ("rds", 2), ("uniform", 2)]
    assert sorted((d[0], d[1], d[2], d[3]) for d in diffs) == (
        [("grad", "uniform", 2, 4)] * 2 +
        [(("infdist", b, 2, 4)) for b in ("full", "grad", "landmarks", "rds", "uniform") for _ in range(2)] +
        [("landmarks", "uniform", 2, 4)] * 2)
    assert [g[:2] for g in gaps] == [(K, 2), (K + 2, 2)] and all(g[2] == pytest.approx(g[3]) for g in gaps), \
        "gap_closed is InfDist's gain over uniform divided by Grad's"
    assert all(d[5] <= d[4] <= d[6] and d[7] in ("win", "loss", "tie") for d in diffs)
    assert per_row == 2 * 4, "4 held-out rows per seed, paired by row id"
    assert (world["data"] / "assets" / "quality_report" / "heldout_loss.svg").read_text().startswith("<svg")
    uniform_ft = {pq.read_table(p).column("model_path")[0].as_py()
                  for p in (world["data"] / "assets" / "uniform" / "fine_tuned_model" / "tiny").glob(f"*/seed=1/k={K}/data.parquet")}
    assert len(uniform_ft) == 1
    full = [pq.read_table(p) for p in (world["data"] / "assets" / "full" / "selected_subset" / "tiny" / "math").glob("seed=1/k=*/data.parquet")]
    assert len(full) == 2 and all(t.num_rows == N_POOL for t in full), "full trains on the whole pool whatever k"
    full_ft = {pq.read_table(p).column("model_path")[0].as_py()
               for p in (world["data"] / "assets" / "full" / "fine_tuned_model" / "tiny" / "math").glob("seed=1/k=*/data.parquet")}
    assert len(full_ft) == 1, "the same samples, order and settings are trained once, whatever k"


def test_landmarks_method_picks_landmarks_and_infdists_landmark_picks_are_counted(world, bench):
    """The landmarks row selects among the seed's landmarks only; ``landmark_picks`` counts how
    many of InfDist's picks are landmarks, read here from the landmark gradients themselves."""
    from infdist_assets.assets.benchmark import landmark_picks
    from infdist_core.config import SelectionConfig

    d = world["data"] / "assets"
    for seed in (0, 1):
        landmarks = set(pq.read_table(d / f"landmark_gradients/tiny/seed={seed}/data.parquet").column("pool_index").to_pylist())
        got = pq.read_table(d / f"landmarks/selected_subset/tiny/math/seed={seed}/k={K}/data.parquet").column("pool_index")
        assert len(got) == K and set(got.to_pylist()) <= landmarks
        infdist = pq.read_table(d / f"infdist/selected_subset/tiny/math/seed={seed}/k={K}/data.parquet").column("pool_index")
        cfg = SelectionConfig.of(**{**SETTINGS, "seed": seed})
        assert landmark_picks(world["data"], "tiny", "math", cfg) == (len(set(infdist.to_pylist()) & landmarks), K, L / N_POOL)
    assert landmark_picks(world["data"], "tiny", "code", SelectionConfig.of(**{**SETTINGS, "seed": 1})) is None


def test_a_re_made_upstream_makes_its_consumers_stale_and_they_are_refused(world, bench):
    """The pool file changes and only sampled_pool is re-materialised: the target side used to
    succeed with the old pool's scores matched to the new pool by position. Now it is refused,
    naming the stale artefact, nothing is overwritten, and the UI's data version changed.
    (Runs last: it leaves the pool side stale.)"""
    from infdist_assets.store.step import is_materialised
    from infdist_core.config import SelectionConfig

    data, instance = world["data"], world["instance"]
    pool = data / "pool.jsonl"
    rows = pool.read_text().splitlines()
    pool.write_text("\n".join(reversed(rows)))  # the same records in another order: another sample
    key = dg.MultiPartitionKey({"model": "tiny", "task": "math"})
    res = dg.materialize(list(world["defs"].assets), selection=["sampled_pool"], partition_key="tiny",
                         instance=instance, resources=world["resources"])
    assert res.success
    weights = sorted((data / "assets" / "per_target_weights" / "tiny" / "math").rglob("*"))
    before = {p: p.stat().st_mtime_ns for p in weights if p.is_file()}
    res = dg.materialize(list(world["defs"].assets), selection=["per_target_weights"], partition_key=key,
                         instance=instance, resources=world["resources"], raise_on_error=False)
    assert not res.success
    error = str(next(e for e in res.all_events if e.is_step_failure).step_failure_data.error)
    assert "pool_embeddings [tiny] is stale: it was made from sampled_pool [tiny] of run" in error, error
    assert {p: p.stat().st_mtime_ns for p in weights if p.is_file()} == before, "nothing written or overwritten"
    cfg = SelectionConfig.of(**SETTINGS)
    assert not is_materialised(data, "landmark_gradients", "tiny", None, cfg)
    assert is_materialised(data, "sampled_pool", "tiny", None, cfg)
    mat = instance.get_latest_materialization_event(dg.AssetKey("sampled_pool"))
    assert mat.asset_materialization.tags["dagster/data_version"].startswith(mat.run_id)


def test_reselection_schedule_starts_only_what_changed(world):
    """Over unchanged inputs the weekly re-selection starts nothing and says 'up to date'; a changed
    target file re-selects only that task; other code for an asset re-selects what it touches."""
    from infdist_assets.operations import automation
    from infdist_assets.operations.demo import run_partition
    from infdist_assets.registry import load_registry
    from infdist_assets.resources import SelectionSettings

    defs, store = world["defs"], world["resources"]["store"]
    settings = SelectionSettings.of(**SETTINGS)
    # current now, whatever the tests before re-made (a re-made upstream makes its consumers stale)
    assert all(r.success for r in run_partition(defs, "tiny", "math", world["instance"], resources=world["resources"]))
    versions = {k.to_user_string(): v for a in defs.assets for k, v in a.code_versions_by_key.items()}
    reg = load_registry(world["reg"], world["data"])
    parts = defs.resolve_job_def("selection_job").partitions_def
    _, schedules, _ = automation.build(reg, None, parts, store, settings, versions)
    schedule = schedules[0]
    ctx = dg.build_schedule_context(scheduled_execution_time=datetime.datetime(2026, 12, 7, 3, 0))
    math_only = dg.MultiPartitionsDefinition({"model": dg.StaticPartitionsDefinition(["tiny"]),
                                              "task": dg.StaticPartitionsDefinition(["math"])})
    _, (math_schedule,), _ = automation.build(reg, None, math_only, store, settings, versions)
    skip = math_schedule(ctx)
    assert isinstance(skip, dg.SkipReason) and "up to date" in skip.skip_message, skip
    requests = schedule(ctx)  # the code task: partly materialised by the fixture, from a pool side re-made since
    assert [str(r.partition_key) for r in requests] == ["tiny|code"], requests
    assert requests[0].tags["infdist/why"].split(":")[0] in ("target_gradients", "per_target_weights", "recovery_report",
                                                              "infdist/selected_subset", "uniform/selected_subset")
    targets = world["data"] / "math.jsonl"
    original = targets.read_bytes()
    try:
        targets.write_bytes(original + b"\n" + json.dumps({"id": "t9", "messages": [
            {"role": "user", "content": "What is 9+1?"}, {"role": "assistant", "content": "10."}]}).encode())
        stale = automation.stale_partitions(store, settings, ["tiny|math"], automation.SELECTION_JOB_ASSETS, versions)
        assert "math.jsonl changed" in stale["tiny|math"], stale
    finally:
        targets.write_bytes(original)
    assert automation.stale_partitions(store, settings, ["tiny|math"], automation.SELECTION_JOB_ASSETS, versions) == {}, \
        "the same content again is the same input"
    edited = {**versions, "per_target_weights": versions["per_target_weights"] + "-edited"}
    stale = automation.stale_partitions(store, settings, ["tiny|math"], automation.SELECTION_JOB_ASSETS, edited)
    assert "per_target_weights's code changed" in stale["tiny|math"]


def test_selection_history_relates_consecutive_selections(tmp_path):
    """selection_changes against the set differences of two synthetic selections of one partition
    (and a third of another partition, which must not pair with them)."""
    import pyarrow as pa

    from infdist_assets.store import catalog, storage

    def write(run, when, picks, task="t"):
        n = len(picks)
        table = pa.table({"model": ["m"] * n, "task": [task] * n, "method": ["infdist"] * n, "seed": [0] * n, "k": [n] * n,
                          "sample_id": [p for p, _ in picks], "pool_index": list(range(n)), "rank": list(range(1, n + 1)),
                          "weight": [w for _, w in picks], "run_id": [run] * n,
                          "selected_at": pa.array([datetime.datetime(2026, 12, when, tzinfo=datetime.timezone.utc)] * n,
                                                  pa.timestamp("us", tz="UTC"))})
        storage.write_table(table, tmp_path / f"assets/infdist/selected_subset/m/{task}/seed=0/k={n}/history/{when}-{run}.parquet",
                            {"run_id": run})

    write("r1", 1, [("a", 1.0), ("b", 2.0), ("c", 0.5)])
    write("r2", 8, [("b", 2.5), ("d", 1.0), ("a", 1.0)])
    write("x1", 2, [("a", 1.0), ("z", 1.0), ("y", 1.0)], task="other")
    path = tmp_path / "infdist.duckdb"
    catalog.rebuild(tmp_path, path, [])
    con = connect_readonly(path)
    rows = con.execute("SELECT sample_id, change, weight_before, weight_after, weight_change, previous_run, run_id "
                       "FROM selection_changes ORDER BY sample_id").fetchall()
    con.close()
    assert rows == [("a", "kept", 1.0, 1.0, 0.0, "r1", "r2"), ("b", "kept", 2.0, 2.5, 0.5, "r1", "r2"),
                    ("c", "left", 0.5, None, -0.5, "r1", "r2"), ("d", "entered", None, 1.0, 1.0, "r1", "r2")]
