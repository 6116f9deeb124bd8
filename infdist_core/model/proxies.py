"""Proxy embeddings for landmark propagation, behind one interface (Sec. 4.3; which proxies carry
landmark influence on a small model is measured by ``benchmarks/bench_recovery.py``).

A proxy is named by a spec string; ``+`` concatenates (each part L2-normalised first):

- ``jvp-hidden[:B[:V]]``  JVP embedding, final-norm hidden output, first B blocks, V tangents
- ``jvp-logits[:B[:V]]``  JVP embedding, next-token logits (paper), Rademacher-projected
- ``jvp-hidden-last[:B[:V]]`` JVP w.r.t. the *last* B blocks, at the model's final hidden state
- ``jvp-hidden-concat[:B[:V]]`` one JVP per tangent, concatenated (Eq. 12 averages them)
- ``rds``                 RDS+: position-weighted mean pool of the last hidden states
- ``grad-last[:B]``       loss gradient w.r.t. the last B blocks + final norm, Hadamard-projected
                          (a forward pass and a backward pass that stops there)
- ``grad-head``           loss gradient w.r.t. the LM head alone, ``mean_t (p_t - y_t) h_t'``,
                          Hadamard-projected (a forward pass; the backward stops at the head).
                          ``grad-last:B+grad-head`` shares one forward and one partial backward.
- ``grad-head:N[:B]``     the LM head's gradient for the model *truncated* after its first N blocks
                          (+ final norm + head): a batched forward through N blocks, then the
                          gradient in closed form, no autograd. ``B`` > 0 count-sketches the
                          vocabulary side into B signed buckets before projecting (the V x H
                          matrix is never formed). N = all blocks gives ``grad-head``'s gradient
                          from a batched pass (not bit-identical to it: padding changes rounding)
- ``grad-head-sketch[:A]`` the same gradient sketched as ``S_V' dW S_H`` with seeded Gaussian
                          ``S_V`` (V x A), ``S_H`` (H x A): A*A features, two thin matmuls, no
                          V x H matrix (cheaper, noisier: a Kronecker sketch)

Every proxy returns L2-normalised float32 rows and its measured seconds per sample. The gradient
kinds (``proxy_specs.KINDS[...].gradient``) estimate inner products of true gradient blocks, so a
sample's part can be compared with the same part of a target's (``landmarks.DirectTerm``); a
concatenation keeps each part's width in ``ProxyEmbedding.widths``. The kinds are registered in
``proxy_specs.KINDS``; ``COMPUTE`` below maps each to its computation.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from infdist_core.maths.preconditioning import AdamMoments, unit_rows
from infdist_core.maths.projection import HadamardProjector, RademacherProjector
from infdist_core.model.gradients import GradientMatrix, sample_gradients
from infdist_core.model.jvp import jvp_embeddings
from infdist_core.model.modeling import block_pattern, decoder_layers, select_parameters
from infdist_core.model.tokenization import IGNORE, TokenizedSample, pad_batch
from infdist_core.proxy_specs import KINDS, ProxySpec

BATCH_SIZE = 8
"""Samples per forward of the batched kinds (and of ``evaluation.sample_losses``): sharded pool
passes cut at multiples of it so that every sample keeps its batch (``infdist_core.data.shards``)."""


@dataclass
class ProxyEmbedding:
    spec: str
    vectors: np.ndarray  # (n, e) float32, unit rows (zero rows for invalid samples)
    seconds_per_sample: float
    widths: tuple[int, ...] = ()  # columns of each ``+`` part, in spec order (each part scaled by 1/sqrt(parts))


@torch.no_grad()
def rds_embeddings(model, samples: list[TokenizedSample], pad_id: int, batch_size: int = 8) -> np.ndarray:
    """RDS+ (Ivison et al. 2025): mean of last-layer hidden states weighted by position 1..L."""
    device = next(model.parameters()).device
    rows = []
    for lo in range(0, len(samples), batch_size):
        b = {k: v.to(device) for k, v in pad_batch(samples[lo : lo + batch_size], pad_id).items()}
        h = model.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state.float()
        pos = torch.cumsum(b["attention_mask"], 1).float() * b["attention_mask"]
        w = pos / pos.sum(1, keepdim=True)
        rows.append((h * w[..., None]).sum(1).cpu())
    return torch.cat(rows).numpy()


@torch.no_grad()
def head_gradient_sketch(model, samples: list[TokenizedSample], pad_id: int, width: int = 64, seed: int = 0,
                         batch_size: int = 4) -> np.ndarray:
    """Kronecker sketch of each sample's LM-head gradient (mean label-token loss), shape (n, width**2).

    ``dL/dW = 1/|labels| sum_t (softmax(z_t) - onehot(y_t)) h_t'`` for the head ``z = W h``; the
    sketch ``S_V' dW S_H = 1/|labels| sum_t (S_V'(p_t - y_t)) (S_H' h_t)'`` preserves inner products
    of gradients in expectation (E[S S'] = I) and never forms the V x H matrix.
    """
    from infdist_core.data.seeding import generator

    device = next(model.parameters()).device
    head = model.get_output_embeddings()
    V, H = head.weight.shape
    S_V = (torch.randn(V, width, generator=generator(seed, "head-sketch-V", V, width)) / width**0.5).to(device)
    S_H = (torch.randn(H, width, generator=generator(seed, "head-sketch-H", H, width)) / width**0.5).to(device)
    rows = []
    for lo in range(0, len(samples), batch_size):
        b = {k: v.to(device) for k, v in pad_batch(samples[lo : lo + batch_size], pad_id).items()}
        h = model.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state[:, :-1].float()
        labels = b["labels"][:, 1:]
        mask = (labels != -100).float()
        probs = torch.softmax(head(h).float(), dim=-1)  # (B, T, V)
        resid = probs @ S_V - S_V[labels.clamp_min(0)]  # S_V'(p_t - y_t), (B, T, A)
        resid = resid * (mask / mask.sum(1, keepdim=True).clamp_min(1))[..., None]
        rows.append(torch.einsum("bta,btc->bac", resid, h @ S_H).reshape(len(h), -1).cpu())
    return torch.cat(rows).numpy()


def _vocab_sketch(V: int, buckets: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Count sketch of the vocabulary: bucket and sign of every token id (seeded)."""
    from infdist_core.data.seeding import generator

    g = generator(seed, "head-count-sketch", V, buckets)
    return torch.randint(buckets, (V,), generator=g), torch.randint(2, (V,), generator=g).float() * 2 - 1


@torch.no_grad()
def truncated_head_gradients(model, samples: list[TokenizedSample], pad_id: int, n_blocks: int, dim: int, seed: int,
                             buckets: int = 0, batch_size: int = 8) -> np.ndarray:
    """Projected LM-head gradient of each sample's mean label-token loss under the model cut after
    its first ``n_blocks`` blocks (final norm and head kept), shape (n, <=dim).

    For the head ``z = W h`` the gradient is ``1/|labels| sum_t (softmax(z_t) - onehot(y_t)) h_t'``
    (V x H), so no backward pass is needed: one batched forward through ``n_blocks`` blocks, the
    logits at label positions, and one matmul per sample. With ``buckets`` > 0 the vocabulary rows
    are count-sketched (``S (p - y)`` with a signed bucket per token id, ``E[S'S] = I``) before the
    matmul: a (buckets x H) matrix instead of V x H, unbiased for inner products.
    """
    from infdist_core.model.jvp import truncated_backbone

    device = next(model.parameters()).device
    n_layers = len(decoder_layers(model))
    sub = model.model if n_blocks >= n_layers else truncated_backbone(model, n_blocks)
    W = model.get_output_embeddings().weight.float()  # once, not per sample (a copy when the model is not fp32)
    V, H = W.shape
    rows_in = (buckets or V) * H
    proj = HadamardProjector(rows_in, min(dim, rows_in), seed=seed, device=device) if rows_in > dim else None
    if buckets:
        bucket, sign = (t.to(device) for t in _vocab_sketch(V, buckets, seed))
    out = np.zeros((len(samples), proj.out_dim if proj else rows_in), np.float32)
    for lo in range(0, len(samples), batch_size):
        b = {k: v.to(device) for k, v in pad_batch(samples[lo : lo + batch_size], pad_id).items()}
        hs = sub(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state[:, :-1]
        for i, (h, labels) in enumerate(zip(hs, b["labels"][:, 1:])):
            keep = labels != IGNORE
            if not keep.any():
                continue  # zero row: flagged like a zero gradient
            h, y = h[keep].float(), labels[keep]
            resid = torch.softmax(F.linear(h, W), dim=-1)  # (T, V)
            resid[torch.arange(len(y), device=device), y] -= 1.0
            if buckets:
                resid = torch.zeros(len(y), buckets, device=device).index_add_(1, bucket, resid * sign)
            grad = resid.T @ h / len(y)  # (V or buckets, H)
            out[lo + i] = (proj.project_parts([grad], None) if proj else grad.reshape(-1)).cpu().numpy()
    return out


def split_backbone(model, blocks: int):
    """(prefix, suffix) of the model's backbone around its last ``blocks`` blocks, sharing
    parameters: the first L-B blocks without the final norm (a no-grad batched forward), and the
    last B blocks with the final norm, fed the prefix's hidden states as ``inputs_embeds``."""
    from infdist_core.model.jvp import truncated_backbone

    n_layers = len(decoder_layers(model))
    prefix = truncated_backbone(model, n_layers - blocks)
    prefix.norm = torch.nn.Identity()
    suffix = truncated_backbone(model, n_layers)
    suffix.layers = torch.nn.ModuleList(list(model.model.layers[n_layers - blocks:]))
    suffix.config.num_hidden_layers = blocks
    return prefix, suffix


def _hidden_states(model, samples: list[TokenizedSample], pad_id: int, blocks: int, batch_size: int):
    """For each sample (in order): its label-shifted final hidden states ``h[:-1]`` (with the graph
    from the last ``blocks`` blocks when blocks > 0) and its batch. With ``batch_size`` > 1 the
    blocks before those run batched without a graph, the last ones one sample at a time (a
    per-sample gradient needs its own backward); equal to the one-sample path up to rounding."""
    device = next(model.parameters()).device
    n_layers = len(decoder_layers(model))
    if batch_size <= 1 or not 0 < blocks < n_layers:
        for s in samples:
            b = {k: v.to(device) for k, v in pad_batch([s], pad_id).items()}
            with torch.set_grad_enabled(bool(blocks)):
                h = model.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state[0, :-1]
            yield h, b  # outside the grad-mode context: a generator would carry it into the consumer
        return
    prefix, suffix = split_backbone(model, blocks)
    for lo in range(0, len(samples), batch_size):
        chunk = samples[lo : lo + batch_size]
        pb = {k: v.to(device) for k, v in pad_batch(chunk, pad_id).items()}
        with torch.no_grad():
            hp = prefix(input_ids=pb["input_ids"], attention_mask=pb["attention_mask"], use_cache=False).last_hidden_state
        for i, s in enumerate(chunk):
            L = len(s.input_ids)
            b = {k: v[i : i + 1, :L] for k, v in pb.items()}
            h = suffix(inputs_embeds=hp[i : i + 1, :L], attention_mask=b["attention_mask"],
                       use_cache=False).last_hidden_state[0, :-1]  # (no cache: its layer indices are the model's)
            yield h, b


class PartialGradients:
    """Projected loss gradients of one sample w.r.t. the last ``blocks`` blocks (+ final norm)
    and/or the LM head, from its final hidden states: the per-sample step of
    ``partial_gradients``, shared with the landmark-gradient pass (``gradients_with_proxy``), which
    hands it hidden states its own forward computed, so both give the same rows bit for bit.

    The head enters the graph as a detached copy of its weight, so a tied input embedding is not
    differentiated (that would need the full backward); the loss is the mean label-token loss
    (``gradients.per_sample_losses``').
    """

    def __init__(self, model, blocks: int, head: bool, dim: int, seed: int):
        device = next(model.parameters()).device
        self.W, self.head, self.blocks = model.get_output_embeddings().weight, head, blocks
        self.block_params = []
        if blocks:
            pattern = block_pattern(model, f"last:{blocks}") + r"|^model\.norm\."
            self.block_params = [p for _, p in select_parameters(model, pattern)]
        sizes = ([sum(p.numel() for p in self.block_params)] if blocks else []) + ([self.W.numel()] if head else [])
        self.projectors = [HadamardProjector(m, min(dim, m), seed=seed, device=device) for m in sizes]

    def empty(self, n: int) -> list[np.ndarray]:
        """Zero rows for ``n`` samples, one array per part in the order [blocks, head]."""
        return [np.zeros((n, pr.out_dim), np.float32) for pr in self.projectors]

    def rows(self, h: torch.Tensor, labels: torch.Tensor, retain_graph: bool = False) -> list[np.ndarray] | None:
        """The projected parts for hidden states ``h`` (T, H; with their graph when ``blocks`` > 0)
        and the shifted ``labels`` (T,); None when no label token is left (a zero row)."""
        keep = labels != IGNORE
        if not keep.any():
            return None
        W_leaf = self.W.detach().requires_grad_(self.head)
        loss = F.cross_entropy(F.linear(h[keep], W_leaf).float(), labels[keep])
        wrt = self.block_params + ([W_leaf] if self.head else [])
        grads = torch.autograd.grad(loss, wrt, allow_unused=True, retain_graph=retain_graph)
        grads = [torch.zeros_like(p) if g is None else g.detach() for g, p in zip(grads, wrt)]
        groups = ([grads[: len(self.block_params)]] if self.blocks else []) + ([grads[-1:]] if self.head else [])
        return [pr.project_parts(g, None).cpu().numpy() for pr, g in zip(self.projectors, groups)]


def partial_gradients(model, samples: list[TokenizedSample], pad_id: int, blocks: int, head: bool, dim: int,
                      seed: int, batch_size: int = 1) -> list[np.ndarray]:
    """Projected loss gradients w.r.t. the last ``blocks`` blocks (+ final norm) and/or the LM head,
    from one forward pass and one backward pass that stops at the earliest of them
    (``PartialGradients``). Returns one (n, <=dim) array per part, in the order [blocks, head].
    ``batch_size`` > 1 batches the forward through the earlier blocks (``_hidden_states``).
    """
    pg = PartialGradients(model, blocks, head, dim, seed)
    out = pg.empty(len(samples))
    for j, (h, b) in enumerate(_hidden_states(model, samples, pad_id, blocks, batch_size)):
        parts = pg.rows(h, b["labels"][0, 1:])
        for o, part in zip(out, parts or []):
            o[j] = part
    return out


def _last_blocks(nums: list[int], n_layers: int) -> int:
    """Blocks of ``grad-last[:B]`` (default 1), at most the model's."""
    return min(nums[0] if nums else 1, n_layers)


@dataclass(frozen=True)
class _Call:
    """What a kind's computation gets besides the model and samples."""

    pad_id: int
    nums: list[int]
    dim: int
    seed: int
    batch_size: int
    grad_batch: int
    jvp: tuple[int, int]
    n_layers: int


def _jvp(output: str, position: str = "first", combine: str = "mean"):
    def compute(model, samples, c: _Call) -> np.ndarray:
        blocks = c.nums[0] if c.nums else c.jvp[0]
        tangents = c.nums[1] if len(c.nums) > 1 else c.jvp[1]
        out = jvp_embeddings(model, samples, c.pad_id, n_blocks=min(blocks, c.n_layers), n_tangents=tangents,
                             output=output, seed=c.seed, batch_size=c.batch_size, position=position,
                             combine=combine).numpy()
        return RademacherProjector(out.shape[1], c.dim, seed=c.seed)(out).numpy() if out.shape[1] > c.dim else out
    return compute


def _grad_head(model, samples, c: _Call) -> np.ndarray:
    if c.nums:  # the truncated model's head gradient, closed form
        return truncated_head_gradients(model, samples, c.pad_id, min(c.nums[0], c.n_layers), c.dim, c.seed,
                                        buckets=c.nums[1] if len(c.nums) > 1 else 0, batch_size=c.batch_size)
    return partial_gradients(model, samples, c.pad_id, 0, True, c.dim, c.seed)[0]


COMPUTE = {
    "jvp-hidden": _jvp("hidden"),
    "jvp-logits": _jvp("logits"),
    "jvp-hidden-last": _jvp("hidden", position="last"),
    "jvp-hidden-concat": _jvp("hidden", combine="concat"),
    "rds": lambda model, samples, c: rds_embeddings(model, samples, c.pad_id, c.batch_size),
    "grad-last": lambda model, samples, c: partial_gradients(model, samples, c.pad_id, _last_blocks(c.nums, c.n_layers),
                                                             False, c.dim, c.seed, c.grad_batch)[0],
    "grad-head": _grad_head,
    "grad-head-sketch": lambda model, samples, c: head_gradient_sketch(model, samples, c.pad_id,
                                                                       width=c.nums[0] if c.nums else 64, seed=c.seed),
}
"""kind -> computation ``(model, samples, _Call) -> (n, e) rows``; the kinds are ``proxy_specs.KINDS``."""
assert COMPUTE.keys() == KINDS.keys(), "every registered proxy kind needs a computation here, and no other"


def compute_proxy(model, samples: list[TokenizedSample], pad_id: int, spec: str, dim: int = 4096, seed: int = 0,
                  batch_size: int = BATCH_SIZE, grad_batch: int = 1, jvp: tuple[int, int] = (4, 2)) -> ProxyEmbedding:
    """Embeddings of ``samples`` for the proxy ``spec`` (see module docstring). ``batch_size``:
    samples per forward of the batched kinds; ``grad_batch``: of the blocks before ``grad-last``'s
    (1: one sample per pass, rows independent of the batch, see ``per_sample``); ``jvp``: blocks
    and tangents of a ``jvp-*`` part given without them (``jvp_blocks``, ``jvp_tangents``)."""
    if not samples:
        raise ValueError("no samples to embed")
    parsed = ProxySpec.parse(spec)
    t0 = time.perf_counter()
    n_layers = len(decoder_layers(model))
    rows: dict[int, np.ndarray] = {}
    if parsed.fused:  # grad-last + grad-head: one shared forward and one partial backward
        blocks, head, positions = _partial_layout(parsed, n_layers)
        rows.update(zip(positions, partial_gradients(model, samples, pad_id, blocks, head, dim, seed, grad_batch)))
    for i, part in enumerate(parsed.parts):
        if i not in rows:
            rows[i] = COMPUTE[part.kind](model, samples, _Call(pad_id, list(part.params), dim, seed, batch_size, grad_batch,
                                                               jvp, n_layers))
    return _assemble(parsed, rows, (time.perf_counter() - t0) / len(samples))


def _assemble(parsed: ProxySpec, rows: dict[int, np.ndarray], seconds_per_sample: float) -> ProxyEmbedding:
    """The embedding from each part's rows (keyed by part position): every part L2-normalised,
    then the concatenation."""
    units = [unit_rows(rows[i]).astype(np.float32) for i in range(len(parsed.parts))]
    vec = unit_rows(np.concatenate(units, axis=1)).astype(np.float32) if len(units) > 1 else units[0]
    return ProxyEmbedding(str(parsed), vec, seconds_per_sample, tuple(u.shape[1] for u in units))


def _partial_layout(parsed: ProxySpec, n_layers: int) -> tuple[int, bool, list[int]]:
    """For a ``partial_backward`` spec: its blocks, whether it has the head, and the part position
    of each of ``PartialGradients``' outputs (in its order [blocks, head])."""
    if parsed.fused:
        i, j = parsed.fused
        return _last_blocks(list(parsed.parts[i].params), n_layers), True, [i, j]
    if parsed.kinds[0] == "grad-last":
        return _last_blocks(list(parsed.parts[0].params), n_layers), False, [0]
    return 0, True, [0]


def gradients_with_proxy(model, samples: list[TokenizedSample], params: list[torch.nn.Parameter],
                         projector: HadamardProjector, pad_id: int, spec: str, dim: int, seed: int,
                         moments: AdamMoments | None = None, progress=None) -> tuple[GradientMatrix, ProxyEmbedding]:
    """``gradients.sample_gradients`` of ``samples`` (one at a time) and, from the same forward,
    their rows of ``spec``, a proxy of one partial backward (``ProxySpec.partial_backward``): the
    rows ``compute_proxy`` gives one sample at a time, bit for bit on one device, for the price
    of the partial backward and its projections (the forward, more than half of such a proxy's
    cost, is the gradient's). The proxy's ``seconds_per_sample`` counts the shared forward too:
    what ``compute_proxy`` would spend, so an embedding choice that weighs costs sees the same
    figure whichever pass computed the rows."""
    parsed = ProxySpec.parse(spec)
    if not parsed.partial_backward:
        raise ValueError(f"proxy {spec!r} is not one forward and one partial backward (grad-last, grad-head or both)")
    blocks, head, positions = _partial_layout(parsed, len(decoder_layers(model)))
    pg = PartialGradients(model, blocks, head, dim, seed)
    out = pg.empty(len(samples))
    seconds = [0.0]

    def tap(j: int, h: torch.Tensor, batch: dict, forward_seconds: float) -> None:
        t0 = time.perf_counter()
        parts = pg.rows(h if blocks else h.detach(), batch["labels"][0, 1:], retain_graph=bool(blocks))
        for o, part in zip(out, parts or []):
            o[j] = part
        seconds[0] += forward_seconds + time.perf_counter() - t0

    g = sample_gradients(model, samples, params, projector, pad_id, moments=moments, progress=progress, tap=tap)
    return g, _assemble(parsed, dict(zip(positions, out)), seconds[0] / max(len(samples), 1))
