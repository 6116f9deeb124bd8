"""Re-selection after the pool grew: only the new rows are computed, and the result is the one a
from-scratch run with the same landmarks and warm-up gives, bit for bit."""

import json
import shutil

import dagster as dg
import numpy as np
import pyarrow.parquet as pq

from tests.conftest import write_world

BASE = dict(max_length=64, n_landmarks=8, k=4, projection_dim=256, embedding_dim=64, pool_sampling="stable",
            embedding="grad-last:1+grad-head", train_micro_batch=2, train_grad_accum=1)
SELECTION = ["sampled_pool", "warmup_checkpoint", "landmark_gradients", "pool_embeddings", "krr_coefficients",
             "target_gradients", "per_target_weights", "infdist/selected_subset"]


def _grow(pool, n: int, prefix: str = "new") -> None:
    rows = [{"id": f"{prefix}{i}", "messages": [{"role": "user", "content": f"{prefix} question {i} about rivers"},
                                                {"role": "assistant", "content": f"{prefix} answer {i} " + "loop " * (i % 5)}]}
            for i in range(n)]
    pool.write_text(pool.read_text() + "\n" + "\n".join(json.dumps(r) for r in rows))


def _select(data, reg, settings: dict) -> dict[str, dict]:
    """Materialise the pool side and the InfDist selection for tiny x math; each asset's metadata."""
    from infdist_assets.definitions import build_definitions
    from infdist_assets.resources import SelectionSettings

    defs = build_definitions(str(reg), str(data))
    res = {**defs.resources, "settings": SelectionSettings.of(**settings)}
    instance = dg.DagsterInstance.ephemeral()
    runs = [dg.materialize(list(defs.assets), selection=SELECTION[:5], partition_key="tiny", instance=instance, resources=res),
            dg.materialize(list(defs.assets), selection=SELECTION[5:], instance=instance, resources=res,
                           partition_key=dg.MultiPartitionKey({"model": "tiny", "task": "math"}))]
    assert all(r.success for r in runs)
    return {e.asset_key.to_user_string(): {k: v.value for k, v in e.materialization.metadata.items()}
            for r in runs for e in r.get_asset_materialization_events()}


def _table(data, asset: str, task: str | None = None, name: str = "data.parquet", variant: str = "seed=0"):
    path = data / "assets" / asset / "tiny"
    path = path / task if task else path
    return pq.read_table(path / variant / name)


def test_an_incremental_reselection_equals_a_from_scratch_one_and_computes_only_the_new_rows(tmp_path):
    """The pool grows by 20% (6 new rows, the sample with it); the re-selection computes proxy rows
    for the new samples only, gradients for the new landmarks only and none for the targets, and
    its weights, scores and selection equal a fresh store's run on the grown pool bit for bit (the
    same landmarks: stable sampling; the same warm-up: none)."""
    inc, fresh = tmp_path / "incremental", tmp_path / "fresh"
    inc.mkdir()
    reg = write_world(inc, pool_rows=30)
    first = _select(inc, reg, {**BASE, "pool_size": 30, "warmup_steps": 0})
    # the 8 landmarks' proxy rows come from their gradients' forwards, the other 22 from the embedding pass
    assert first["landmark_gradients"]["proxy_rows_computed"] == 8
    assert first["pool_embeddings"]["rows_computed"] == 22 and first["pool_embeddings"]["rows_reused"] == 8
    landmarks_before = set(_table(inc, "landmark_gradients").column("sample_id").to_pylist())

    _grow(inc / "pool.jsonl", 6)
    grown = {**BASE, "pool_size": 36, "warmup_steps": 0}
    again = _select(inc, reg, grown)
    landmarks = _table(inc, "landmark_gradients").column("sample_id").to_pylist()
    new_landmarks = [i for i in landmarks if i.startswith("new")]
    assert set(landmarks) - set(new_landmarks) <= landmarks_before, "an old sample became a landmark"
    assert again["landmark_gradients"].get("proxy_rows_computed", 0) == len(new_landmarks)
    assert again["pool_embeddings"]["rows_computed"] == 6 - len(new_landmarks)
    assert again["pool_embeddings"]["rows_reused"] == 30 + len(new_landmarks)
    assert again["landmark_gradients"]["rows_computed"] == len(new_landmarks)
    assert again["landmark_gradients"]["rows_reused"] == 8 - len(new_landmarks)
    # the 3 targets' gradients and their proxy rows (the direct term's): all reused
    assert again["target_gradients"]["rows_computed"] == 0 and again["target_gradients"]["rows_reused"] == 6

    shutil.copytree(inc, fresh, ignore=shutil.ignore_patterns("assets", "cache", "lineage", "checkpoints", "*.duckdb*",
                                                              "dagster*"))
    scratch = _select(fresh, fresh / "registry.yaml", grown)
    assert scratch["landmark_gradients"]["rows_reused"] == 0
    assert scratch["pool_embeddings"]["rows_reused"] == scratch["landmark_gradients"]["proxy_rows_computed"] == 8
    for asset, task, column in (("pool_embeddings", None, "embedding"), ("landmark_gradients", None, "gradient"),
                                ("per_target_weights", "math", "scores"), ("per_target_weights", "math", "weight"),
                                ("infdist/selected_subset", "math", "sample_id"), ("infdist/selected_subset", "math", "weight")):
        variant = "seed=0/k=4" if task else "seed=0"
        a, b = (_table(d, asset, task, variant=variant).column(column).to_pylist() for d in (inc, fresh))
        assert a == b, f"{asset}.{column} differs from the from-scratch run"


def test_the_warmup_is_kept_until_the_pool_has_changed_past_pool_refresh(tmp_path):
    """With a warm-up, a small growth keeps its checkpoint (same digest, nothing trained, every
    landmark gradient of an old sample reused); growth past ``pool_refresh`` trains a new one,
    recomputes every row at the new weights and drops the rows at the old ones."""
    data = tmp_path / "data"
    data.mkdir()
    reg = write_world(data, pool_rows=30)
    settings = {**BASE, "warmup_steps": 2, "warmup_samples": 6, "pool_refresh": 0.3}
    first = _select(data, reg, {**settings, "pool_size": 30})
    assert first["warmup_checkpoint"]["warmup"] == "trained"
    sha = first["warmup_checkpoint"]["sha256"]

    _grow(data / "pool.jsonl", 6)  # 6 of 36 new: 17% <= 30%
    kept = _select(data, reg, {**settings, "pool_size": 36})
    assert kept["warmup_checkpoint"]["warmup"] == "kept" and kept["warmup_checkpoint"]["sha256"] == sha
    assert abs(kept["warmup_checkpoint"]["sample_share"] - 30 / 36) < 1e-3
    new_rows = kept["pool_embeddings"]["rows_computed"] + kept["landmark_gradients"].get("proxy_rows_computed", 0)
    assert new_rows == 6 and kept["target_gradients"]["rows_computed"] == 0  # (new landmarks': from their gradients)

    _grow(data / "pool.jsonl", 12, prefix="more")  # 18 of 48 not trained on: 37.5% > 30%
    retrained = _select(data, reg, {**settings, "pool_size": 48})
    assert retrained["warmup_checkpoint"]["warmup"] == "trained" and retrained["warmup_checkpoint"]["sha256"] != sha
    assert retrained["target_gradients"]["rows_reused"] == 0
    assert retrained["pool_embeddings"]["rows_reused"] == retrained["landmark_gradients"]["proxy_rows_computed"] == 8
    states = [json.loads(p.read_text()) for p in (data / "cache" / "rows" / "tiny").glob("*/*/state.json")]
    assert states and all(s["weights"] == retrained["warmup_checkpoint"]["sha256"] for s in states if s["warmup"])
    trained_on = _table(data, "warmup_checkpoint", name="trained_on.parquet", variant="").column("sample_id").to_pylist()
    assert len(trained_on) == 48 and any(i.startswith("more") for i in trained_on)


def test_a_permutation_sample_never_keeps_the_warmup_but_reuses_rows_of_unchanged_weights(tmp_path):
    """The default sampling retrains the warm-up on every pool change (today's behaviour); with no
    warm-up, rows of samples that stay in the sample are still reused."""
    data = tmp_path / "data"
    data.mkdir()
    reg = write_world(data, pool_rows=30)
    settings = {**BASE, "pool_sampling": "permutation", "pool_size": 20}
    _select(data, reg, {**settings, "warmup_steps": 2, "warmup_samples": 6})
    again = _select(data, reg, {**settings, "warmup_steps": 2, "warmup_samples": 6})
    assert again["warmup_checkpoint"]["warmup"] == "trained"
    _grow(data / "pool.jsonl", 6)  # a new shuffle: a warm-up trained on another sample, in its own folder
    grown = _select(data, reg, {**settings, "warmup_steps": 2, "warmup_samples": 6})
    assert grown["warmup_checkpoint"]["sha256"] != again["warmup_checkpoint"]["sha256"]
    assert grown["pool_embeddings"]["rows_reused"] == grown["landmark_gradients"]["proxy_rows_computed"] == 8
    none = _select(data, reg, {**settings, "warmup_steps": 0})
    twice = _select(data, reg, {**settings, "warmup_steps": 0})
    assert none["pool_embeddings"]["rows_computed"] == 12 and none["landmark_gradients"]["proxy_rows_computed"] == 8
    assert twice["pool_embeddings"]["rows_computed"] == 0 and twice["pool_embeddings"]["rows_reused"] == 20
    assert np.isfinite(twice["krr_coefficients"]["bandwidth2"])
