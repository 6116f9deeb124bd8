"""JVP embeddings (Eq. 12): Jacobian-vector products of an intermediate output with respect to
the parameters of the first ``n_blocks`` transformer blocks, along seeded Gaussian tangents.

    h_JVP(x) = 1/|V| sum_v  d N_l(x) / d theta_l . v

The tangent set V is drawn once from the seed and shared by every sample. Because the JVP is
linear in v, the mean over V equals one JVP along the mean tangent; ``combine="mean"`` uses that
(exactly Eq. 12 at the cost of one JVP), ``combine="concat"`` keeps one JVP per tangent.
Outputs: ``"logits"`` (final norm + LM head after the blocks, the paper) or ``"hidden"``
(final-norm hidden state, as the authors' released code), at the last non-padding token.
"""

from __future__ import annotations

import copy

import torch
from torch.func import functional_call, jvp

from infdist_core.data.seeding import generator
from infdist_core.model.modeling import decoder_layers
from infdist_core.model.tokenization import TokenizedSample, pad_batch


def truncated_backbone(model, n_blocks: int):
    """The model's backbone cut after ``n_blocks`` blocks, sharing parameters (final norm kept)."""
    base = model.model
    n_layers = len(decoder_layers(model))
    if not 1 <= n_blocks <= n_layers:
        raise ValueError(f"n_blocks must be in [1, {n_layers}], got {n_blocks}")
    sub = copy.copy(base)
    sub._modules = dict(base._modules)
    sub._parameters = dict(base._parameters)
    sub._buffers = dict(base._buffers)
    sub.layers = torch.nn.ModuleList(list(base.layers[:n_blocks]))
    sub.config = copy.deepcopy(base.config)
    sub.config.num_hidden_layers = n_blocks
    return sub


def block_tangents(sub, n_tangents: int, seed: int, prefix: str | tuple[str, ...] = "layers.") -> list[dict[str, torch.Tensor]]:
    """``n_tangents`` seeded Gaussian directions over the parameters whose names start with ``prefix``."""
    named = [(n, p) for n, p in sub.named_parameters() if n.startswith(prefix)]
    out = []
    for j in range(n_tangents):
        out.append({
            n: torch.randn(p.shape, generator=generator(seed, "jvp-tangent", j, n), dtype=p.dtype).to(p.device)
            for n, p in named
        })
    return out


class JVPEmbedder:
    """Eq. 12 for any number of samples, with the tangent set V drawn once from the seed.

    ``position="first"`` differentiates w.r.t. the first ``n_blocks`` blocks and stops the forward
    after them (Eq. 12); ``"last"`` runs the whole model and differentiates w.r.t. its last
    ``n_blocks`` blocks (the earlier blocks carry no tangent, so they run as a plain forward).
    Outputs have shape (n, H) for ``hidden`` or (n, V) for ``logits`` (``concat``: times |V|).
    """

    def __init__(self, model, n_blocks: int = 4, n_tangents: int = 2, output: str = "hidden", combine: str = "mean",
                 seed: int = 0, position: str = "first") -> None:
        if output not in ("hidden", "logits"):
            raise ValueError(f"output must be 'hidden' or 'logits', got {output!r}")
        if combine not in ("mean", "concat"):
            raise ValueError(f"combine must be 'mean' or 'concat', got {combine!r}")
        if position not in ("first", "last"):
            raise ValueError(f"position must be 'first' or 'last', got {position!r}")
        if n_tangents < 1:
            raise ValueError(f"n_tangents must be >= 1, got {n_tangents}")
        n_layers = len(decoder_layers(model))
        if not 1 <= n_blocks <= n_layers:
            raise ValueError(f"n_blocks must be in [1, {n_layers}], got {n_blocks}")
        if position == "first":
            self.sub, prefix = truncated_backbone(model, n_blocks), "layers."
        else:
            self.sub = model.model
            prefix = tuple(f"layers.{i}." for i in range(n_layers - n_blocks, n_layers))
        self.model, self.output = model, output
        self.device = next(model.parameters()).device
        tangents = block_tangents(self.sub, n_tangents, seed, prefix)
        if combine == "mean":  # linearity: the mean of the JVPs is the JVP along the mean tangent
            tangents = [{n: sum(t[n] for t in tangents) / n_tangents for n in tangents[0]}]
        self.tangents = tangents
        self.primals = {n: p.detach() for n, p in self.sub.named_parameters() if n.startswith(prefix)}

    def __call__(self, samples: list[TokenizedSample], pad_id: int, batch_size: int = 8) -> torch.Tensor:
        head = self.model.get_output_embeddings()
        rows = []
        for lo in range(0, len(samples), batch_size):
            batch = {k: v.to(self.device) for k, v in pad_batch(samples[lo : lo + batch_size], pad_id).items()}
            last = batch["attention_mask"].sum(1) - 1
            ar = torch.arange(len(last), device=self.device)

            def f(params):
                h = functional_call(self.sub, params, args=(), kwargs={
                    "input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}).last_hidden_state
                h = h[ar, last]
                return head(h) if self.output == "logits" else h

            outs = []
            for t in self.tangents:
                with torch.no_grad():
                    _, tan = jvp(f, (self.primals,), (t,))
                outs.append(tan.float())
            rows.append(torch.cat(outs, dim=1))
        return torch.cat(rows).cpu()


def jvp_embeddings(
    model,
    samples: list[TokenizedSample],
    pad_id: int,
    n_blocks: int = 4,
    n_tangents: int = 2,
    output: str = "hidden",
    combine: str = "mean",
    seed: int = 0,
    batch_size: int = 8,
    position: str = "first",
) -> torch.Tensor:
    """JVP embeddings of ``samples`` (see ``JVPEmbedder``)."""
    return JVPEmbedder(model, n_blocks, n_tangents, output, combine, seed, position)(samples, pad_id, batch_size)
