"""Target-side assets, partitioned by model x task: target gradients -> per-target weights, and
the recovery report (how well the landmarks' influence transfers, for this task).

Each is a module-level function of typed inputs returning its artefact and ``Report``
(``target_gradients``, ``per_target_weights``, ``recovery_report``); ``build`` wraps each in a
Dagster asset that loads the inputs from the store, calls it and saves."""


from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa

from infdist_assets.assets import checks
from infdist_assets.assets.markdown import histogram_md, table_md
from infdist_assets.assets.report import Report
from infdist_assets.partitions import on_model
from infdist_assets.resources import ArtefactStore, SelectionSettings
from infdist_assets.store import reuse
from infdist_assets.store.artefacts import (KernelFit, LandmarkCandidates, LandmarkGradients, PoolEmbeddings,
                                            SampledPool, TargetEmbeddings, TargetGradients, TargetWeights)
from infdist_assets.store.loaders import GPU_TAGS, base_tokenizer, selection_model, target_records
from infdist_assets.store.step import Step
from infdist_assets.store.versions import code_version
from infdist_core import pipeline
from infdist_core.config import SelectionConfig
from infdist_core.maths import recovery
from infdist_core.maths.influence import landmark_scores
from infdist_core.model.tokenization import tokenize_records
from infdist_core.proxy_specs import ProxySpec


def target_gradients(load_model: Callable[[], Any], tokenizer, records: Sequence[dict], cfg: SelectionConfig,
                     rows: reuse.Rows, task: str = "") -> tuple[TargetGradients, TargetEmbeddings, Report]:
    """The task's target records tokenised to ``target_max_length``, their projected, normalised
    gradients at ``load_model()`` (the selection model: same projection as the landmarks; no Adam
    preconditioning), and their proxy rows for every gradient-proxy candidate (the direct term).
    Targets without answer tokens, or whose gradient is not finite, are left out and listed. A
    task none of whose targets fits fails before the model is loaded."""
    ts = tokenize_records(tokenizer, records, cfg.data.target_tokens())
    if not ts.samples:
        raise dg.Failure(description=f"task {task}: no target sample has assistant tokens within "
                                     f"{cfg.data.target_tokens()} tokens (target_max_length, or max_length when "
                                     f"it is 0); excluded: {ts.excluded}")
    model = load_model()
    g, counts = rows.gradients("target_gradients", model, ts.samples, tokenizer.pad_token_id,
                               proxy_kind="target_embeddings")  # that proxy's rows from the same forwards
    keep = g.valid
    kept = [s for s, k in zip(ts.samples, keep) if k]
    embedded = []
    for spec in cfg.data.embedding_specs():
        if any(ProxySpec.parse(spec).gradient_parts):
            pe, more = rows.embed("target_embeddings", model, kept, spec, tokenizer.pad_token_id)
            embedded.append(pe)
            counts += more
    counts = counts.within_step()
    invalid = {s.id: "non-finite gradient" for s, k in zip(ts.samples, keep) if not k}
    grads = TargetGradients([s.id for s in kept], g.vectors[keep], g.n_label_tokens[keep], {**ts.excluded, **invalid},
                            [e.spec for e in embedded])
    embeddings = TargetEmbeddings({e.spec: e.vectors for e in embedded}, {e.spec: e.widths for e in embedded})
    return grads, embeddings, Report(int(keep.sum()), {"targets": int(keep.sum()), "excluded": len(grads.excluded),
                                                       **counts.metrics()},
                                     checks=[checks.finite_matrix("gradients_finite", g.vectors[keep])])


def per_target_weights(embeddings: PoolEmbeddings, landmarks: LandmarkGradients, targets: TargetGradients,
                       target_embeddings: TargetEmbeddings, fit: KernelFit,
                       cfg: SelectionConfig) -> tuple[TargetWeights, Report]:
    """Every pool sample's influence on each target (exact on the landmarks, the fitted kernel
    regression elsewhere, with the direct term decided for this task: ``pipeline.score_targets``)
    and the robust weights of Eq. 7, exactly ``k`` of them non-zero. The report says how many of
    those are landmarks: exact scores spread wider than propagated ones, so a top-k drawn mostly
    from the landmarks owes little to the propagation."""
    ids, E = embeddings.sample_ids, embeddings.vectors
    idx, G_L = landmarks.used
    G_T = targets.vectors
    direct = target_embeddings.direct_term(embeddings.spec)
    res, setting, direct_cv = pipeline.score_targets(E, idx, G_L, G_T, fit.regression, cfg, direct)
    mean = res.scores.mean(1)
    top = np.argsort(-res.weights)[:10]
    md = {"top_weighted": dg.MetadataValue.md(table_md([{"pool_index": int(i), "sample_id": ids[i], "weight": float(res.weights[i]),
                                                         "mean_score": float(mean[i])} for i in top],
                                                       ["pool_index", "sample_id", "weight", "mean_score"])),
          "weights_histogram": dg.MetadataValue.md(histogram_md(res.weights[res.weights > 0]))}
    cv = {f"direct_cv_spearman_{'on' if r['direct'] else 'off'}": r["spearman"] for r in direct_cv}
    weighted = np.flatnonzero(res.weights > 0)
    return TargetWeights(res, ids, idx, setting.direct), Report(len(E), {
        "lambda": res.lam, "direct_term": setting.direct, **cv, "nonzero_weights": len(weighted),
        "landmarks_among_weighted": int(np.isin(weighted, idx).sum()), "landmark_share_of_pool": len(idx) / len(E),
        "sparsity": float((res.weights == 0).mean()), "targets": G_T.shape[0], "weight_sum": float(res.weights.sum())}, md,
        checks=[checks.weights_valid(res.weights, len(E), cfg.selection.k)])


def recovery_report(landmarks: LandmarkGradients, candidates: LandmarkCandidates, targets: TargetGradients,
                    target_embeddings: TargetEmbeddings, embedding: str, fit: KernelFit, weights: TargetWeights,
                    cfg: SelectionConfig, labels: dict[str, str]) -> tuple[pa.Table, Report]:
    """Landmark cross-validation for this task, one row per candidate embedding, kernel setting and
    landmark count (``recovery.landmark_report``); ``embedding`` is the one the pool was embedded
    with, and the setting ``fit`` and ``weights`` used is the one reported. ``labels`` (model,
    task, run_id) head every row."""
    idx, G_L = landmarks.used
    used = replace(fit.regression.setting, direct=weights.direct)
    seed = cfg.selection.seed
    rows = [{"model": labels["model"], "task": labels["task"], "seed": seed, "chosen": r["embedding"] == embedding,
             "run_id": labels["run_id"], **r}
            for r in recovery.landmark_report(candidates.rows, G_L, targets.vectors, used, seed=seed,
                                              slices={s: target_embeddings.slices(s) for s in target_embeddings.rows},
                                              target_embeddings=target_embeddings.rows)]
    if not rows:
        raise dg.Failure(description=f"too few landmarks ({len(idx)}) to cross-validate; need at least 8")
    full = [r for r in rows if r["n_landmarks"] == len(idx)]
    mine = next((r for r in full if r["chosen"] and (r["bandwidth_scale"], r["damping"], r["center"], r["direct"]) ==
                 (used.bandwidth_scale, used.damping, used.center, used.direct)), full[0])  # what this selection used
    curve = [r for r in rows if r["chosen"] and r["n_landmarks"] < len(idx)] + [mine]
    md = {"by_embedding": dg.MetadataValue.md(table_md(sorted(full, key=lambda r: -r["spearman"]),
                                                       ["embedding", "bandwidth_scale", "damping", "center", "direct", "spearman",
                                                        "grad_cosine", "mean_cosine", "top10_overlap"])),
          "quality_vs_landmarks": dg.MetadataValue.md(table_md(curve, ["n_landmarks", "spearman", "grad_cosine", "mean_cosine"]))}
    slope = (recovery.calibration_slope(candidates.rows[embedding], landmark_scores(G_L, targets.vectors).mean(1), used,
                                        seed=seed) if embedding in candidates.rows else float("nan"))
    return pa.Table.from_pylist(rows), Report(len(rows), {
        "embedding": embedding, "spearman": mine["spearman"], "calibration_slope": slope,
        "calibration_slope_is": "held-out landmarks' exact mean-target scores regressed on the propagated ones (kernel "
                                "part): about 1 means propagated scores sit on the exact ones' scale",
        "spearman_is": "the selection criterion: the cross-validated Spearman of the setting chosen on these same folds "
                       "(optimistic as an estimate; benchmarks/bench_recovery.py measures on held-out samples)",
        "grad_cosine": mine["grad_cosine"], "mean_landmark_cosine": mine["mean_cosine"],
        "top10_overlap": mine["top10_overlap"], "n_landmarks": len(idx)}, md,
        checks=[checks.beats_mean_landmark(mine["grad_cosine"], mine["mean_cosine"], mine["spearman"])])


def build(partitions: dg.PartitionsDefinition) -> list:
    common = dict(code_version=code_version(__name__), partitions_def=partitions, group_name="target_side")

    @dg.asset(**common, name="target_gradients", deps=[on_model("warmup_checkpoint")], kinds={"pytorch", "parquet"},
              op_tags=GPU_TAGS, pool="gpu",
              check_specs=[checks.spec("gradients_finite", "target_gradients", "finite target gradients")],
              description="Projected, normalised gradients of the task's target samples (same projection as the landmarks), "
                          "and their proxy embeddings for every gradient-proxy candidate (the direct term).")
    def target_gradients_asset(context: dg.AssetExecutionContext, store: ArtefactStore,
                               settings: SelectionSettings) -> dg.MaterializeResult:
        step = Step.begin(context, store, settings)
        grads, embeddings, report = target_gradients(lambda: selection_model(step), base_tokenizer(step), target_records(step),
                                                     step.cfg, reuse.CachedRows(step), step.task)
        embeddings.save(step)
        grads.save(step)
        return report.finish(step)

    @dg.asset(**common, name="per_target_weights", deps=[target_gradients_asset, on_model("krr_coefficients"),
                                                         on_model("pool_embeddings"), on_model("landmark_gradients"),
                                                         on_model("sampled_pool")], kinds={"parquet"},
              check_specs=[checks.spec("weights_valid", "per_target_weights", "w >= 0, sum(w) = |S|, exactly k non-zero")],
              description="Per-target influence of every pool sample (exact on landmarks, KRR elsewhere) and the "
                          "robust weights of Eq. 7 with lambda searched so exactly k samples are non-zero.")
    def per_target_weights_asset(context: dg.AssetExecutionContext, store: ArtefactStore,
                                 settings: SelectionSettings) -> dg.MaterializeResult:
        step = Step.begin(context, store, settings)
        ids = SampledPool.load_ids(step)
        weights, report = per_target_weights(PoolEmbeddings.load(step, ids), LandmarkGradients.load(step, ids),
                                             TargetGradients.load(step), TargetEmbeddings.load(step), KernelFit.load(step),
                                             step.cfg)
        weights.save(step)
        return report.finish(step)

    @dg.asset(**common, name="recovery_report", deps=[target_gradients_asset, per_target_weights_asset,
                                                      on_model("pool_embeddings"), on_model("landmark_gradients"),
                                                      on_model("krr_coefficients")], kinds={"parquet"},
              check_specs=[checks.spec("beats_mean_landmark", "recovery_report",
                                       "warns when propagation is no better than predicting the mean landmark gradient", blocking=False)],
              description="Landmark cross-validation for this task: Spearman(p_hat, p), gradient-recovery cosine and "
                          "top-10% overlap per candidate embedding and kernel setting, and versus landmark count.")
    def recovery_report_asset(context: dg.AssetExecutionContext, store: ArtefactStore,
                              settings: SelectionSettings) -> dg.MaterializeResult:
        step = Step.begin(context, store, settings)
        landmarks = LandmarkGradients.load(step)
        table, report = recovery_report(landmarks, LandmarkCandidates.load(step, landmarks.used[0]), TargetGradients.load(step),
                                        TargetEmbeddings.load(step), PoolEmbeddings.load(step).spec, KernelFit.load(step),
                                        TargetWeights.load(step), step.cfg,
                                        {"model": step.model, "task": step.task, "run_id": context.run.run_id})
        step.write(table)
        return report.finish(step)

    return [target_gradients_asset, per_target_weights_asset, recovery_report_asset]
