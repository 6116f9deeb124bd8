"""The assets called directly, as functions of typed inputs, on small inputs: no Dagster run, no
store. Each asset module's functions are what its Dagster asset calls between loading its
inputs and saving its artefact."""

import json
import shutil

import dagster as dg
import numpy as np
import pytest
import torch

from infdist_assets.assets import method_assets, pool_assets, target_assets
from infdist_assets.store import reuse, storage
from infdist_assets.store.artefacts import (LandmarkCandidates, LandmarkGradients, PoolEmbeddings, TargetEmbeddings,
                                            TargetGradients)
from infdist_core import pipeline
from infdist_core.config import SelectionConfig
from infdist_core.data import evalsets
from infdist_core.model.modeling import load_model
from infdist_core.model.tokenization import tokenize_records

SMALL = dict(max_length=64, projection_dim=256, embedding_dim=64, embedding="grad-head", device="cpu")


def _regression_inputs(n=40, dim=16, n_landmarks=16, invalid=2, seed=0):
    """Random pool embeddings and unit landmark gradients, landmark ``invalid`` with a NaN gradient."""
    rng = np.random.default_rng(seed)
    idx = np.arange(0, n, 2)[:n_landmarks]
    G = rng.normal(size=(n_landmarks, dim))
    G /= np.linalg.norm(G, axis=1, keepdims=True)
    valid = np.ones(n_landmarks, bool)
    valid[invalid], G[invalid] = False, np.nan
    ids = [f"s{i}" for i in range(n)]
    cfg = SelectionConfig.of(pool_size=n, n_landmarks=n_landmarks, k=5, projection_dim=dim, embedding_dim=6,
                             embedding="grad-head")
    return (PoolEmbeddings("grad-head", rng.normal(size=(n, 6)).astype(np.float32), ids),
            LandmarkGradients(idx, [ids[i] for i in idx], valid, G.astype(np.float32)), cfg)


def _targets(dim=16, t=3, seed=1) -> TargetGradients:
    G = np.random.default_rng(seed).normal(size=(t, dim))
    return TargetGradients([f"t{i}" for i in range(t)], G / np.linalg.norm(G, axis=1, keepdims=True), np.ones(t))


def test_krr_coefficients_leaves_out_invalid_landmarks_and_its_coefficients_give_the_scores():
    emb, lg, cfg = _regression_inputs()
    fit, report = pool_assets.krr_coefficients(emb, lg, cfg)
    assert fit.landmarks.tolist() == lg.pool_index[lg.valid].tolist() and 4 not in fit.landmarks
    C = fit.regression.coefficients
    assert report.metrics["coefficients_stored"] and np.isfinite(C).all()
    assert report.metrics["cv_spearman"] == max(r["spearman"] for r in fit.regression.cv)
    # p_hat = C @ P_L (Eq. 10 through the stored coefficients) is what the target side scores with
    weights, _ = target_assets.per_target_weights(emb, lg, _targets(), TargetEmbeddings({}), fit, cfg)
    P_L = lg.used[1].astype(np.float64) @ _targets().vectors.T
    rest = np.setdiff1d(np.arange(len(emb.sample_ids)), fit.landmarks)
    np.testing.assert_allclose(weights.scores.scores[rest], (C @ P_L)[rest], rtol=1e-5, atol=1e-7)


def _scored():
    """The regression inputs, fitted and scored for three targets."""
    emb, lg, cfg = _regression_inputs()
    fit, _ = pool_assets.krr_coefficients(emb, lg, cfg)
    targets = _targets()
    weights, report = target_assets.per_target_weights(emb, lg, targets, TargetEmbeddings({}), fit, cfg)
    return emb, lg, cfg, fit, targets, weights, report


def test_per_target_weights_are_exact_on_the_landmarks_and_pick_exactly_k():
    emb, lg, cfg, _, targets, weights, report = _scored()
    idx, G_L = lg.used
    np.testing.assert_allclose(weights.scores.scores[idx], G_L @ targets.vectors.T, rtol=1e-6)
    w = weights.scores.weights
    assert int((w > 0).sum()) == cfg.selection.k and abs(w.sum() - len(w)) < 1e-6 and (w >= 0).all()
    assert report.checks[0].passed and report.metrics["nonzero_weights"] == cfg.selection.k
    assert weights.sample_ids == emb.sample_ids and not weights.direct
    weighted = np.flatnonzero(w > 0)
    assert report.metrics["landmarks_among_weighted"] == len(set(weighted.tolist()) & set(idx.tolist()))
    assert report.metrics["landmark_share_of_pool"] == len(idx) / len(emb.sample_ids)


def test_recovery_report_heads_rows_with_the_partition_and_refuses_too_few_landmarks():
    emb, lg, cfg, fit, targets, weights, _ = _scored()
    idx, _ = lg.used
    candidates = LandmarkCandidates(idx.tolist(), {"grad-head": emb.vectors[idx], "other": emb.vectors[idx] ** 2}, {})
    labels = {"model": "m", "task": "t", "run_id": "r"}
    table, report = target_assets.recovery_report(lg, candidates, targets, TargetEmbeddings({}), "grad-head", fit,
                                                  weights, cfg, labels)
    rows = table.to_pylist()
    assert report.rows == len(rows) and {(r["model"], r["task"], r["run_id"]) for r in rows} == {("m", "t", "r")}
    assert all(r["chosen"] == (r["embedding"] == "grad-head") for r in rows) and {r["embedding"] for r in rows} == {
        "grad-head", "other"}
    assert report.metrics["n_landmarks"] == len(idx)
    from infdist_core.maths.recovery import calibration_slope
    assert report.metrics["calibration_slope"] == calibration_slope(
        emb.vectors[idx], (lg.used[1].astype(np.float64) @ targets.vectors.T).mean(1), fit.regression.setting, seed=cfg.selection.seed)

    few = LandmarkGradients(lg.pool_index[:4], lg.sample_ids[:4], np.ones(4, bool), np.nan_to_num(lg.vectors[:4]))
    with pytest.raises(dg.Failure, match="too few landmarks"):
        target_assets.recovery_report(few, LandmarkCandidates([], {}, {}), targets, TargetEmbeddings({}), "grad-head",
                                      fit, weights, cfg, labels)


def test_landmarks_method_selects_what_infdist_would_from_the_landmarks_alone():
    """The ``landmarks`` method is InfDist with the propagated scores removed: when every
    non-landmark scores below every landmark for every target, InfDist picks the same samples in
    the same order, with the same weights."""
    emb, lg, cfg, _, targets, weights, _ = _scored()
    idx, G_L = lg.used
    got, report = method_assets.selected_subset("landmarks", emb.sample_ids,
                                                {"landmark_gradients": lg.used, "target_gradients": targets.vectors}, cfg)
    assert set(got.pool_index.tolist()) <= set(idx.tolist()) and report.checks[0].passed
    scores = weights.scores.scores.copy()
    rest = np.setdiff1d(np.arange(len(scores)), idx)
    scores[rest] = scores.min() - 1.0
    buried = pipeline.weigh_scores(scores, cfg.selection.k)
    want, _ = method_assets.selected_subset("infdist", emb.sample_ids, {"influence": buried}, cfg)
    assert got.pool_index.tolist() == want.pool_index.tolist()
    np.testing.assert_allclose(got.weights, want.weights, rtol=1e-9)
    # the per-target round-robin over the exact landmark scores, by a direct reference
    from infdist_core.maths.selection import round_robin
    ref = idx[round_robin(G_L.astype(np.float64) @ targets.vectors.T, cfg.selection.k, seed=cfg.selection.seed)]
    assert got.pool_index.tolist() == ref.tolist()
    with pytest.raises(ValueError, match="among the 15 valid landmarks, fewer than k=16"):
        method_assets.selected_subset("landmarks", emb.sample_ids, {"landmark_gradients": lg.used,
                                                                    "target_gradients": targets.vectors},
                                      cfg.with_(k=16))


def test_selected_subset_reports_what_entered_and_left_against_the_previous_selection():
    ids = [f"s{i}" for i in range(30)]
    cfg = SelectionConfig.of(pool_size=30, n_landmarks=8, k=6, seed=3)
    first, report = method_assets.selected_subset("uniform", ids, {}, cfg)
    assert report.metrics["entered"] is None and len(set(first.sample_ids)) == 6 and report.checks[0].passed
    again, _ = method_assets.selected_subset("uniform", ids, {}, cfg)
    assert again.sample_ids == first.sample_ids  # seeded
    previous = {first.sample_ids[0]: 1.0, first.sample_ids[1]: 1.0, "gone": 1.0}
    second, report = method_assets.selected_subset("uniform", ids, {}, cfg.with_(seed=4), previous)
    assert report.metrics["entered"] == len(set(second.sample_ids) - set(previous))
    assert report.metrics["left"] == len(set(previous) - set(second.sample_ids)) >= 1
    assert "vs_previous_selection" in report.markdown


def test_target_gradients_are_the_pipelines_and_name_the_targets_left_out(tiny_model, tokenizer, chats):
    records = chats + [{"id": "long", "messages": [{"role": "user", "content": " ".join(["explain"] * 80)},
                                                   {"role": "assistant", "content": "Done."}]}]
    cfg = SelectionConfig.of(pool_size=4, n_landmarks=4, k=2, **SMALL)
    grads, embeddings, report = target_assets.target_gradients(lambda: tiny_model, tokenizer, records, cfg, reuse.Rows(cfg), "qa")
    assert grads.sample_ids == ["a", "b", "c", "d"] and set(grads.excluded) == {"long"}
    samples = tokenize_records(tokenizer, chats, 64).samples
    want = pipeline.compute_gradients(tiny_model, samples, cfg, tokenizer.pad_token_id)
    np.testing.assert_allclose(grads.vectors, want.vectors, rtol=1e-5, atol=1e-6)
    assert embeddings.rows["grad-head"].shape[0] == 4 and grads.embedded == ["grad-head"]
    assert report.metrics == {"targets": 4, "excluded": 1, "rows_computed": 8, "rows_reused": 0}  # 4 gradients + 4 rows

    longer = cfg.with_(target_max_length=160)
    grads, _, _ = target_assets.target_gradients(lambda: tiny_model, tokenizer, records, longer, reuse.Rows(longer))
    assert grads.sample_ids == ["a", "b", "c", "d", "long"] and not grads.excluded

    def no_model():
        raise AssertionError("a task with no usable target must fail before the model is loaded")

    with pytest.raises(dg.Failure, match="task qa: no target sample"):
        target_assets.target_gradients(no_model, tokenizer, records[-1:], cfg, reuse.Rows(cfg), "qa")


def test_landmark_gradients_are_the_pipelines_at_the_landmarks_preconditioned_by_the_moments(tiny_model, tokenizer,
                                                                                            chats):
    from infdist_core.maths.preconditioning import AdamMoments

    samples = tokenize_records(tokenizer, chats, 64).samples
    cfg = SelectionConfig.of(pool_size=4, n_landmarks=2, k=2, **SMALL)
    landmarks = np.array([3, 1])
    lg, metrics = pool_assets.landmark_gradients(tiny_model, samples, landmarks, tokenizer.pad_token_id, reuse.Rows(cfg))
    assert lg.sample_ids == ["d", "b"] and lg.pool_index.tolist() == [3, 1] and lg.valid.all()
    want = pipeline.compute_gradients(tiny_model, [samples[3], samples[1]], cfg, tokenizer.pad_token_id)
    np.testing.assert_allclose(lg.vectors, want.vectors, rtol=1e-5, atol=1e-6)
    assert metrics["rows_computed"] == 2 and not metrics["adam_aware"]

    d = sum(p.numel() for _, p in pipeline.gradient_parameters(tiny_model, cfg))
    g = torch.Generator().manual_seed(0)
    moments = AdamMoments(torch.zeros(d), torch.rand(d, generator=g) * 1e-2 + 1e-4, 3, 0.9, 0.999, 1e-8)
    pre, metrics = pool_assets.landmark_gradients(tiny_model, samples, landmarks, tokenizer.pad_token_id, reuse.Rows(cfg),
                                                  moments)
    want = pipeline.compute_gradients(tiny_model, [samples[3], samples[1]], cfg, tokenizer.pad_token_id, moments)
    np.testing.assert_allclose(pre.vectors, want.vectors, rtol=1e-5, atol=1e-6)
    assert metrics["adam_aware"] and not np.allclose(pre.vectors, lg.vectors, atol=1e-3)


def test_sampled_pool_lists_the_rows_it_passed_over(tokenizer, chats):
    empty = {"id": "empty", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": ""}]}
    records = chats[:2] + [empty] + chats[2:]
    pool, report = pool_assets.sampled_pool(records, tokenizer, SelectionConfig.of(pool_size=4, n_landmarks=4, k=2,
                                                                                   max_length=64))
    assert sorted(pool.ids) == ["a", "b", "c", "d"] and list(pool.excluded) == ["empty"]
    want = tokenize_records(tokenizer, chats, 64).samples
    assert report.metrics["mean_tokens"] == pytest.approx(np.mean([len(s.input_ids) for s in want]))
    assert report.metrics["pool_records"] == 5 and report.metrics["excluded"] == 1


def test_warmup_checkpoint_saves_the_trained_model_with_its_adam_state(tiny_model, tokenizer, chats, tmp_path):
    samples = tokenize_records(tokenizer, chats, 64).samples
    cfg = SelectionConfig.of(pool_size=4, n_landmarks=4, k=2, warmup_steps=2, train_micro_batch=2, train_grad_accum=1,
                             **SMALL)
    ckpt, report = pool_assets.warmup_checkpoint(tiny_model, tokenizer, samples, cfg, tmp_path / "base",
                                                 tmp_path / "checkpoints")
    folder = tmp_path / "checkpoints" / ckpt.model_path.rsplit("/", 1)[-1]
    assert ckpt.steps == 2 and (folder / "adam_state.safetensors").exists() and ckpt.trained_on == ["a", "b", "c", "d"]
    assert (ckpt.bytes, ckpt.sha256) == storage.folder_digest(folder) and report.samples == 4
    saved = load_model(folder, "cpu", tiny_model.dtype)
    for (name, p), q in zip(tiny_model.named_parameters(), saved.parameters()):
        assert np.array_equal(p.detach().numpy(), q.detach().numpy()), name

    none, report = pool_assets.warmup_checkpoint(tiny_model, tokenizer, samples, cfg.with_(warmup_steps=0),
                                                 tmp_path / "base", tmp_path / "other")
    assert none.model_path == str(tmp_path / "base") and none.steps == 0 and not (tmp_path / "other").exists()


def test_fine_tuned_model_is_reused_without_loading_the_base_model(tiny_model, tokenizer, chats, tmp_path):
    samples = tokenize_records(tokenizer, chats, 64).samples
    cfg = SelectionConfig.of(pool_size=4, n_landmarks=4, k=4, train_epochs=1, train_micro_batch=2, train_grad_accum=1,
                             **SMALL)
    base = tmp_path / "base"
    base.mkdir()
    (base / "model.safetensors").write_bytes(b"weights v1")
    final = tmp_path / "ft" / method_assets.finetune_key(base, [s.id for s in samples], np.ones(4), cfg)
    model, report = method_assets.fine_tuned_model(lambda: (tiny_model, tokenizer), samples, np.ones(4), cfg, final)
    assert not model.reused and report.metrics["steps"] == 2 and len(model.losses) == 2
    assert json.loads((final / method_assets.FINETUNE_RECORD).read_text())["key"] == final.name

    def no_base():
        raise AssertionError("a complete fine-tune must not load the base model")

    again, report = method_assets.fine_tuned_model(no_base, samples, np.ones(4), cfg, final)
    assert again.reused and report.metrics["reused"] and (again.sha256, again.losses) == (model.sha256, model.losses)
    ids = [s.id for s in samples]
    assert method_assets.finetune_key(base, ids[::-1], np.ones(4), cfg) != final.name
    moved = tmp_path / "elsewhere" / "base"  # a store and its model moved together keep their fine-tunes
    shutil.copytree(base, moved)
    assert method_assets.finetune_key(moved, ids, np.ones(4), cfg) == final.name
    (moved / "model.safetensors").write_bytes(b"weights v2")  # new weights under the same name train anew
    assert method_assets.finetune_key(moved, ids, np.ones(4), cfg) != final.name


def test_eval_scores_tables_agree_with_each_other(tiny_model, tokenizer, chats, tmp_path):
    (tmp_path / "held.jsonl").write_text("\n".join(json.dumps(c) for c in chats))
    eval_set = evalsets.load_eval_set("heldout", tmp_path / "held.jsonl", [])
    cfg = SelectionConfig.of(pool_size=4, n_landmarks=4, k=2, seed=5, task_metrics=False, **SMALL)
    labels = {"model": "m", "task": "t", "method": "uniform", "run_id": "r"}
    table, rows, report = method_assets.eval_scores(tiny_model, tokenizer, eval_set, chats[:1], cfg, labels)
    scores = dict(zip(table.column("metric").to_pylist(), table.column("value").to_pylist()))
    losses = np.array(rows.column("loss").to_pylist())
    assert len(losses) == 4 and scores["heldout_loss"] == pytest.approx(losses.mean())
    stderr = dict(zip(table.column("metric").to_pylist(), table.column("stderr").to_pylist()))
    assert stderr["heldout_loss"] == pytest.approx(losses.std(ddof=1) / 2)
    assert set(rows.column("seed").to_pylist()) == {5} and set(table.column("k").to_pylist()) == {2}
    assert report.metrics == scores
    with pytest.raises(dg.Failure, match="task t: none of the"):
        method_assets.eval_scores(tiny_model, tokenizer, eval_set, chats[:1], cfg.with_(heldout_max_length=4), labels)
