"""Per-method assets (model x task): ``<method>/selected_subset`` -> ``<method>/fine_tuned_model``
-> ``<method>/eval_scores``, for InfDist and the baselines (uniform, mid_ppl, rds, grad), so any
of them can be materialised for the same partition and compared in the catalog."""



import hashlib
import json
import shutil

import dagster as dg
import numpy as np
import pyarrow as pa

from infdist_assets.assets import checks
from infdist_assets.assets.markdown import table_md
from infdist_assets.partitions import on_model
from infdist_assets.resources import ArtefactStore, SelectionSettings
from infdist_assets.store import storage
from infdist_assets.store.artefacts import FineTunedModel, SampledPool, Subset
from infdist_assets.store.loaders import GPU_TAGS, SELECTION_INPUTS, base_model, target_records
from infdist_assets.store.step import Step
from infdist_assets.store.versions import code_version
from infdist_core import methods, pipeline
from infdist_core.data import atomic, evalsets
from infdist_core.data.records import RecordError
from infdist_core.maths.selection import compare_selections
from infdist_core.model.modeling import load_model, load_tokenizer

METHODS = tuple(methods.METHODS)


FINETUNE_RECORD = "infdist_finetune.json"
"""Written inside a fine-tuned checkpoint folder before it is swapped into place: its presence
means the folder is complete."""


TRAINER_VERSION = 2
"""Bumped when the fine-tuning code changes what it trains (2: transformers.Trainer), so earlier
fine-tunes are not reused for the new code's."""


def finetune_key(step: Step, sample_ids: list[str], weights: np.ndarray) -> str:
    """Content address of a fine-tune: the base model, the samples in pick order, the weights
    when they are used, every training setting and the precision it resolves to, and
    ``TRAINER_VERSION`` for the training code (not its hash, like every artefact here).
    Task-independent selections (uniform, mid_ppl) therefore train once per seed and k, whatever
    the task."""
    cfg, flat = step.cfg, step.cfg.to_dict()
    doc = {"base": str(step.registry.model_path(step.model)), "samples": sample_ids,
           "weights": (np.round(np.asarray(weights, np.float64), 12).tolist() if cfg.selection.weighted_training
                       else None),
           "train": {f: flat[f] for f in ("train_lr", "train_epochs", "train_micro_batch", "train_grad_accum", "seed",
                                          "weighted_training", "max_length", "data_seed", "lora_rank", "lora_alpha")},
           "precision": cfg.training_dtype(), "trainer": TRAINER_VERSION}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:20]


def build(partitions: dg.PartitionsDefinition, method: str) -> list[dg.AssetsDefinition]:
    common = dict(code_version=code_version(__name__), partitions_def=partitions, group_name=f"method_{method}", key_prefix=[method])
    spec = methods.METHODS[method]
    deps = [on_model("sampled_pool"), *(d for n in spec.needs for d in SELECTION_INPUTS[n].deps)]

    @dg.asset(**common, name="selected_subset", deps=deps, kinds={"parquet"},
              check_specs=[checks.spec("exactly_k_distinct", [method, "selected_subset"], "exactly k distinct pool samples")],
              description=f"The samples selected by {method} ({spec.description}), in pick order, with weights.")
    def selected_subset(context: dg.AssetExecutionContext, store: ArtefactStore, settings: SelectionSettings) -> dg.MaterializeResult:
        step = Step.begin(context, store, settings)
        ids = SampledPool.load_ids(step)
        idx, w = methods.select(method, step.cfg, len(ids), **{n: SELECTION_INPUTS[n].read(step) for n in spec.needs})
        previous = Subset(method, idx, w, [ids[i] for i in idx]).save(step)
        preview = [{"rank": r + 1, "sample_id": ids[i], "weight": float(w[r])} for r, i in enumerate(idx[:10])]
        moved = {}
        if previous is not None:  # what this re-selection changed (the catalog's selection_changes has every row)
            change = compare_selections(previous, {ids[i]: float(w[r]) for r, i in enumerate(idx)})
            moves = sorted(change.weight_change.items(), key=lambda kv: -abs(kv[1]))[:10]
            moved = {"vs_previous_selection": dg.MetadataValue.md(
                f"{len(change.entered)} entered, {len(change.left)} left, {len(change.kept)} kept\n\n" +
                table_md([{"sample_id": s, "weight_change": round(d, 6)} for s, d in moves if d], ["sample_id", "weight_change"]))}
        return step.finish(len(idx), {"k": len(idx), "distinct": len(set(idx.tolist())),
                                      "entered": None if previous is None else len(change.entered),
                                      "left": None if previous is None else len(change.left)},
                           {"top_selected": dg.MetadataValue.md(table_md(preview, ["rank", "sample_id", "weight"])), **moved},
                           checks=[checks.selection_valid(np.asarray(idx), len(ids) if spec.whole_pool else step.cfg.selection.k,
                                                          len(ids))])

    @dg.asset(**common, name="fine_tuned_model", deps=[selected_subset, on_model("sampled_pool")], kinds={"pytorch"},
              op_tags=GPU_TAGS, pool="gpu", description=f"The base model fine-tuned on the {method} subset (transformers.Trainer: AdamW, linear "
                          "schedule, per-sample mean loss; resumes from its last checkpoint).")
    def fine_tuned_model(context: dg.AssetExecutionContext, store: ArtefactStore, settings: SelectionSettings) -> dg.MaterializeResult:
        step = Step.begin(context, store, settings)
        sel = Subset.load(step, method)
        samples = SampledPool.load(step).samples
        chosen = [samples[i] for i in sel.pool_index]
        key = finetune_key(step, [s.id for s in chosen], sel.weights)
        final = step.store.path / "checkpoints" / "fine_tuned" / step.model / key
        done = final / FINETUNE_RECORD
        # one trainer per key at a time: two runs of the partition (a schedule and a person) would
        # otherwise share the Trainer's scratch folder; the one that waited reuses the other's model
        with atomic.exclusive(final.with_name(f".{key}.lock")):
            reused = done.exists()
            timing = {}  # kept out of the folder's record: the same training is the same bytes, however long it took
            if reused:  # the same subset, order, weights and training settings were trained before
                record = json.loads(done.read_text())
                size, digest = storage.folder_digest(final)
                context.log.info(f"reusing fine-tuned model {final} (same base model, samples, weights and training settings)")
            else:
                model, tok = base_model(step, training=True)
                scratch = final.with_name(key + ".trainer")  # Trainer checkpoints: what an interrupted fine-tune resumes from
                res = pipeline.fine_tune(model, chosen, sel.weights, step.cfg, tok.pad_token_id,
                                         output_dir=scratch, progress=step.progress("fine-tune", 5))
                if res.resumed_from:
                    context.log.info(f"fine-tune resumed from step {res.resumed_from} of {res.steps}")
                record = {"key": key, "steps": res.steps, "losses": res.losses, "precision": step.cfg.training_dtype(),
                          "lora_rank": step.cfg.training.lora_rank}
                timing = {"train_seconds": res.seconds, "resumed_from": res.resumed_from}
                size, digest = storage.save_checkpoint(
                    res.model, tok, final, also=lambda d: (d / FINETUNE_RECORD).write_text(json.dumps(record)))
                shutil.rmtree(scratch, ignore_errors=True)
        FineTunedModel(str(final), size, digest, record["steps"], record["losses"], reused).save(step)
        return step.finish(1, {"reused": reused, "steps": record["steps"], "first_loss": record["losses"][0], "last_loss": record["losses"][-1],
                               "bytes": size, "sha256": digest, **timing})

    @dg.asset(**common, name="eval_scores", deps=[fine_tuned_model], kinds={"pytorch", "parquet"}, op_tags=GPU_TAGS, pool="gpu",
              description="Held-out loss and the task metric of the fine-tuned model (GSM8K exact match, MMLU and "
                          "multiple-choice accuracy through lm-evaluation-harness, under its metric names and with "
                          "its standard errors; HumanEval pass@1 in a network-less sandbox).")
    def eval_scores(context: dg.AssetExecutionContext, store: ArtefactStore, settings: SelectionSettings) -> dg.MaterializeResult:
        step = Step.begin(context, store, settings)
        path = FineTunedModel.load_path(step, method)
        spec = step.registry.task(step.task)
        targets = target_records(step)
        try:
            eval_set = evalsets.load_eval_set(spec.eval_kind, spec.eval_path and step.record_input(spec.eval_path), targets)
        except RecordError as err:
            raise dg.Failure(description=f"task {step.task}: {err}") from err
        try:
            res = pipeline.evaluate(load_model(path, step.cfg.runtime.device, step.cfg.inference_dtype()),
                                    load_tokenizer(path), eval_set, targets, step.cfg, log_fn=context.log.info)
        except ValueError as err:
            raise dg.Failure(description=f"task {step.task}: {err}") from err
        scores, sel = res.scores, step.cfg.selection
        n = len(scores)
        table = pa.table({"model": [step.model] * n, "task": [step.task] * n, "method": [method] * n,
                          "seed": [sel.seed] * n, "k": [sel.k] * n, "metric": list(scores),
                          "value": list(scores.values()),
                          "stderr": pa.array([res.stderr.get(m) for m in scores], pa.float64()),
                          "run_id": [context.run.run_id] * n})
        m = len(res.rows)
        step.write(pa.table({"model": [step.model] * m, "task": [step.task] * m, "method": [method] * m,
                             "seed": pa.array([sel.seed] * m, pa.int64()), "k": pa.array([sel.k] * m, pa.int64()),
                             "row_id": [r["row_id"] for r in res.rows], "loss": pa.array([r["loss"] for r in res.rows], pa.float64()),
                             **{c: pa.array([r.get(c) for r in res.rows], pa.float64()) for c in pipeline.ROW_ACCURACY},
                             "run_id": [context.run.run_id] * m}), name="rows.parquet")
        step.write(table)
        return step.finish(len(scores), scores)

    return [selected_subset, fine_tuned_model, eval_scores]
