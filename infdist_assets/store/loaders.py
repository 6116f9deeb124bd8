"""What the assets load besides artefacts (those are ``artefacts.py``): the models, tokenizers and
registered records a step needs, and the named inputs of the selection methods
(``SELECTION_INPUTS``, one per name of ``infdist_core.methods``), shared by the pool-side,
target-side and method assets (no asset module imports another)."""

from dataclasses import dataclass
from typing import Any, Callable

import dagster as dg
import torch

from infdist_assets.partitions import on_model
from infdist_assets.store.artefacts import (LandmarkGradients, PoolLosses, PoolVectors, TargetGradients, TargetWeights,
                                            WarmupCheckpoint)
from infdist_assets.store.step import Step
from infdist_core import pipeline
from infdist_core.data.records import RecordError, load_records
from infdist_core.model import proxies
from infdist_core.model.modeling import load_model, load_tokenizer
from infdist_core.model.tokenization import tokenize_records
from infdist_core.model.training import load_adam_moments

GPU_TAGS = {"dagster-k8s/config": {"container_config": {"resources": {"limits": {"nvidia.com/gpu": "1"}}}}}
"""Op tags that request a GPU when the job runs on Kubernetes with ``k8s_job_executor``."""


def selection_model(step: Step):
    """The model at which influence is measured: the warm-up checkpoint (or the base model)."""
    return load_model(WarmupCheckpoint.load(step).model_path, step.cfg.runtime.device, step.cfg.inference_dtype())


def base_tokenizer(step: Step):
    return load_tokenizer(step.record_input(step.registry.model_path(step.model)))


def base_model(step: Step, training: bool = False):
    """The registered (not warmed-up) model and its tokenizer; float32 to train, else in the
    configured ``dtype``."""
    path = step.record_input(step.registry.model_path(step.model))
    dtype = torch.float32 if training else step.cfg.inference_dtype()
    return load_model(path, step.cfg.runtime.device, dtype), load_tokenizer(path)


def warmup_moments(step: Step, model):
    """The warm-up's Adam moments of the gradient parameters, when ``adam_aware`` (else None)."""
    state = WarmupCheckpoint.load(step).adam_state
    if not (step.cfg.data.adam_aware and state):
        return None
    names = [n for n, _ in pipeline.gradient_parameters(model, step.cfg)]
    return load_adam_moments(state, names)


def target_records(step: Step) -> list[dict]:
    try:
        return load_records(step.record_input(step.registry.task(step.task).targets))
    except RecordError as err:
        raise dg.Failure(description=str(err)) from err


def _rds_targets(step: Step):
    model, tok = base_model(step)
    ts = tokenize_records(tok, target_records(step), step.cfg.data.target_tokens()).samples
    return proxies.compute_proxy(model, ts, tok.pad_token_id, "rds").vectors


@dataclass(frozen=True)
class SelectionInput:
    deps: tuple  # upstream asset keys (model-partitioned ones through on_model)
    read: Callable[[Step], Any]


SELECTION_INPUTS = {
    "influence": SelectionInput((dg.AssetKey("per_target_weights"),), lambda step: TargetWeights.load(step).scores),
    "pool_losses": SelectionInput((on_model("pool_perplexity"),), lambda step: PoolLosses.load(step).losses),
    "rds_pool": SelectionInput((on_model("rds_embeddings"),), lambda step: PoolVectors.load(step, "rds_embeddings").vectors),
    "rds_targets": SelectionInput((), _rds_targets),
    "pool_gradients": SelectionInput((on_model("pool_gradients"),),
                                     lambda step: PoolVectors.load(step, "pool_gradients").vectors),
    "landmark_gradients": SelectionInput((on_model("landmark_gradients"),), lambda step: LandmarkGradients.load(step).used),
    "target_gradients": SelectionInput((dg.AssetKey("target_gradients"),), lambda step: TargetGradients.load(step).vectors),
}
"""How the asset layer obtains each named input of ``infdist_core.methods`` (and which assets it
depends on); a test checks every name a method needs is here."""
