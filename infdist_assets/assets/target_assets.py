"""Target-side assets, partitioned by model x task: target gradients -> per-target weights, and
the recovery report (how well the landmarks' influence transfers, for this task)."""


from dataclasses import replace

import dagster as dg
import numpy as np
import pyarrow as pa

from infdist_assets.assets import checks
from infdist_assets.assets.markdown import histogram_md, table_md
from infdist_assets.partitions import on_model
from infdist_assets.resources import ArtefactStore, SelectionSettings
from infdist_assets.store import reuse
from infdist_assets.store.artefacts import (KernelFit, LandmarkCandidates, LandmarkGradients, PoolEmbeddings,
                                            SampledPool, TargetEmbeddings, TargetGradients, TargetWeights)
from infdist_assets.store.loaders import GPU_TAGS, base_tokenizer, selection_model, target_records
from infdist_assets.store.step import Step
from infdist_assets.store.versions import code_version
from infdist_core import pipeline
from infdist_core.maths import recovery
from infdist_core.model.tokenization import tokenize_records
from infdist_core.proxy_specs import ProxySpec


def build(partitions: dg.PartitionsDefinition) -> list:
    common = dict(code_version=code_version(__name__), partitions_def=partitions, group_name="target_side")

    @dg.asset(**common, deps=[on_model("warmup_checkpoint")], kinds={"pytorch", "parquet"},
              op_tags=GPU_TAGS, pool="gpu",
              check_specs=[checks.spec("gradients_finite", "target_gradients", "finite target gradients")],
              description="Projected, normalised gradients of the task's target samples (same projection as the landmarks), "
                          "and their proxy embeddings for every gradient-proxy candidate (the direct term).")
    def target_gradients(context: dg.AssetExecutionContext, store: ArtefactStore, settings: SelectionSettings) -> dg.MaterializeResult:
        step = Step.begin(context, store, settings)
        tok = base_tokenizer(step)
        ts = tokenize_records(tok, target_records(step), step.cfg.data.target_tokens())
        if not ts.samples:
            raise dg.Failure(description=f"task {step.task}: no target sample has assistant tokens within "
                                         f"{step.cfg.data.target_tokens()} tokens (target_max_length, or max_length when "
                                         f"it is 0); excluded: {ts.excluded}")
        model = selection_model(step)
        g, rows = reuse.gradients(step, "target_gradients", model, ts.samples, tok.pad_token_id)
        keep = g.valid
        kept = [s for s, k in zip(ts.samples, keep) if k]
        embedded = []
        for spec in step.cfg.data.embedding_specs():
            if any(ProxySpec.parse(spec).gradient_parts):
                pe, more = reuse.embed(step, "target_embeddings", model, kept, spec, tok.pad_token_id)
                embedded.append(pe)
                rows += more
        TargetEmbeddings({e.spec: e.vectors for e in embedded}, {e.spec: e.widths for e in embedded}).save(step)
        TargetGradients([s.id for s in kept], g.vectors[keep], g.n_label_tokens[keep]).save(
            step, ts.excluded, [e.spec for e in embedded])
        return step.finish(int(keep.sum()), {"targets": int(keep.sum()), "excluded": len(ts.excluded) + int((~keep).sum()),
                                             **rows.metrics()},
                           checks=[checks.finite_matrix("gradients_finite", g.vectors[keep])])

    @dg.asset(**common, deps=[target_gradients, on_model("krr_coefficients"), on_model("pool_embeddings"),
                              on_model("landmark_gradients"), on_model("sampled_pool")], kinds={"parquet"},
              check_specs=[checks.spec("weights_valid", "per_target_weights", "w >= 0, sum(w) = |S|, exactly k non-zero")],
              description="Per-target influence of every pool sample (exact on landmarks, KRR elsewhere) and the "
                          "robust weights of Eq. 7 with lambda searched so exactly k samples are non-zero.")
    def per_target_weights(context: dg.AssetExecutionContext, store: ArtefactStore, settings: SelectionSettings) -> dg.MaterializeResult:
        step = Step.begin(context, store, settings)
        ids = SampledPool.load_ids(step)
        emb = PoolEmbeddings.load(step, ids)
        E = emb.vectors
        idx, G_L = LandmarkGradients.load(step, ids).used
        G_T = TargetGradients.load(step).vectors
        direct = TargetEmbeddings.load(step).direct_term(emb.spec)
        res, setting, direct_cv = pipeline.score_targets(E, idx, G_L, G_T, KernelFit.load(step).regression, step.cfg, direct)
        TargetWeights(res, ids, idx, setting.direct).save(step)
        mean = res.scores.mean(1)
        top = np.argsort(-res.weights)[:10]
        md = {"top_weighted": dg.MetadataValue.md(table_md([{"pool_index": int(i), "sample_id": ids[i], "weight": float(res.weights[i]),
                                                             "mean_score": float(mean[i])} for i in top],
                                                           ["pool_index", "sample_id", "weight", "mean_score"])),
              "weights_histogram": dg.MetadataValue.md(histogram_md(res.weights[res.weights > 0]))}
        cv = {f"direct_cv_spearman_{'on' if r['direct'] else 'off'}": r["spearman"] for r in direct_cv}
        return step.finish(len(E), {"lambda": res.lam, "direct_term": setting.direct, **cv,
                                    "nonzero_weights": int((res.weights > 0).sum()),
                                    "sparsity": float((res.weights == 0).mean()), "targets": G_T.shape[0],
                                    "weight_sum": float(res.weights.sum())}, md,
                           checks=[checks.weights_valid(res.weights, len(E), step.cfg.selection.k)])

    @dg.asset(**common, deps=[target_gradients, per_target_weights, on_model("pool_embeddings"),
                              on_model("landmark_gradients"), on_model("krr_coefficients")], kinds={"parquet"},
              check_specs=[checks.spec("beats_mean_landmark", "recovery_report",
                                       "warns when propagation is no better than predicting the mean landmark gradient", blocking=False)],
              description="Landmark cross-validation for this task: Spearman(p_hat, p), gradient-recovery cosine and "
                          "top-10% overlap per candidate embedding and kernel setting, and versus landmark count.")
    def recovery_report(context: dg.AssetExecutionContext, store: ArtefactStore, settings: SelectionSettings) -> dg.MaterializeResult:
        step = Step.begin(context, store, settings)
        idx, G_L = LandmarkGradients.load(step).used
        G_T = TargetGradients.load(step).vectors
        candidates = LandmarkCandidates.load(step, idx).rows
        chosen = PoolEmbeddings.load(step).spec
        used = replace(KernelFit.load(step).regression.setting, direct=TargetWeights.load(step).direct)
        te = TargetEmbeddings.load(step)
        seed = step.cfg.selection.seed
        rows = [{"model": step.model, "task": step.task, "seed": seed, "chosen": r["embedding"] == chosen,
                 "run_id": context.run.run_id, **r}
                for r in recovery.landmark_report(candidates, G_L, G_T, used, seed=seed,
                                                  slices={s: te.slices(s) for s in te.rows},
                                                  target_embeddings=te.rows)]
        if not rows:
            raise dg.Failure(description=f"too few landmarks ({len(idx)}) to cross-validate; need at least 8")
        step.write(pa.Table.from_pylist(rows))
        full = [r for r in rows if r["n_landmarks"] == len(idx)]
        mine = next((r for r in full if r["chosen"] and (r["bandwidth_scale"], r["damping"], r["center"], r["direct"]) ==
                     (used.bandwidth_scale, used.damping, used.center, used.direct)), full[0])  # what this selection used
        curve = [r for r in rows if r["chosen"] and r["n_landmarks"] < len(idx)] + [mine]
        md = {"by_embedding": dg.MetadataValue.md(table_md(sorted(full, key=lambda r: -r["spearman"]),
                                                           ["embedding", "bandwidth_scale", "damping", "center", "direct", "spearman",
                                                            "grad_cosine", "mean_cosine", "top10_overlap"])),
              "quality_vs_landmarks": dg.MetadataValue.md(table_md(curve, ["n_landmarks", "spearman", "grad_cosine", "mean_cosine"]))}
        return step.finish(len(rows), {"embedding": chosen, "spearman": mine["spearman"],
                                       "spearman_is": "the selection criterion: the cross-validated Spearman of the "
                                                      "setting chosen on these same folds (optimistic as an estimate; "
                                                      "benchmarks/bench_recovery.py measures on held-out samples)",
                                       "grad_cosine": mine["grad_cosine"],
                                       "mean_landmark_cosine": mine["mean_cosine"], "top10_overlap": mine["top10_overlap"],
                                       "n_landmarks": len(idx)}, md,
                           checks=[checks.beats_mean_landmark(mine["grad_cosine"], mine["mean_cosine"], mine["spearman"])])

    return [target_gradients, per_target_weights, recovery_report]
