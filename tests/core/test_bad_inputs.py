"""Bad inputs a user or an operator gives: each one a clear error naming the file, line or row,
field and value (or a sample excluded with its reason), before any work starts; never a silent
wrong result. The asset-level cases (nothing written, nothing overwritten) are in test_assets.py."""

import json

import pytest

from infdist_core.config import SelectionConfig
from infdist_core.data.records import RecordError, load_records

OK_ROW = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}


def _jsonl(path, lines: list[str | dict]):
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


# ------------------------------------------------------------------------------- pool rows
@pytest.mark.parametrize("row, field", [
    ({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None}]}, "messages[1].content is null"),
    ({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": None}]}, "conversations[1].value is null"),
    ({"instruction": "Add", "output": None}, "output is null"),
    ({"prompt": "Hi", "completion": ["a", "list"]}, "completion is a list, expected text"),
])
def test_a_null_or_non_text_turn_is_refused_with_its_line_and_field(tmp_path, row, field):
    """null used to become the text "None" and be trained on."""
    path = _jsonl(tmp_path / "pool.jsonl", [OK_ROW, "", row])
    with pytest.raises(RecordError) as err:
        load_records(path)
    assert f"{path}: line 3: malformed turns ({field})" == str(err.value)


def test_json_errors_and_row_numbers_are_one_based_and_count_blank_lines(tmp_path):
    path = _jsonl(tmp_path / "pool.jsonl", [OK_ROW, "", "", '{"messages": [}'])
    with pytest.raises(RecordError, match=r"pool.jsonl: line 4 is not valid JSON \(.* at column 15\)"):
        load_records(path)
    path = _jsonl(tmp_path / "pool.jsonl", [OK_ROW, {"text": "no shape"}])
    with pytest.raises(RecordError, match=r"line 2 has fields \['text'\]"):
        load_records(path)


def test_parquet_rows_are_numbered_from_one(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "pool.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b"], "completion": ["x", None]}), path)
    with pytest.raises(RecordError, match=r"pool.parquet: row 2: malformed turns \(completion is null\)"):
        load_records(path)


def test_a_non_utf8_pool_names_the_line_and_byte(tmp_path):
    path = tmp_path / "pool.jsonl"
    path.write_bytes(json.dumps(OK_ROW).encode() + b"\n" + b'{"prompt": "caf\xe9", "completion": "x"}\n')
    with pytest.raises(RecordError, match=r"pool.jsonl: line 2 is not UTF-8 \(byte 0xe9 at column 16\)"):
        load_records(path)


def test_rows_without_id_keep_their_zero_based_position_as_id(tmp_path):
    """Ids of id-less rows are unchanged by the 1-based error messages (artefacts pair by id)."""
    recs = load_records(_jsonl(tmp_path / "pool.jsonl", [OK_ROW, "", OK_ROW]))
    assert [r["id"] for r in recs] == ["0", "1"]


def test_an_empty_assistant_reply_is_excluded_with_the_reason(tokenizer):
    from infdist_core.model.tokenization import tokenize_records

    rows = [{"id": "e", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  "}]},
            {"id": "ok", **OK_ROW}]
    ts = tokenize_records(tokenizer, rows, 64)
    assert [s.id for s in ts.samples] == ["ok"] and ts.excluded == {"e": "empty assistant reply (turn 2)"}


def test_too_few_usable_pool_records_says_why(tokenizer):
    from infdist_core.pipeline import sample_pool

    rows = [{"id": str(i), "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}]}
            for i in range(3)] + [{"id": "s", "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]}]
    with pytest.raises(ValueError, match=r"only 0 of 4 pool records are usable, fewer than pool_size=2; excluded: "
                                         r"3 x empty assistant reply, 1 x no assistant turn"):
        sample_pool(rows, tokenizer, SelectionConfig.of(pool_size=2, n_landmarks=2, k=1))


# -------------------------------------------------------------------------------- settings
@pytest.mark.parametrize("change, message", [
    (dict(warmup_steps=-1), "warmup_steps': -1"),
    (dict(warmup_samples=0), "warmup_samples': 0"),
    (dict(train_micro_batch=0), "train_micro_batch': 0"),
    (dict(train_grad_accum=0), "train_grad_accum': 0"),
    (dict(train_lr=0.0), "train_lr': 0.0"),
    (dict(train_epochs=0), "train_epochs': 0"),
    (dict(eval_subset=-1), "eval_subset': -1"),
    (dict(max_new_tokens=0), "max_new_tokens': 0"),
    (dict(lora_rank=-1), "lora_rank': -1"),
    (dict(train_save_steps=-5), "train_save_steps': -5"),
    (dict(train_precision="fp16"), "train_precision='fp16': use auto, float32 or bfloat16"),
    (dict(grad_params="middle"), "grad_params='middle'"),
    (dict(grad_params="last:0"), "grad_params='last:0'"),
    (dict(grad_params="last:x"), "grad_params='last:x'"),
    (dict(device="gpu"), "device='gpu'"),
    (dict(embedding="grad-tail:2"), "unknown kind 'grad-tail'"),
    (dict(embedding="grad-last:2+grad-head:x"), "must be positive integers"),
    (dict(embedding="rds:4"), "rds takes at most 0 parameter"),
    (dict(embedding_candidates=("grad-last:0",)), "'grad-last:0'"),
])
def test_bad_settings_are_refused_by_field_and_value(change, message):
    with pytest.raises(ValueError) as err:
        SelectionConfig.of(**change)
    assert message in str(err.value), str(err.value)


def test_valid_specs_and_settings_pass():
    SelectionConfig.of(embedding="grad-last:2+grad-head", grad_params="last:3", device="cuda:1")
    SelectionConfig.of(embedding="grad-head:12:1024", warmup_steps=0)
    SelectionConfig.of(embedding="grad-head:12:0+jvp-hidden:4:2")


def test_model_dependent_settings_name_the_model_limit(tiny_model):
    from infdist_core.model.modeling import block_pattern
    from infdist_core.pipeline import gradient_projector

    with pytest.raises(ValueError, match=r"'last:100': the model has 4 blocks, so N must be in 1..4"):
        block_pattern(tiny_model, "last:100")
    with pytest.raises(ValueError, match=r"projection_dim=10000000000 exceeds the \d+ parameters grad_params='all' covers"):
        gradient_projector(tiny_model, SelectionConfig.of(projection_dim=10**10))


# -------------------------------------------------------------------------------- registry
def _registry(tmp_path, body: str):
    from infdist_assets.registry import load_registry

    reg = tmp_path / "r.yaml"
    reg.write_text(body)
    return lambda: load_registry(reg, tmp_path)


@pytest.mark.parametrize("name", ["HuggingFaceTB/SmolLM2-135M", "../../escape", ".hidden", "a b", "x|y"])
def test_a_model_or_task_name_that_is_not_a_safe_folder_name_is_refused(tmp_path, name):
    """A '/' in a model name used to make its results vanish from the catalog; '..' wrote outside the data root."""
    from infdist_assets.registry import RegistryError

    load = _registry(tmp_path, f"pool: p.jsonl\nmodels: {{'{name}': {{path: m}}}}\ntasks: {{t: {{targets: t.jsonl}}}}\n")
    with pytest.raises(RegistryError, match=r"models\..*letters, digits, '\.', '_' and '-' only"):
        load()
    load = _registry(tmp_path, f"pool: p.jsonl\nmodels: {{m: {{path: m}}}}\ntasks: {{'{name}': {{targets: t.jsonl}}}}\n")
    with pytest.raises(RegistryError, match=r"tasks\."):
        load()


def test_a_task_defined_twice_is_refused_not_overwritten(tmp_path):
    from infdist_assets.registry import RegistryError

    load = _registry(tmp_path, "pool: p.jsonl\nmodels: {m: {path: m}}\ntasks:\n  t: {targets: a.jsonl}\n  t: {targets: b.jsonl}\n")
    with pytest.raises(RegistryError, match=r"'t' is defined twice"):
        load()


# ------------------------------------------------------------------------------ degenerate
def test_one_landmark_is_refused_with_the_reason():
    with pytest.raises(ValueError, match=r"n_landmarks=1: the kernel regression needs at least 2 landmarks"):
        SelectionConfig.of(n_landmarks=1)


def test_duplicate_pool_rows_tying_at_rank_k_select_by_index_instead_of_crashing():
    """Exact ties at the k-th score (duplicate samples) made the mean-target weights raise even
    under round-robin (~0.3% of demo runs); ties are now broken by pool index, as top_k does."""
    import numpy as np

    from infdist_core.maths.recovery import KernelSetting
    from infdist_core.maths.selection import top_k
    from infdist_core.pipeline import LandmarkRegression, score_pool

    rng = np.random.default_rng(0)
    E = rng.standard_normal((12, 6))
    E[7] = E[3]  # a duplicate pool row: same embedding, same propagated score
    G = rng.standard_normal((12, 16))
    lm = np.array([0, 1, 2, 5, 9, 10])
    G_T = rng.standard_normal((2, 16))
    reg = LandmarkRegression(KernelSetting(), 1.0, [], None)
    cfg = SelectionConfig.of(pool_size=12, n_landmarks=6, k=1)
    mean = score_pool(E, lm, G[lm], G_T, reg, cfg.with_(k=11)).scores.mean(1)
    k = int(np.sum(mean > mean[3])) + 1  # rank of the tied pair's first member
    assert mean[3] == mean[7]
    res = score_pool(E, lm, G[lm], G_T, reg, cfg.with_(k=k))
    assert (res.weights > 0).sum() == k and res.weights[3] > 0 and res.weights[7] == 0
    assert set(np.flatnonzero(res.weights)) == set(top_k(mean, k).tolist())


def test_weighted_training_with_round_robin_is_refused():
    """Round-robin picks used to be weighted by the mean target's weights: mostly 0, NaN when all were."""
    with pytest.raises(ValueError, match="weighted_training=True needs per_target=False"):
        SelectionConfig.of(weighted_training=True)
    SelectionConfig.of(weighted_training=True, per_target=False)
