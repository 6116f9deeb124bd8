"""Per-method assets (model x task): ``<method>/selected_subset`` -> ``<method>/fine_tuned_model``
-> ``<method>/eval_scores``, for InfDist, the baselines (uniform, mid_ppl, rds) and the reference
rows (grad, landmarks, full), so any of them can be materialised for the same partition and
compared in the catalog.

Each is a module-level function of typed inputs returning its artefact and ``Report``
(``selected_subset``, ``fine_tuned_model``, ``eval_scores``); ``build`` wraps each, per method, in
a Dagster asset that loads the inputs from the store, calls it and saves."""


import hashlib
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa

from infdist_assets.assets import checks
from infdist_assets.assets.markdown import table_md
from infdist_assets.assets.report import Report
from infdist_assets.partitions import on_model
from infdist_assets.resources import ArtefactStore, SelectionSettings
from infdist_assets.store import storage
from infdist_assets.store.artefacts import FineTunedModel, SampledPool, Subset
from infdist_assets.store.loaders import GPU_TAGS, SELECTION_INPUTS, base_model, target_records
from infdist_assets.store.step import Step
from infdist_assets.store.versions import code_version
from infdist_core import methods, pipeline
from infdist_core.config import SelectionConfig
from infdist_core.data import atomic, evalsets
from infdist_core.data.records import RecordError
from infdist_core.maths.selection import compare_selections
from infdist_core.model.tokenization import TokenizedSample
from infdist_core.model.modeling import load_model, load_tokenizer

METHODS = tuple(methods.METHODS)
log = logging.getLogger(__name__)


FINETUNE_RECORD = "infdist_finetune.json"
"""Written inside a fine-tuned checkpoint folder before it is swapped into place: its presence
means the folder is complete."""


TRAINER_VERSION = 2
"""Bumped when the fine-tuning code changes what it trains (2: transformers.Trainer), so earlier
fine-tunes are not reused for the new code's."""


def finetune_key(base: Path, sample_ids: list[str], weights: np.ndarray, cfg: SelectionConfig) -> str:
    """Content address of a fine-tune: the base model folder's content (``storage.fingerprint``:
    a copied or moved store keeps its fine-tunes, new weights at the same path train anew), the
    samples in pick order, the weights when they are used, every training setting and the
    precision it resolves to, and ``TRAINER_VERSION`` for the training code (not its hash, like
    every artefact here). Task-independent selections (uniform, mid_ppl) therefore train once per
    seed and k, whatever the task."""
    flat = cfg.to_dict()
    doc = {"base": storage.fingerprint(base), "samples": sample_ids,
           "weights": (np.round(np.asarray(weights, np.float64), 12).tolist() if cfg.selection.weighted_training
                       else None),
           "train": {f: flat[f] for f in ("train_lr", "train_epochs", "train_micro_batch", "train_grad_accum", "seed",
                                          "weighted_training", "max_length", "data_seed", "lora_rank", "lora_alpha")},
           "precision": cfg.training_dtype(), "trainer": TRAINER_VERSION}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:20]


# ------------------------------------------------------------------ the assets' functions
def selected_subset(method: str, pool_ids: list[str], inputs: dict[str, Any], cfg: SelectionConfig,
                    previous: dict[str, float] | None = None) -> tuple[Subset, Report]:
    """``method``'s selection from the pool (``methods.select`` with its named ``inputs``), in pick
    order with weights; with the ``previous`` selection (sample id -> weight), what moved."""
    spec = methods.METHODS[method]
    idx, w = methods.select(method, cfg, len(pool_ids), **inputs)
    preview = [{"rank": r + 1, "sample_id": pool_ids[i], "weight": float(w[r])} for r, i in enumerate(idx[:10])]
    md = {"top_selected": dg.MetadataValue.md(table_md(preview, ["rank", "sample_id", "weight"]))}
    moved = {"entered": None, "left": None}
    if previous is not None:  # what this re-selection changed (the catalog's selection_changes has every row)
        change = compare_selections(previous, {pool_ids[i]: float(w[r]) for r, i in enumerate(idx)})
        moves = sorted(change.weight_change.items(), key=lambda kv: -abs(kv[1]))[:10]
        md["vs_previous_selection"] = dg.MetadataValue.md(
            f"{len(change.entered)} entered, {len(change.left)} left, {len(change.kept)} kept\n\n" +
            table_md([{"sample_id": s, "weight_change": round(d, 6)} for s, d in moves if d], ["sample_id", "weight_change"]))
        moved = {"entered": len(change.entered), "left": len(change.left)}
    k = len(pool_ids) if spec.whole_pool else cfg.selection.k
    return Subset(method, idx, w, [pool_ids[i] for i in idx]), Report(
        len(idx), {"k": len(idx), "distinct": len(set(idx.tolist())), **moved}, md,
        checks=[checks.selection_valid(np.asarray(idx), k, len(pool_ids))])


def fine_tuned_model(base: Callable[[], tuple[Any, Any]], samples: list[TokenizedSample], weights: np.ndarray,
                     cfg: SelectionConfig, final: Path, progress=None, log_fn: Callable[[str], None] = log.info
                     ) -> tuple[FineTunedModel, Report]:
    """The base model (``base()``: model in float32 and tokenizer) fine-tuned on ``samples`` with
    ``weights`` (``pipeline.fine_tune``), saved to ``final`` (its ``finetune_key`` folder) with a
    record that marks it complete. A folder already complete is reused without loading the base
    model; an interrupted fine-tune resumes from its Trainer checkpoints beside ``final``; one
    fine-tune per folder at a time (two runs, a schedule and a person, would otherwise share the
    Trainer's scratch folder: the one that waited reuses the other's model)."""
    done = final / FINETUNE_RECORD
    with atomic.exclusive(final.with_name(f".{final.name}.lock")):
        reused = done.exists()
        timing = {}  # kept out of the folder's record: the same training is the same bytes, however long it took
        if reused:  # the same subset, order, weights and training settings were trained before
            record = json.loads(done.read_text())
            size, digest = storage.folder_digest(final)
            log_fn(f"reusing fine-tuned model {final} (same base model, samples, weights and training settings)")
        else:
            model, tok = base()
            scratch = final.with_name(final.name + ".trainer")  # Trainer checkpoints: what an interrupted fine-tune resumes from
            res = pipeline.fine_tune(model, samples, weights, cfg, tok.pad_token_id, output_dir=scratch, progress=progress)
            if res.resumed_from:
                log_fn(f"fine-tune resumed from step {res.resumed_from} of {res.steps}")
            record = {"key": final.name, "steps": res.steps, "losses": res.losses, "precision": cfg.training_dtype(),
                      "lora_rank": cfg.training.lora_rank}
            timing = {"train_seconds": res.seconds, "resumed_from": res.resumed_from}
            size, digest = storage.save_checkpoint(
                res.model, tok, final, also=lambda d: (d / FINETUNE_RECORD).write_text(json.dumps(record)))
            shutil.rmtree(scratch, ignore_errors=True)
    return FineTunedModel(str(final), size, digest, record["steps"], record["losses"], reused), Report(1, {
        "reused": reused, "steps": record["steps"], "first_loss": record["losses"][0], "last_loss": record["losses"][-1],
        "bytes": size, "sha256": digest, **timing})


def eval_scores(model, tokenizer, eval_set: evalsets.EvalSet, targets: list[dict], cfg: SelectionConfig,
                labels: dict[str, str], log_fn: Callable[[str], None] = log.info) -> tuple[pa.Table, pa.Table, Report]:
    """The fine-tuned ``model``'s held-out loss and task metric on ``eval_set``
    (``pipeline.evaluate``): the scores table (one row per metric, with its standard error) and
    the per-row table (loss, and accuracy for choice tasks), each row headed by ``labels``
    (model, task, method, run_id) and the seed and k."""
    try:
        res = pipeline.evaluate(model, tokenizer, eval_set, targets, cfg, log_fn=log_fn)
    except ValueError as err:
        raise dg.Failure(description=f"task {labels['task']}: {err}") from err
    scores, sel = res.scores, cfg.selection

    def head(n: int) -> dict:
        return {"model": [labels["model"]] * n, "task": [labels["task"]] * n, "method": [labels["method"]] * n,
                "seed": pa.array([sel.seed] * n, pa.int64()), "k": pa.array([sel.k] * n, pa.int64())}

    n, m = len(scores), len(res.rows)
    table = pa.table({**head(n), "metric": list(scores), "value": list(scores.values()),
                      "stderr": pa.array([res.stderr.get(k) for k in scores], pa.float64()),
                      "run_id": [labels["run_id"]] * n})
    rows = pa.table({**head(m), "row_id": [r["row_id"] for r in res.rows],
                     "loss": pa.array([r["loss"] for r in res.rows], pa.float64()),
                     **{c: pa.array([r.get(c) for r in res.rows], pa.float64()) for c in pipeline.ROW_ACCURACY},
                     "run_id": [labels["run_id"]] * m})
    return table, rows, Report(n, scores)


def build(partitions: dg.PartitionsDefinition, method: str) -> list[dg.AssetsDefinition]:
    common = dict(code_version=code_version(__name__), partitions_def=partitions, group_name=f"method_{method}", key_prefix=[method])
    spec = methods.METHODS[method]
    deps = [on_model("sampled_pool"), *(d for n in spec.needs for d in SELECTION_INPUTS[n].deps)]

    @dg.asset(**common, name="selected_subset", deps=deps, kinds={"parquet"},
              check_specs=[checks.spec("exactly_k_distinct", [method, "selected_subset"], "exactly k distinct pool samples")],
              description=f"The samples selected by {method} ({spec.description}), in pick order, with weights.")
    def selected_subset_asset(context: dg.AssetExecutionContext, store: ArtefactStore,
                              settings: SelectionSettings) -> dg.MaterializeResult:
        step = Step.begin(context, store, settings)
        subset, report = selected_subset(method, SampledPool.load_ids(step),
                                         {n: SELECTION_INPUTS[n].read(step) for n in spec.needs}, step.cfg,
                                         Subset.previous(step))
        subset.save(step)
        return report.finish(step)

    @dg.asset(**common, name="fine_tuned_model", deps=[selected_subset_asset, on_model("sampled_pool")], kinds={"pytorch"},
              op_tags=GPU_TAGS, pool="gpu", description=f"The base model fine-tuned on the {method} subset (transformers.Trainer: AdamW, linear "
                          "schedule, per-sample mean loss; resumes from its last checkpoint).")
    def fine_tuned_model_asset(context: dg.AssetExecutionContext, store: ArtefactStore,
                               settings: SelectionSettings) -> dg.MaterializeResult:
        step = Step.begin(context, store, settings)
        sel = Subset.load(step, method)
        samples = SampledPool.load(step).samples
        chosen = [samples[i] for i in sel.pool_index]
        key = finetune_key(step.registry.model_path(step.model), [s.id for s in chosen], sel.weights, step.cfg)
        model, report = fine_tuned_model(lambda: base_model(step, training=True), chosen, sel.weights, step.cfg,
                                         step.store.path / "checkpoints" / "fine_tuned" / step.model / key,
                                         step.progress("fine-tune", 5), context.log.info)
        model.save(step)
        return report.finish(step)

    @dg.asset(**common, name="eval_scores", deps=[fine_tuned_model_asset], kinds={"pytorch", "parquet"}, op_tags=GPU_TAGS,
              pool="gpu", description="Held-out loss and the task metric of the fine-tuned model (GSM8K exact match, MMLU and "
                                      "multiple-choice accuracy through lm-evaluation-harness, under its metric names and with "
                                      "its standard errors; HumanEval pass@1 in a network-less sandbox).")
    def eval_scores_asset(context: dg.AssetExecutionContext, store: ArtefactStore,
                          settings: SelectionSettings) -> dg.MaterializeResult:
        step = Step.begin(context, store, settings)
        path = FineTunedModel.load_path(step, method)
        task = step.registry.task(step.task)
        targets = target_records(step)
        try:
            eval_set = evalsets.load_eval_set(task.eval_kind, task.eval_path and step.record_input(task.eval_path), targets)
        except RecordError as err:
            raise dg.Failure(description=f"task {step.task}: {err}") from err
        table, rows, report = eval_scores(load_model(path, step.cfg.runtime.device, step.cfg.inference_dtype()),
                                          load_tokenizer(path), eval_set, targets, step.cfg,
                                          {"model": step.model, "task": step.task, "method": method,
                                           "run_id": context.run.run_id}, context.log.info)
        step.write(rows, name="rows.parquet")
        step.write(table)
        return report.finish(step)

    return [selected_subset_asset, fine_tuned_model_asset, eval_scores_asset]
