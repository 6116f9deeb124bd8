"""A pool file that grows between re-selections, through the asset layer."""

import json

import dagster as dg
import pyarrow.parquet as pq

from tests.conftest import write_world


def test_a_stable_pool_sample_keeps_its_members_when_the_pool_file_grows(tmp_path):
    """``pool_sampling=stable`` through ``sampled_pool``: rows appended to the pool file and the
    asset re-materialised, every old member that no new row outranks is still there, in order, as
    many left as new rows entered, and the sample is the core's sample of the grown file."""
    from infdist_assets.definitions import build_definitions
    from infdist_assets.resources import SelectionSettings
    from infdist_core.config import SelectionConfig
    from infdist_core.data.records import load_records
    from infdist_core.model.modeling import load_tokenizer
    from infdist_core.pipeline import sample_pool

    data = tmp_path / "data"
    data.mkdir()
    reg = write_world(data, pool_rows=40)
    defs = build_definitions(str(reg), str(data))
    settings = dict(pool_size=12, n_landmarks=4, k=3, max_length=64, pool_sampling="stable")

    def materialise() -> list[str]:
        res = dg.materialize(list(defs.assets), selection=["sampled_pool"], partition_key="tiny",
                             instance=dg.DagsterInstance.ephemeral(),
                             resources={**defs.resources, "settings": SelectionSettings.of(**settings)})
        assert res.success
        return pq.read_table(data / "assets" / "sampled_pool" / "tiny" / "data.parquet").column("sample_id").to_pylist()

    before = materialise()
    pool = data / "pool.jsonl"
    new = [{"id": f"new{i}", "messages": [{"role": "user", "content": f"new question {i}"},
                                          {"role": "assistant", "content": f"new answer {i}"}]} for i in range(10)]
    pool.write_text(pool.read_text() + "\n" + "\n".join(json.dumps(r) for r in new))
    after = materialise()
    tok = load_tokenizer(data / "models" / "tiny")
    assert after == [s.id for s in sample_pool(load_records(pool), tok, SelectionConfig.of(**settings)).samples]
    entered, left = [i for i in after if i.startswith("new")], [i for i in before if i not in after]
    assert entered and len(left) == len(entered)  # this seed: some new rows outrank old members
    assert [i for i in after if i not in entered] == [i for i in before if i not in left]
