"""Targets get their own token limit: a target whose answer starts past ``max_length`` is left out
of the selection, and ``target_max_length`` brings it back without lengthening the pool."""

import json

import dagster as dg
import pyarrow.parquet as pq

from tests.conftest import write_world

SETTINGS = dict(pool_size=20, max_length=64, n_landmarks=8, k=4, projection_dim=256, embedding_dim=64, warmup_steps=0,
                embedding="grad-head", device="cpu")


def _target_gradients(data, reg, pool_side: bool = True, **change) -> tuple[list[str], dict]:
    from infdist_assets.definitions import build_definitions
    from infdist_assets.resources import SelectionSettings

    defs = build_definitions(str(reg), str(data))
    instance = dg.DagsterInstance.ephemeral()
    resources = {**defs.resources, "settings": SelectionSettings.of(**SETTINGS, **change)}
    steps = [(["sampled_pool", "warmup_checkpoint"], "tiny")] if pool_side else []
    for selection, key in steps + [(["target_gradients"], dg.MultiPartitionKey({"model": "tiny", "task": "long"}))]:
        res = dg.materialize(list(defs.assets), selection=selection, partition_key=key, instance=instance,
                             resources=resources)
        assert res.success
    path = data / "assets" / "target_gradients" / "tiny" / "long" / "data.parquet"
    meta = json.loads(path.with_name("data.meta.json").read_text())
    return pq.read_table(path).column("target_id").to_pylist(), meta


def test_a_long_target_is_kept_with_target_max_length(tmp_path):
    reg = write_world(tmp_path)
    long_prompt = " ".join(["explain"] * 80)  # about 80 tokens of prompt: its answer starts past 64
    rows = [{"id": "short", "messages": [{"role": "user", "content": "Add 1 and 2"},
                                         {"role": "assistant", "content": "1 + 2 = 3"}]},
            {"id": "long", "messages": [{"role": "user", "content": long_prompt},
                                        {"role": "assistant", "content": "Done."}]}]
    (tmp_path / "long.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    reg.write_text(reg.read_text() + "  long: {targets: long.jsonl}\n")

    kept, meta = _target_gradients(tmp_path, reg)
    assert kept == ["short"] and "long" in meta["excluded"]
    # the pool side does not read target_max_length: its artefacts serve the longer targets as they are
    warmup = tmp_path / "assets" / "warmup_checkpoint" / "tiny" / "data.meta.json"
    before = json.loads(warmup.read_text())["run_id"]
    kept, meta = _target_gradients(tmp_path, reg, pool_side=False, target_max_length=160)
    assert kept == ["short", "long"] and not meta["excluded"]
    assert meta["config"]["max_length"] == 64  # the pool's limit did not move
    assert json.loads(warmup.read_text())["run_id"] == before


def test_an_artefact_from_before_the_setting_existed_counts_as_its_neutral_value():
    """A sidecar written before ``target_max_length`` existed records no value for it: it was made
    as with 0 (targets at max_length), so it serves the default and is refused for 384."""
    from infdist_assets.store.step import settings_diff
    from infdist_core.config import SelectionConfig

    old = {"config": {k: v for k, v in SelectionConfig().to_dict().items() if k != "target_max_length"}}
    assert settings_diff(old, SelectionConfig(), "target_gradients", True) == {}
    assert settings_diff(old, SelectionConfig.of(target_max_length=384), "target_gradients", True) == {
        "target_max_length": (0, 384)}
    assert settings_diff(old, SelectionConfig.of(k=7), "target_gradients", True) == {}  # k: not a data-side setting
    # the pool side does not read it: a warm-up serves targets of any length
    assert settings_diff(old, SelectionConfig.of(target_max_length=384), "warmup_checkpoint", False) == {}

