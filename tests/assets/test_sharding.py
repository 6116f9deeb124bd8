"""The pool side in shards: bit-identical to one shard, resumable after kill -9 without recomputing
finished shards, and parallel under the multiprocess executor."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from infdist_core.config import nested
from infdist_core.data.shards import shard_bounds
from tests.conftest import write_world

ROOT = Path(__file__).resolve().parents[2]
SHARDED = ("landmark_gradients", "pool_embeddings", "pool_perplexity", "rds_embeddings", "pool_gradients")
SETTINGS = dict(pool_size=30, max_length=64, n_landmarks=12, k=5, projection_dim=256, embedding_dim=64, warmup_samples=8,
                warmup_steps=2, train_micro_batch=2, train_grad_accum=1,
                embedding_candidates=["grad-last:1+grad-head", "jvp-hidden:2:2"])


@pytest.mark.parametrize("n,shards,align", [(30, 4, 3), (18, 1, 8), (7, 5, 1), (10, 3, 8), (0, 2, 1), (16, 2, 8)])
def test_shard_bounds_cover_in_order_on_batch_boundaries(n, shards, align):
    b = shard_bounds(n, shards, align)
    assert [x for lo, hi in b for x in range(lo, hi)] == list(range(n)), "every item once, in order"
    assert len(b) <= shards and all(hi > lo for lo, hi in b)
    assert all(lo % align == 0 for lo, _ in b), "each shard starts a batch"


def _materialize(data: Path, reg: Path, selection, **settings):
    from infdist_assets.definitions import build_definitions
    from infdist_assets.resources import SelectionSettings

    defs = build_definitions(str(reg), str(data))
    res = {"store": defs.resources["store"], "settings": SelectionSettings.of(**settings)}
    return dg.materialize(list(defs.assets), selection=selection, partition_key="tiny", resources=res,
                          instance=dg.DagsterInstance.ephemeral())


def _artefacts(data: Path) -> dict[str, object]:
    out = {}
    for asset in SHARDED:
        (path,) = (data / "assets" / asset / "tiny").rglob("data.parquet")
        out[asset] = pq.read_table(path)
    return out


@pytest.mark.parametrize("embedding", ["auto", "jvp-hidden:2:2"])  # auto picks per-sample rows; jvp is batched
def test_sharded_pool_side_is_bit_identical_to_one_shard(tmp_path, embedding):
    pool_side = ["sampled_pool", "warmup_checkpoint", *SHARDED]
    tables = []
    for shards in (1, 4):
        data = tmp_path / f"shards{shards}"
        data.mkdir()
        reg = write_world(data)
        assert _materialize(data, reg, pool_side, **{**SETTINGS, "embedding": embedding, "pool_shards": shards}).success
        tables.append(_artefacts(data))
        written = sorted(p.name for p in (data / "assets" / "pool_embeddings" / "tiny").rglob("shards/*.parquet"))
        assert len(written) == min(shards, 3), f"{shards} shard(s) asked, 18 rows in batches of 8: {written}"
    for asset in SHARDED:
        assert tables[0][asset].equals(tables[1][asset]), f"{asset}: 4 shards differ from 1"


CHILD = r"""
import sys, time
from pathlib import Path
import dagster as dg
from infdist_core import pipeline

def slowed(compute):  # a slow shard, so that the kill lands between shards
    def slow(*args, **kwargs):
        time.sleep(float(sys.argv[3]))
        return compute(*args, **kwargs)
    return slow
for name in ("compute_gradients", "compute_gradients_and_proxy"):  # (the second: with the landmarks' proxy rows)
    setattr(pipeline, name, slowed(getattr(pipeline, name)))

sys.path.insert(0, sys.argv[4])
from tests.assets.test_sharding import _materialize, SETTINGS
_materialize(Path(sys.argv[1]), Path(sys.argv[2]), ["landmark_gradients"], **SETTINGS, pool_shards=4)
"""


def test_a_killed_pool_side_resumes_without_recomputing_finished_shards(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    reg = write_world(data)
    assert _materialize(data, reg, ["sampled_pool", "warmup_checkpoint"], **SETTINGS).success
    shard_dir = data / "assets" / "landmark_gradients" / "tiny" / "seed=0" / "shards"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(data), str(reg), "2.0", str(ROOT)], cwd=ROOT)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and len(list(shard_dir.glob("*.meta.json"))) < 2:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    finished = {p: p.stat().st_mtime_ns for p in shard_dir.glob("*.parquet")}
    assert 2 <= len(finished) < 4, f"the kill should land between shards: {sorted(p.name for p in finished)}"
    assert not (shard_dir.parent / "data.parquet").exists(), "no gathered artefact from a killed run"

    from infdist_core import pipeline

    calls = []
    for name in ("compute_gradients", "compute_gradients_and_proxy"):
        real = getattr(pipeline, name)
        monkeypatch.setattr(pipeline, name, lambda *a, real=real, **k: calls.append(len(a[1])) or real(*a, **k))
    assert _materialize(data, reg, ["landmark_gradients"], **SETTINGS, pool_shards=4).success
    assert len(calls) == 4 - len(finished), f"only the unfinished shards are recomputed (calls: {calls})"
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items()), "finished shards are never rewritten"
    resumed = pq.read_table(shard_dir.parent / "data.parquet")

    once = tmp_path / "once"
    once.mkdir()
    reg1 = write_world(once)
    assert _materialize(once, reg1, ["sampled_pool", "warmup_checkpoint", "landmark_gradients"], **SETTINGS).success
    (path,) = (once / "assets" / "landmark_gradients" / "tiny").rglob("data.parquet")
    assert resumed.equals(pq.read_table(path)), "resumed shards gather to the one-shard artefact"


def test_two_shards_run_at_the_same_time_under_the_multiprocess_executor(tmp_path):
    """The pool-side job through dg.execute_job (steps in their own processes, 2 at a time): the
    two shard steps of pool_perplexity overlap in time."""
    data = tmp_path / "data"
    data.mkdir()
    reg = write_world(data)
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "INFDIST_REGISTRY": str(reg), "INFDIST_DATA": str(data)}
    code = (f"import json, dagster as dg\n"
            f"from infdist_assets.definitions import pool_side_job\n"
            f"config = {{'resources': {{'settings': {{'config': {json.dumps(nested({**SETTINGS, 'pool_shards': 2}))}}}}},\n"
            f"          'execution': {{'config': {{'multiprocess': {{'max_concurrent': 2}}}}}}}}\n"
            f"with dg.DagsterInstance.get() as instance:\n"
            f"    res = dg.execute_job(dg.reconstructable(pool_side_job), instance=instance, run_config=config,\n"
            f"                         tags={{'dagster/partition': 'tiny'}}, asset_selection=[dg.AssetKey(k) for k in\n"
            f"                         ('sampled_pool', 'pool_perplexity')])\n"
            f"    spans = {{}}\n"
            f"    for e in instance.all_logs(res.run_id):\n"
            f"        if e.step_key and 'pool_perplexity__shard' in e.step_key and e.dagster_event is not None:\n"
            f"            kind = e.dagster_event.event_type_value\n"
            f"            if kind in ('STEP_START', 'STEP_SUCCESS'):\n"
            f"                spans.setdefault(e.step_key, {{}})[kind] = e.timestamp\n"
            f"    print(json.dumps({{'success': res.success, 'spans': spans}}))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["success"]
    spans = list(result["spans"].values())
    assert len(spans) == 2, result
    (a, b) = spans
    assert a["STEP_START"] < b["STEP_SUCCESS"] and b["STEP_START"] < a["STEP_SUCCESS"], f"the shards did not overlap: {spans}"


def test_a_pool_of_landmarks_only_still_gathers_its_embeddings(tmp_path):
    """n_landmarks == pool_size leaves no row to shard: one empty shard step, and the gather
    still writes every pool row (the landmarks' rows from the plan)."""
    reg = write_world(tmp_path)
    settings = {**SETTINGS, "pool_size": 12, "n_landmarks": 12, "pool_shards": 3}
    res = _materialize(tmp_path, reg, ["sampled_pool", "warmup_checkpoint", "landmark_gradients", "pool_embeddings"],
                       **settings)
    assert res.success
    (path,) = (tmp_path / "assets" / "pool_embeddings" / "tiny").rglob("data.parquet")
    t = pq.read_table(path)
    assert t.num_rows == 12 and t.column("pool_index").to_pylist() == list(range(12))
    assert not list(path.parent.glob("shards/*.parquet")), "no shard file for an empty shard"


def test_the_landmarks_proxy_rows_from_their_gradient_pass_equal_the_embedding_pass(tmp_path, monkeypatch):
    """The landmark-gradient pass computes the landmarks' rows of the partial-backward candidate
    from its own forwards (warm-up weights, Adam-scaled gradients); the pool embeddings and
    landmark gradients are the ones a run that embeds the landmarks separately writes, bit for bit."""
    from infdist_core import pipeline

    pool_side = ["sampled_pool", "warmup_checkpoint", "landmark_gradients", "pool_embeddings"]
    tables, metadata = [], []
    for shared in (True, False):
        data = tmp_path / f"shared{shared}"
        data.mkdir()
        reg = write_world(data)
        if not shared:
            monkeypatch.setattr(pipeline, "gradient_pass_proxy", lambda cfg: None)
        res = _materialize(data, reg, pool_side, **SETTINGS)
        assert res.success
        metadata.append({e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
                         for e in res.get_asset_materialization_events()})
        tables.append({a: next((data / "assets" / a / "tiny").rglob("data.parquet")) for a in pool_side[2:]})
    assert metadata[0]["landmark_gradients"]["proxy_rows_computed"] == 12
    assert metadata[0]["pool_embeddings"]["rows_computed"] == 18 + 12  # the others, and every landmark's JVP row
    assert "proxy_rows_computed" not in metadata[1]["landmark_gradients"]
    assert metadata[1]["pool_embeddings"]["rows_computed"] == 18 + 2 * 12
    for asset, (a, b) in {k: (tables[0][k], tables[1][k]) for k in tables[0]}.items():
        assert pq.read_table(a).equals(pq.read_table(b)), f"{asset} differs when the landmarks are embedded apart"
