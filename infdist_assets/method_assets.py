"""Per-method assets (model x task): ``<method>/selected_subset`` -> ``<method>/fine_tuned_model``
-> ``<method>/eval_scores``, for InfDist and the baselines (uniform, mid_ppl, rds, grad), so any
of them can be materialised for the same partition and compared in the catalog."""



import hashlib
import json

import dagster as dg
import numpy as np
import pyarrow as pa

from infdist_core import evalsets, pipeline, proxies
from infdist_core.records import RecordError
from infdist_core.modeling import load_model, load_tokenizer
from infdist_core.tokenization import tokenize_records
from infdist_assets import checks, storage
from infdist_assets.markdown import table_md
from infdist_assets.partitions import on_model
from infdist_assets.loaders import GPU_TAGS, base_model, recorded_checkpoint, target_records
from infdist_assets.resources import ArtefactStore, SelectionSettings
from infdist_assets.step import Step, code_version

METHODS = ("infdist", "uniform", "mid_ppl", "rds", "grad", "full")
DEFAULT_METHODS = ("infdist", "uniform")
UPSTREAM = {
    "infdist": [dg.AssetKey("per_target_weights")],
    "uniform": [on_model("sampled_pool")],
    "mid_ppl": [on_model("pool_perplexity")],
    "rds": [on_model("rds_embeddings")],
    "grad": [on_model("pool_gradients"), dg.AssetKey("target_gradients")],
    "full": [on_model("sampled_pool")],
}


def _selection_inputs(step: Step, method: str, n_pool: int) -> dict:
    if method == "infdist":
        t = step.load("per_target_weights", target_side=True)
        res = pipeline.TargetScores(storage.column_matrix(t, "scores").astype(np.float64), t.column("weight").to_numpy(), 0.0,
                                    np.zeros((0, 0)))
        return {"scores": res}
    if method == "mid_ppl":
        return {"losses": step.load("pool_perplexity").column("loss").to_numpy()}
    if method == "rds":
        model, tok = base_model(step)
        ts = tokenize_records(tok, target_records(step), step.cfg.max_length).samples
        E_t = proxies.compute_proxy(model, ts, tok.pad_token_id, "rds").vectors
        return {"E_pool": storage.column_matrix(step.load("rds_embeddings"), "embedding"), "E_targets": E_t}
    if method == "grad":
        return {"E_pool": storage.column_matrix(step.load("pool_gradients"), "gradient"),
                "E_targets": storage.column_matrix(step.load("target_gradients", target_side=True), "gradient")}
    return {}


FINETUNE_RECORD = "infdist_finetune.json"
"""Written inside a fine-tuned checkpoint folder before it is swapped into place: its presence
means the folder is complete."""


def finetune_key(step: Step, sample_ids: list[str], weights: np.ndarray) -> str:
    """Content address of a fine-tune: the base model, the samples in pick order, the weights
    when they are used and every training setting (like every artefact here, not the code: a
    change to the training code needs a fresh data root). Task-independent selections (uniform,
    mid_ppl) therefore train once per seed and k, whatever the task."""
    cfg = step.cfg
    doc = {"base": str(step.registry.model_path(step.model)), "samples": sample_ids,
           "weights": np.round(np.asarray(weights, np.float64), 12).tolist() if cfg.weighted_training else None,
           "train": {f: getattr(cfg, f) for f in ("train_lr", "train_epochs", "train_micro_batch", "train_grad_accum",
                                                  "seed", "weighted_training", "max_length", "data_seed")}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:20]


def build(partitions: dg.PartitionsDefinition, method: str) -> list[dg.AssetsDefinition]:
    common = dict(code_version=code_version(), partitions_def=partitions, group_name=f"method_{method}", key_prefix=[method])
    needs_pool = [on_model("sampled_pool")] if method not in ("uniform", "full") else []

    @dg.asset(**common, name="selected_subset", deps=UPSTREAM[method] + needs_pool, kinds={"parquet"},
              check_specs=[checks.spec("exactly_k_distinct", [method, "selected_subset"], "exactly k distinct pool samples")],
              description=f"The k samples selected by {method}, in pick order, with weights.")
    def selected_subset(context: dg.AssetExecutionContext, store: ArtefactStore, settings: SelectionSettings) -> dg.MaterializeResult:
        step = Step.begin(context, store, settings)
        ids = step.load("sampled_pool").column("sample_id").to_pylist()
        idx, w = pipeline.select(method, step.cfg, len(ids), **_selection_inputs(step, method, len(ids)))
        table = pa.table({"model": [step.model] * len(idx), "task": [step.task] * len(idx), "method": [method] * len(idx),
                          "seed": [step.cfg.seed] * len(idx), "k": [step.cfg.k] * len(idx),
                          "sample_id": [ids[i] for i in idx], "pool_index": idx, "rank": np.arange(1, len(idx) + 1),
                          "weight": np.asarray(w, dtype=np.float64), "run_id": [context.run.run_id] * len(idx)})
        step.write(table)
        preview = [{"rank": r + 1, "sample_id": ids[i], "weight": float(w[r])} for r, i in enumerate(idx[:10])]
        return step.finish(len(idx), {"k": len(idx), "distinct": len(set(idx.tolist()))},
                           {"top_selected": dg.MetadataValue.md(table_md(preview, ["rank", "sample_id", "weight"]))},
                           checks=[checks.selection_valid(np.asarray(idx), len(ids) if method == "full" else step.cfg.k, len(ids))])

    @dg.asset(**common, name="fine_tuned_model", deps=[selected_subset, on_model("sampled_pool")], kinds={"pytorch"},
              op_tags=GPU_TAGS, pool="gpu", description=f"The base model fine-tuned on the {method} subset (AdamW, linear schedule).")
    def fine_tuned_model(context: dg.AssetExecutionContext, store: ArtefactStore, settings: SelectionSettings) -> dg.MaterializeResult:
        step = Step.begin(context, store, settings)
        sel = step.load(f"{method}/selected_subset", target_side=True)
        samples = storage.table_samples(step.load("sampled_pool"))
        chosen = [samples[i] for i in sel.column("pool_index").to_pylist()]
        key = finetune_key(step, [samples[i].id for i in sel.column("pool_index").to_pylist()], sel.column("weight").to_numpy())
        final = step.store.path / "checkpoints" / "fine_tuned" / step.model / key
        done = final / FINETUNE_RECORD
        reused = done.exists()
        if reused:  # the same subset, order, weights and training settings were trained before
            record = json.loads(done.read_text())
            size, digest = storage.folder_digest(final)
            context.log.info(f"reusing fine-tuned model {final} (same base model, samples, weights and training settings)")
        else:
            model, tok = base_model(step)
            res = pipeline.fine_tune(model, chosen, sel.column("weight").to_numpy(), step.cfg, tok.pad_token_id,
                                     progress=step.progress("fine-tune", 5))
            record = {"key": key, "steps": res.steps, "losses": res.losses, "train_seconds": res.seconds}
            size, digest = storage.save_checkpoint(
                model, tok, final, also=lambda d: (d / FINETUNE_RECORD).write_text(json.dumps(record)))
        step.write(pa.table({"model_path": [str(final)], "bytes": [size], "sha256": [digest], "steps": [record["steps"]],
                             "losses": [json.dumps(record["losses"])]}),
                   extra={"model_path": str(final), "reused": reused, "bytes": size, "sha256": digest})
        return step.finish(1, {"reused": reused, "steps": record["steps"], "first_loss": record["losses"][0], "last_loss": record["losses"][-1],
                               "bytes": size, "sha256": digest, "train_seconds": record["train_seconds"]})

    @dg.asset(**common, name="eval_scores", deps=[fine_tuned_model], kinds={"pytorch", "parquet"}, op_tags=GPU_TAGS, pool="gpu",
              description="Held-out loss and the task metric (GSM8K EM, MMLU accuracy, HumanEval pass@1) of the fine-tuned model.")
    def eval_scores(context: dg.AssetExecutionContext, store: ArtefactStore, settings: SelectionSettings) -> dg.MaterializeResult:
        step = Step.begin(context, store, settings)
        path = recorded_checkpoint(step.load_meta(f"{method}/fine_tuned_model", target_side=True))
        spec = step.registry.task(step.task)
        targets = target_records(step)
        try:
            eval_set = evalsets.load_eval_set(spec.eval_kind, spec.eval_path, targets)
        except RecordError as err:
            raise dg.Failure(description=f"task {step.task}: {err}") from err
        try:
            res = pipeline.evaluate(load_model(path, step.cfg.device), load_tokenizer(path), eval_set, targets, step.cfg,
                                    log_fn=context.log.info)
        except ValueError as err:
            raise dg.Failure(description=f"task {step.task}: {err}") from err
        scores = res.scores
        n = len(scores)
        table = pa.table({"model": [step.model] * n, "task": [step.task] * n, "method": [method] * n,
                          "seed": [step.cfg.seed] * n, "k": [step.cfg.k] * n, "metric": list(scores),
                          "value": list(scores.values()), "run_id": [context.run.run_id] * n})
        m = len(res.rows)
        step.write(pa.table({"model": [step.model] * m, "task": [step.task] * m, "method": [method] * m,
                             "seed": pa.array([step.cfg.seed] * m, pa.int64()), "k": pa.array([step.cfg.k] * m, pa.int64()),
                             "row_id": [r["row_id"] for r in res.rows], "loss": pa.array([r["loss"] for r in res.rows], pa.float64()),
                             "run_id": [context.run.run_id] * m}), name="rows.parquet")
        step.write(table)
        return step.finish(len(scores), scores)

    return [selected_subset, fine_tuned_model, eval_scores]
