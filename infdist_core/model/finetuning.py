"""Fine-tuning on the selected subset through ``transformers.Trainer`` (Sec. 5.1).

Trainer brings what users of 1B-8B models expect: bf16 mixed precision, gradient checkpointing,
accelerate/FSDP/DeepSpeed, checkpoints to resume from, and its logging. Two things are this
project's own and say so:

- ``compute_loss`` is the paper's per-sample mean (each sample's mean label-token loss, averaged
  over the batch, optionally scaled by the sample's weight, App. J), not Trainer's token mean,
  which would weight long replies more. Gradient accumulation divides it by the accumulation
  steps, as ``training.train`` does.
- The sample order is ``training.batch_order`` (seeded by ``cfg.seed``), fed to Trainer as a
  sequence read in order, so the Trainer path and the hand-written warm-up loop train on the same
  batches in the same order; a test holds their loss trajectories equal. Resuming skips the
  batches already consumed (Trainer's data skip) and so continues the same order.

LoRA goes through ``peft`` (the ``lora`` extra); the adapters are merged into the weights before
the model is returned, so what is saved and evaluated is a plain model.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from infdist_core.model.gradients import per_sample_losses
from infdist_core.model.tokenization import TokenizedSample, pad_batch
from infdist_core.model.training import TrainConfig, batch_order, check_inputs, schedule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainerOptions:
    """What Trainer adds to ``TrainConfig``: precision, memory and resumption."""

    precision: str = "float32"
    """float32, or bfloat16 (mixed precision: bf16 autocast, fp32 master weights and AdamW state)."""
    gradient_checkpointing: bool = False
    lora_rank: int = 0
    """0: full fine-tuning; else LoRA adapters of this rank on ``lora_targets`` (needs peft)."""
    lora_alpha: int = 32
    lora_targets: str = "all-linear"
    save_steps: int = 0
    """Write a Trainer checkpoint every this many optimizer steps (0: none); a fine-tune
    interrupted after one resumes from it."""
    use_cpu: bool = True


@dataclass
class FineTuneResult:
    model: torch.nn.Module
    """The trained model (LoRA adapters merged)."""
    steps: int
    losses: list[float]
    """Loss of every optimizer step (the mean of its micro-batches' per-sample-mean losses)."""
    seconds: float
    resumed_from: int = 0
    """The optimizer step the run resumed from (0: from the start)."""


class _OrderedSamples(torch.utils.data.Dataset):
    """The micro-batches of ``batch_order`` laid end to end: item ``j`` is the ``j``-th sample
    fed to the model."""

    def __init__(self, samples: list[TokenizedSample], batches: list[list[int]], weights: np.ndarray | None):
        self.samples, self.flat, self.weights = samples, [i for b in batches for i in b], weights

    def __len__(self) -> int:
        return len(self.flat)

    def __getitem__(self, j: int) -> dict:
        i = self.flat[j]
        return {"index": i, "weight": 1.0 if self.weights is None else float(self.weights[i])}


def _trainer_class():
    from transformers import Trainer

    class PerSampleTrainer(Trainer):
        """Trainer with the paper's per-sample mean loss and a sequential sampler over the order."""

        loss_is_scaled_for_ga = False  # Trainer divides by the accumulation steps, as training.train does

        def _get_train_sampler(self, train_dataset=None):
            return torch.utils.data.SequentialSampler(train_dataset or self.train_dataset)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            weight = inputs.pop("weight")
            per = per_sample_losses(model, inputs)
            loss = (per * weight.to(per.dtype)).mean()
            return (loss, None) if return_outputs else loss

    return PerSampleTrainer


def _collator(samples: list[TokenizedSample], pad_id: int):
    def collate(items: list[dict]) -> dict:
        batch = pad_batch([samples[it["index"]] for it in items], pad_id)
        batch["weight"] = torch.tensor([it["weight"] for it in items], dtype=torch.float32)
        return batch

    return collate


def _with_lora(model, opts: TrainerOptions):
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:
        raise ImportError("lora_rank > 0 needs peft: pip install 'infdist[lora]'") from err
    cfg = LoraConfig(r=opts.lora_rank, lora_alpha=opts.lora_alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                     target_modules=opts.lora_targets if opts.lora_targets == "all-linear" else opts.lora_targets.split(","))
    return get_peft_model(model, cfg)


def _progress_callback(progress: Callable[[int, int, float], None], steps: int):
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                progress(state.global_step, steps, float(logs["loss"]))

    return Progress()


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete Trainer checkpoint under ``output_dir`` (None: start afresh).

    Trainer writes a checkpoint folder in place (weights, optimizer, scheduler, RNG state, then
    ``trainer_state.json`` last) and deletes the older one only after that, but its own
    ``get_last_checkpoint`` takes the newest folder whatever it holds: after a kill during a save
    it would resume from a folder without optimizer state (silently a fresh AdamW). A folder
    without a readable ``trainer_state.json`` is the one a killed run was writing, so it is passed
    over (and the next save of that step overwrites it)."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    out = Path(output_dir)
    found = []
    for d in out.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if out.is_dir() else []:
        step = d.name.rsplit("-", 1)[-1]
        if d.is_dir() and step.isdigit() and _complete(d):
            found.append((int(step), d))
    return str(max(found)[1]) if found else None


def _complete(checkpoint: Path) -> bool:
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def fine_tune(model, samples: list[TokenizedSample], cfg: TrainConfig, opts: TrainerOptions, pad_id: int,
              output_dir: str | Path, weights: np.ndarray | None = None,
              progress: Callable[[int, int, float], None] | None = None) -> FineTuneResult:
    """Train ``model`` on ``samples`` with Trainer (AdamW, linear decay to 0, no warm-up, no
    gradient clipping: the settings of ``training.train``); resume from the newest checkpoint in
    ``output_dir`` when there is one. ``output_dir`` is left in place: remove it once the
    returned model is saved (until then it is what a crash would resume from)."""
    from transformers import PrinterCallback, TrainingArguments

    check_inputs(samples, weights)
    if opts.precision not in ("float32", "bfloat16"):
        raise ValueError(f"precision={opts.precision!r}: use float32 or bfloat16")
    steps = schedule(len(samples), cfg)
    data = _OrderedSamples(samples, batch_order(len(samples), cfg, steps), weights)
    if opts.lora_rank:
        model = _with_lora(model, opts)
    if opts.gradient_checkpointing:
        model.config.use_cache = False
        if opts.lora_rank:
            model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks still need a grad path
    args = TrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=cfg.micro_batch, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr, weight_decay=cfg.weight_decay, adam_beta1=cfg.betas[0], adam_beta2=cfg.betas[1],
        adam_epsilon=cfg.eps, optim="adamw_torch", lr_scheduler_type="linear", warmup_steps=0, max_grad_norm=0.0,
        max_steps=steps, num_train_epochs=1, logging_strategy="steps", logging_steps=1,
        save_strategy="steps" if opts.save_steps else "no", save_steps=opts.save_steps or 500, save_total_limit=1,
        bf16=opts.precision == "bfloat16", activation_checkpointing=opts.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if opts.gradient_checkpointing else None,
        use_cpu=opts.use_cpu, seed=cfg.seed, data_seed=cfg.seed, remove_unused_columns=False,
        dataloader_num_workers=0, report_to="none", disable_tqdm=True,
    )
    callbacks = [_progress_callback(progress, steps)] if progress else []
    trainer = _trainer_class()(model=model, args=args, train_dataset=data, data_collator=_collator(samples, pad_id),
                               callbacks=callbacks)
    trainer.remove_callback(PrinterCallback)  # progress goes to ``progress`` and the log, not stdout
    resume = last_checkpoint(output_dir)
    if resume:
        log.info("fine-tune: resuming from %s", resume)
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - t0
    losses = {e["step"]: float(e["loss"]) for e in trainer.state.log_history if "loss" in e}
    model = trainer.model
    if opts.lora_rank:
        model = model.merge_and_unload()
    if opts.gradient_checkpointing:
        model.activation_checkpointing_disable()
        model.config.use_cache = True
    model.eval()
    resumed_from = int(Path(resume).name.rsplit("-", 1)[-1]) if resume else 0
    return FineTuneResult(model, steps, [losses[s] for s in sorted(losses)], seconds, resumed_from)
