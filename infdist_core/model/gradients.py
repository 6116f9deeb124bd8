"""Per-sample loss gradients, streamed into a projector (Sections 3.3, 4.2).

For every sample: the gradient of its mean label-token cross-entropy with respect to the chosen
parameters, optionally Adam-preconditioned (``a * g``, Eq. 8-9), written into one reusable flat
buffer and projected at once, so no full-size gradient outlives its sample. With
``batch_size > 1`` a padded batch shares one forward pass and one vmapped backward
(``is_grads_batched``), which pays on a GPU. A ``tap`` sees each sample's final hidden states
between its forward and its backward, so that another gradient from the same forward (a partial
one: ``proxies.gradients_with_proxy``) does not need a forward of its own.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from infdist_core.maths.preconditioning import AdamMoments, adam_scale
from infdist_core.maths.projection import HadamardProjector
from infdist_core.model.tokenization import IGNORE, TokenizedSample, pad_batch

log = logging.getLogger(__name__)


@dataclass
class GradientMatrix:
    """Projected per-sample gradients.

    Attributes
    ----------
    vectors : float32 array of shape (n, out_dim); rows L2-normalised when requested
    norms : float64 array of shape (n,), norm before normalisation (after preconditioning; over
        the coordinates the projector keeps, rescaled, when it pre-masks)
    valid : bool array of shape (n,), False for zero gradients (reported, never NaN)
    n_label_tokens : int array of shape (n,)
    seconds : float, wall time
    """

    vectors: np.ndarray
    norms: np.ndarray
    valid: np.ndarray
    n_label_tokens: np.ndarray
    seconds: float


def per_sample_losses(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean label-token cross-entropy of each row of a padded batch, shape (B,)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shift_logits = logits[:, :-1].float()
    shift_labels = batch["labels"][:, 1:]
    tok = F.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                          ignore_index=IGNORE, reduction="none").view(shift_labels.shape)
    counts = (shift_labels != IGNORE).sum(1)
    return tok.sum(1) / counts.clamp_min(1)


def _adam_premultiplier(params: list[torch.nn.Parameter], moments: AdamMoments | None) -> torch.Tensor | None:
    if moments is None:
        return None
    dim = sum(p.numel() for p in params)
    if moments.exp_avg_sq.numel() != dim:
        raise ValueError(f"Adam state covers {moments.exp_avg_sq.numel()} values, the parameters {dim}")
    return adam_scale(moments.exp_avg_sq, moments.step, moments.beta1, moments.beta2, moments.eps)


class _BackboneCapture:
    """Forward hooks on the model's backbone (``model.model``): its last output and how long it took."""

    def __init__(self, backbone):
        self.hidden, self.seconds, self._t0 = None, 0.0, 0.0
        self._handles = [backbone.register_forward_pre_hook(self._start), backbone.register_forward_hook(self._end)]

    def _start(self, module, args):
        self._t0 = time.perf_counter()

    def _end(self, module, args, output):
        self.hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        self.seconds = time.perf_counter() - self._t0

    def remove(self) -> None:
        for h in self._handles:
            h.remove()


def _project_sample_gradients(losses: torch.Tensor, params: list[torch.nn.Parameter], projector: HadamardProjector,
                              premult: torch.Tensor | None, out: np.ndarray, norms: np.ndarray, lo: int, device) -> None:
    """Each loss's gradient w.r.t. ``params``, projected into ``out[lo + i]`` (norm into ``norms``)."""
    if len(losses) == 1:
        per = [torch.autograd.grad(losses[0], params, allow_unused=True)]
    else:
        eye = torch.eye(len(losses), device=device, dtype=losses.dtype)
        stacked = torch.autograd.grad(losses, params, grad_outputs=eye, is_grads_batched=True, allow_unused=True)
        per = [[None if g is None else g[i] for g in stacked] for i in range(len(losses))]
    for i, grads in enumerate(per):
        grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, params)]
        vector, norms[lo + i] = projector.project_parts_and_norm([g.detach() for g in grads], premult)
        out[lo + i] = vector.cpu().numpy()


def sample_gradients(
    model,
    samples: list[TokenizedSample],
    params: list[torch.nn.Parameter],
    projector: HadamardProjector,
    pad_id: int,
    moments: AdamMoments | None = None,
    normalize: bool = True,
    batch_size: int = 1,
    progress: Callable[[int, int], None] | None = None,
    tap: Callable[[int, torch.Tensor, dict, float], None] | None = None,
) -> GradientMatrix:
    """Projected (and optionally Adam-preconditioned, normalised) gradient of every sample.

    Parameters
    ----------
    model : causal LM; its parameters are not modified
    samples : tokenised samples
    params : the parameters to differentiate (e.g. ``modeling.select_parameters``)
    projector : ``HadamardProjector`` with ``in_dim == sum(p.numel())``; gradients are written
        straight into its workspace (``project_parts``), signed and Adam-scaled in one pass
    tap : called for each sample (``batch_size`` 1 only) after its forward and before its
        gradient's backward, with its position, its label-shifted final hidden states (the
        backbone's output, with their graph), its batch and the backbone forward's seconds: what
        another computation from the same forward needs (``proxies.gradients_with_proxy``). A tap
        that differentiates through the hidden states must keep the graph (``retain_graph``).
    """
    if tap is not None and batch_size != 1:
        raise ValueError("a tap needs one sample per pass (batch_size=1)")
    device = next(model.parameters()).device
    premult = _adam_premultiplier(params, moments)
    if premult is not None:
        premult = premult.to(projector.device)
    n = len(samples)
    out = np.zeros((n, projector.out_dim), dtype=np.float32)
    norms = np.zeros(n)
    counts = np.array([s.n_label_tokens for s in samples])
    t0 = time.perf_counter()
    hooks = _BackboneCapture(model.model) if tap is not None else None
    try:
        for lo in range(0, n, batch_size):
            chunk = samples[lo : lo + batch_size]
            batch = {k: v.to(device) for k, v in pad_batch(chunk, pad_id).items()}
            losses = per_sample_losses(model, batch)
            if hooks is not None:
                tap(lo, hooks.hidden[0, :-1], batch, hooks.seconds)
            _project_sample_gradients(losses, params, projector, premult, out, norms, lo, device)
            if progress:
                progress(min(lo + batch_size, n), n)
    finally:
        if hooks is not None:
            hooks.remove()
    valid = norms > 1e-12
    if normalize:
        pn = np.linalg.norm(out, axis=1, keepdims=True)
        out = np.where(valid[:, None] & (pn > 0), out / np.maximum(pn, 1e-30), 0.0).astype(np.float32)
    if not valid.all():
        log.warning("%d samples have a zero gradient and are flagged invalid", int((~valid).sum()))
    return GradientMatrix(out, norms, valid, counts, time.perf_counter() - t0)
