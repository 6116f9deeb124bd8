"""Evaluation sets and the held-out loss, against direct computations; bad evaluation files
rejected with the file, line and field named (the harness metrics: ``test_harness.py``)."""

import json
import warnings

import numpy as np
import pytest
import torch

from infdist_core import pipeline
from infdist_core.config import SelectionConfig
from infdist_core.data import evalsets
from infdist_core.data.records import RecordError
from infdist_core.model import evaluation
from infdist_core.model.tokenization import tokenize_records


def _write(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


ITEMS = [{"question": "Capital of France?", "choices": ["Paris", "Rome", "Berlin"], "answer": 0},
         {"prompt": "2+2?", "choices": ["4", "five"], "answer": 1, "id": "sum"}]


def test_heldout_kind_is_the_mean_per_sample_loss(tiny_model, tokenizer, chats, tmp_path):
    path = _write(tmp_path / "held.jsonl", chats)
    es = evalsets.load_eval_set("heldout", path, [])
    cfg = SelectionConfig.of(heldout_rows=0, heldout_max_length=64, task_metrics=False)
    res = pipeline.evaluate(tiny_model, tokenizer, es, chats[:1], cfg)
    samples = tokenize_records(tokenizer, chats, 64).samples
    assert res.scores["heldout_loss"] == pytest.approx(evaluation.target_loss(tiny_model, samples, tokenizer.pad_token_id))
    direct = evaluation.sample_losses(tiny_model, samples, tokenizer.pad_token_id, batch_size=1)
    assert [r["row_id"] for r in res.rows] == [s.id for s in samples]
    assert np.allclose([r["loss"] for r in res.rows], direct, rtol=1e-5), "per-row losses must pair with their rows"


def test_sample_losses_equal_the_full_logits_loss(tiny_model, tokenizer, chats):
    """The label-positions-only head gives each sample's mean label-token loss as the full forward
    does (padding, batch order and a sample without labels included)."""
    from infdist_core.model.gradients import per_sample_losses
    from infdist_core.model.tokenization import pad_batch

    samples = tokenize_records(tokenizer, chats, 64).samples
    got = evaluation.sample_losses(tiny_model, samples, tokenizer.pad_token_id, batch_size=3)
    with torch.no_grad():
        want = [float(per_sample_losses(tiny_model, pad_batch([s], tokenizer.pad_token_id))[0]) for s in samples]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert len(set(np.round(got, 6))) == len(samples)


def test_heldout_rows_are_the_same_for_every_selection_seed(tiny_model, tokenizer, chats, tmp_path):
    es = evalsets.load_eval_set("heldout", _write(tmp_path / "h.jsonl", chats), [])
    ids = [[r["row_id"] for r in pipeline.evaluate(tiny_model, tokenizer, es, chats[:1],
                                                   SelectionConfig.of(seed=s, heldout_rows=2, task_metrics=False)).rows]
           for s in (0, 1)]
    assert ids[0] == ids[1] and len(ids[0]) == 2


def test_targets_never_appear_in_an_evaluation_set(tmp_path, chats):
    target = chats[0]
    rows = chats[1:] + [{"id": "copy", "messages": [{"role": "user", "content": "  Say   hello. "},
                                                    {"role": "assistant", "content": "another reply"}]}]
    es = evalsets.load_eval_set("heldout", _write(tmp_path / "h.jsonl", rows), [target])
    assert es.excluded_as_targets == 1 and "copy" not in [r["id"] for r in es.records]
    mc = evalsets.load_eval_set("multiple_choice", _write(tmp_path / "m.jsonl", ITEMS),
                                [{"id": "t", "messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}])
    assert [it.id for it in mc.rows] == ["m-0"] and mc.excluded_as_targets == 1


def test_shipped_evaluation_sets_are_disjoint_from_their_targets():
    from infdist_assets.registry import load_registry
    from infdist_core.data.records import load_records
    from tests.conftest import ROOT

    reg = load_registry(None, ROOT / "data")
    assert "gsm8k" in reg.tasks, "the demo's task must always be set up"
    checked = []
    for name, spec in reg.tasks.items():
        if spec.eval_kind == "none":
            continue
        checked.append(name)
        targets = load_records(spec.targets)
        es = evalsets.load_eval_set(spec.eval_kind, spec.eval_path, targets)
        keys = {evalsets._prompt_key(t) for t in targets}
        assert not keys & {evalsets._prompt_key(r) for r in es.records}, name
        assert len(es.records) >= 140, f"{name}: only {len(es.records)} evaluation rows"
    assert set(checked) | set(reg.unavailable) == {"gsm8k", "bbh", "mmlu", "humaneval"}
    for name, why in reg.unavailable.items():
        warnings.warn(f"task {name!r} not checked, unavailable: {why}")


@pytest.mark.parametrize("kind, rows, message", [
    ("multiple_choice", ['{"question": "q", "choices": ["a", "b"], "answer": 0}', "{not json"], "line 2 is not valid JSON"),
    ("multiple_choice", [{"question": "q", "choices": ["a"], "answer": 0}], "line 1: 'choices' must be a list of at least 2"),
    ("multiple_choice", [{"question": "q", "choices": ["a", "b"], "answer": 2}], "line 1: 'answer' must be the index (0..1)"),
    ("multiple_choice", [{"question": "q", "choices": ["a", "b"], "answer": True}], "'answer' must be the index"),
    ("multiple_choice", [{"choices": ["a", "b"], "answer": 0}], "line 1: needs a non-empty 'question'"),
    ("multiple_choice", ["", "[1, 2]"], "line 2 is a list, expected an object"),
    ("gsm8k", [{"question": "q", "answer": "a #### 1", "final": "1"}, {"question": "q2", "answer": "a"}],
     "line 2: missing or empty ['final']"),
    ("heldout", [{"foo": 1}], "line 1 has fields ['foo']"),
])
def test_bad_evaluation_files_name_the_file_line_and_field(tmp_path, kind, rows, message):
    path = _write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(RecordError) as err:
        evalsets.load_eval_set(kind, path, [])
    assert str(path) in str(err.value) and message in str(err.value)


def test_non_utf8_evaluation_file_is_a_clear_error(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"question": "caf\xe9", "choices": ["a", "b"], "answer": 0}\n'.encode("latin-1"))
    with pytest.raises(RecordError, match="not UTF-8"):
        evalsets.load_eval_set("multiple_choice", path, [])


def test_registry_rejects_an_eval_without_path_or_not_a_mapping(tmp_path):
    from infdist_assets.registry import RegistryError, load_registry

    for ev, message in (("{kind: heldout}", "needs a 'path'"), ("gsm8k", "must be a mapping")):
        reg = tmp_path / "r.yaml"
        reg.write_text(f"pool: p.jsonl\nmodels: {{m: {{path: m}}}}\ntasks:\n  t: {{targets: t.jsonl, eval: {ev}}}\n")
        with pytest.raises(RegistryError, match=message):
            load_registry(reg, tmp_path)


def test_the_dev_split_is_disjoint_from_the_reported_rows_and_test_is_unchanged():
    from infdist_core.model.evaluation import seeded_subset

    rows = list(range(1319))
    test200 = seeded_subset(rows, 200, 0, "heldout-gsm8k")
    assert seeded_subset(rows, 100, 0, "heldout-gsm8k") == [r for r in test200 if r in seeded_subset(rows, 100, 0, "heldout-gsm8k")]
    assert set(seeded_subset(rows, 100, 0, "heldout-gsm8k")) <= set(test200), "test subsets nest"
    for n in (100, 200, 600):
        dev = seeded_subset(rows, n, 0, "heldout-gsm8k", "dev")
        assert len(dev) == n and dev == sorted(dev)
        assert not set(dev) & set(seeded_subset(rows, len(rows) - n, 0, "heldout-gsm8k")), n
    with pytest.raises(ValueError, match="needs at least twice as many"):
        seeded_subset(list(range(148)), 100, 0, "heldout-humaneval", "dev")
    with pytest.raises(ValueError, match="heldout_split='val'"):
        SelectionConfig.of(heldout_split="val")
