"""Selection cost, side by side (the paper's Table 1 cost column and Figure 1).

In one process, on one pool (the recovery protocol of ``recovery_data``: the first ``--n`` usable
ShareGPT first exchanges at ``--tokens`` tokens, the 8 GSM8K CoT targets, SmolLM2-135M-Instruct),
every method's embedding + selection, timed stage by stage:

- RDS+: position-weighted mean of the last hidden states for the pool and the targets, per-target
  round-robin on cosine similarity.
- mid-PPL: the pool's per-sample loss, the middle k.
- Grad (LESS-like): a projected full gradient per pool sample (seconds per sample from the
  true-gradient pass ``recovery_data`` caches: the same computation), round-robin.
- InfDist as shipped (``embedding: auto``): landmark gradients (with the landmarks' rows of the
  partial-backward candidate from the same forwards, ``pipeline.compute_gradients_and_proxy``, as
  the pipeline computes them), ``pipeline.embed_pool`` (the other candidates on the landmarks,
  the choice, the rest of the pool), the kernel fit, the target gradients and embeddings (the
  same way), ``pipeline.score_targets`` and the round-robin; and InfDist with each proxy option
  pinned (``--options``): the same landmarks and target side with that proxy over the pool (the
  landmark pass as shipped, so an option's landmark seconds include the shipped proxy's partial
  backward).

Each InfDist option's recovery is measured with the pipeline's own policy
(``recovery_data.shipped_recovery``): Spearman of the propagated vs true mean-target influence on
the non-landmarks at ``--landmarks`` landmarks, mean of ``--draws`` landmark draws.

FLOPs follow the paper's convention (Sec. 5.2, after Kaplan et al.): a forward pass costs
2 x parameters x tokens, a backward pass twice that, a JVP twice the partial forward; the LM head
counts at the positions where it is applied (all tokens for the loss, label tokens for the
proxies); projections, softmax and the kernel regression are not counted (the paper does not).

The warm-up is timed and reported apart, as the paper excludes it (Sec. 6). ``at_paper_ratio``
re-weights the measured per-sample costs to the paper's landmark share (4,096 of 200,000):
an extrapolation from this run's figures, not a measurement at that size. With
``--quality`` (the JSON file ``bench_quality.py`` writes), the quality-vs-cost table of Figure 1 is
printed too. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

import numpy as np
import torch

from infdist_core import pipeline, proxy_specs
from infdist_core.config import PROXY_AUTO, SelectionConfig
from infdist_core.maths import baselines
from infdist_core.maths.landmarks import DirectTerm
from infdist_core.maths.selection import round_robin
from infdist_core.model import proxies
from infdist_core.model.evaluation import sample_losses
from infdist_core.model.modeling import decoder_layers

import recovery_data
from recovery_data import shipped_recovery

OPTIONS = ["grad-last:2+grad-head", "grad-last:2+grad-head@8", "grad-head", "grad-head:30", "grad-head:30:1024",
           "grad-head:16", "grad-head:16:1024", "grad-head:8:1024", "jvp-hidden:4:2"]
PAPER_LANDMARK_SHARE = 4096 / 200_000


@dataclass
class ModelShape:
    block: int  # parameters per transformer block
    layers: int
    vocab: int
    hidden: int

    @property
    def head(self) -> int:
        return self.vocab * self.hidden

    @classmethod
    def of(cls, model) -> "ModelShape":
        blocks = decoder_layers(model)
        V, H = model.get_output_embeddings().weight.shape
        return cls(sum(p.numel() for p in blocks[0].parameters()), len(blocks), V, H)


def proxy_flops(spec: str, m: ModelShape, tokens: float, labels: float) -> float:
    """FLOPs of one sample's proxy embedding (the paper's convention, see the module docstring)."""
    parts = [(q.kind, list(q.params)) for q in proxy_specs.ProxySpec.parse(spec).parts]
    full_pass = [k for k, nums in parts if k in ("grad-last", "rds") or (k == "grad-head" and not nums)]
    total = 2 * m.layers * m.block * tokens if full_pass else 0.0  # one forward through all blocks, shared
    if any(k != "rds" for k in full_pass):
        total += 2 * m.head * labels  # logits at the label positions, shared
    for kind, nums in parts:
        if kind == "grad-last":  # backward through the head to h, then through the last B blocks
            total += 2 * m.head * labels + 4 * min(nums[0] if nums else 1, m.layers) * m.block * tokens
        elif kind == "grad-head" and not nums:  # the head's weight gradient
            total += 2 * m.head * labels
        elif kind == "grad-head":  # truncated forward, logits, weight gradient (exact or count-sketched)
            buckets = nums[1] if len(nums) > 1 else 0
            total += 2 * min(nums[0], m.layers) * m.block * tokens + 2 * m.head * labels
            total += (m.vocab * labels + 2 * buckets * m.hidden * labels) if buckets else 2 * m.head * labels
        elif kind.startswith("jvp"):  # a JVP costs twice the partial forward (Cobb et al., as the paper)
            total += 2 * (2 * min(nums[0] if nums else 4, m.layers) * m.block * tokens)
        elif kind == "grad-head-sketch":
            total += 2 * m.layers * m.block * tokens + 2 * m.head * tokens
    return total


def proxy_anatomy(model, samples, pad: int, blocks: int = 2, dim: int = 4096) -> dict[str, float]:
    """Seconds per sample of each part of the shipped fused proxy ``grad-last:B+grad-head`` as
    ``proxies.partial_gradients`` runs it (one sample at a time): the forward through every
    block, the head's logits and loss at the label positions, the backward through the head and
    the last B blocks, and the two Hadamard projections."""
    import torch.nn.functional as F

    from infdist_core.maths.projection import HadamardProjector
    from infdist_core.model.modeling import block_pattern, select_parameters
    from infdist_core.model.tokenization import IGNORE, pad_batch

    W = model.get_output_embeddings().weight
    bp = [q for _, q in select_parameters(model, block_pattern(model, f"last:{blocks}") + r"|^model\.norm\.")]
    pb = HadamardProjector(sum(q.numel() for q in bp), dim, seed=0)
    ph = HadamardProjector(W.numel(), dim, seed=0)
    parts = dict.fromkeys(("forward (all blocks)", "head logits + loss", "backward (head + last blocks)",
                           "projection (blocks)", "projection (head)"), 0.0)
    names = list(parts)
    for s in samples:
        b = pad_batch([s], pad)
        t = [time.perf_counter()]
        h = model.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state[0, :-1]
        t.append(time.perf_counter())
        labels = b["labels"][0, 1:]
        keep = labels != IGNORE
        W_leaf = W.detach().requires_grad_(True)
        loss = F.cross_entropy(F.linear(h[keep], W_leaf).float(), labels[keep])
        t.append(time.perf_counter())
        grads = torch.autograd.grad(loss, bp + [W_leaf])
        t.append(time.perf_counter())
        pb.project_parts(list(grads[:-1]), None)
        t.append(time.perf_counter())
        ph.project_parts([grads[-1]], None)
        t.append(time.perf_counter())
        for name, a, z in zip(names, t, t[1:]):
            parts[name] += z - a
    return {k: v / len(samples) for k, v in parts.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    recovery_data.add_arguments(ap)
    ap.add_argument("--landmarks", type=int, default=SelectionConfig().pool.n_landmarks)
    ap.add_argument("--k", type=int, default=SelectionConfig().selection.k)
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--options", default=",".join(OPTIONS))
    ap.add_argument("--quality", default="", help="bench_quality.py's JSON (its last line, saved to a file)")
    ap.add_argument("--no-warmup", action="store_true")
    ap.add_argument("--anatomy", type=int, default=48, help="samples for the per-part timing of the shipped proxy")
    ap.add_argument("--check-landmarks", type=int, default=256,
                    help="also report the shipped policy's recovery at this many landmarks (the no-regression figure)")
    args = ap.parse_args()
    torch.set_grad_enabled(True)
    data = recovery_data.load(recovery_data.setting(args))
    model, pad, pool, targets, G, T = data.model, data.tokenizer.pad_token_id, data.pool, data.targets, data.G, data.T
    n, t = len(pool), len(targets)
    cfg = SelectionConfig.of(pool_size=n, max_length=args.tokens, n_landmarks=args.landmarks, k=args.k)
    shape = ModelShape.of(model)
    tokens = np.array([len(s.input_ids) for s in pool], float)
    labels = np.array([s.n_label_tokens for s in pool], float)
    T_tok, T_lab = float(tokens.mean()), float(labels.mean())
    full = 2 * (shape.layers * shape.block + shape.head)  # forward FLOPs per token, head included
    print(f"pool n={n}, {t} targets, {T_tok:.0f} tokens ({T_lab:.0f} label tokens) per sample on average; "
          f"{shape.layers} blocks x {shape.block / 1e6:.2f}M + head {shape.head / 1e6:.1f}M parameters", flush=True)
    rows: list[dict] = []

    def timed(fn):
        t0 = time.perf_counter()
        out = fn()
        return out, time.perf_counter() - t0

    # ---- RDS+
    E_rds, s_rds_pool = timed(lambda: proxies.rds_embeddings(model, pool, pad))
    E_rds_t, s_rds_t = timed(lambda: proxies.rds_embeddings(model, targets, pad))
    _, s_rds_sel = timed(lambda: baselines.similarity_round_robin(E_rds, E_rds_t, cfg.selection.k, cfg.selection.seed))
    fl_rds = 2 * shape.layers * shape.block * (tokens.sum() + T_tok * t)
    rows.append({"method": "RDS+", "option": "rds", "stages": {"pool": s_rds_pool, "targets": s_rds_t, "selection": s_rds_sel},
                 "flops": fl_rds})
    print(f"RDS+: pool {s_rds_pool:.1f} s ({s_rds_pool / n:.3f} s/sample)", flush=True)
    # ---- mid-PPL
    losses, s_ppl = timed(lambda: sample_losses(model, pool, pad))
    _, s_ppl_sel = timed(lambda: baselines.mid_perplexity(losses, cfg.selection.k))
    rows.append({"method": "mid-PPL", "option": "loss", "stages": {"pool": s_ppl, "selection": s_ppl_sel},
                 "flops": 2 * shape.layers * shape.block * tokens.sum() + 2 * shape.head * labels.sum()})  # head at labels
    print(f"mid-PPL: pool {s_ppl:.1f} s ({s_ppl / n:.3f} s/sample)", flush=True)
    # ---- Grad (LESS-like): the true-gradient pass is this computation
    _, s_grad_sel = timed(lambda: baselines.similarity_round_robin(G, T, cfg.selection.k, cfg.selection.seed))
    rows.append({"method": "Grad", "option": "full gradient", "stages": {"pool": data.seconds_per_gradient * n,
                                                                          "targets": data.seconds_per_gradient * t,
                                                                          "selection": s_grad_sel},
                 "flops": 3 * full * (tokens.sum() + T_tok * t), "note": "pool seconds from the cached true-gradient pass"})
    # ---- InfDist: landmark gradients (seed 0's landmarks) and the target side's gradients
    lm = pipeline.landmark_indices([s.id for s in pool], cfg)
    shared = pipeline.gradient_pass_proxy(cfg)  # its landmark rows come from the gradients' forwards, as shipped
    if shared:  # and the targets' rows of it (the direct term), as the target side computes them
        (GL, pe_lm), s_lm = timed(lambda: pipeline.compute_gradients_and_proxy(model, [pool[i] for i in lm], cfg, pad,
                                                                              shared))
        (GT, pe_tg), s_tg = timed(lambda: pipeline.compute_gradients_and_proxy(model, targets, cfg, pad, shared))
        known = pipeline.known_rows(pe_lm, lm, n)
    else:
        GL, s_lm = timed(lambda: pipeline.compute_gradients(model, [pool[i] for i in lm], cfg, pad))
        GT, s_tg = timed(lambda: pipeline.compute_gradients(model, targets, cfg, pad))
        known = {}
    GL, GT = GL.vectors.astype(np.float64), GT.vectors.astype(np.float64)
    fl_lm = 3 * full * tokens[lm].sum()
    if shared:  # the proxy's rows of the landmarks: its pass without the forward through the blocks
        fl_lm += sum(proxy_flops(shared, shape, tokens[i], labels[i]) - 2 * shape.layers * shape.block * tokens[i]
                     for i in lm)
    fl_tg = 3 * full * T_tok * t
    print(f"landmark gradients: {s_lm:.1f} s for {len(lm)} ({s_lm / len(lm):.3f} s/sample)", flush=True)

    def infdist_row(option: str, spec: str, E: np.ndarray, widths, s_pool: float, fl_pool: float) -> dict:
        """InfDist with ``spec`` over the pool (``option``: auto, or the spec with an ``@batch``):
        the target side and selection timed here, the landmarks and pool as measured before."""
        batch = int(option.partition("@")[2] or 1)
        c = cfg.with_(embedding=spec, batch_size=batch) if option != PROXY_AUTO else cfg
        slices = pipeline.embedding_slices(spec, widths)
        if slices and spec == shared and batch == 1:  # computed with the target gradients
            te, s_te = pe_tg, 0.0
        else:
            (te, s_te) = timed(lambda: pipeline.embed_samples(model, targets, spec, c, pad)) if slices else (None, 0.0)
        direct = DirectTerm(te.vectors.astype(np.float64), slices) if slices else None
        (reg, s_krr) = timed(lambda: pipeline.fit_landmark_regression(E, lm, GL, c))
        ((scores, setting, _), s_score) = timed(lambda: pipeline.score_targets(E, lm, GL, GT, reg, c, direct))
        _, s_sel = timed(lambda: round_robin(scores.scores, c.selection.k, seed=c.selection.seed))
        fl_te = proxy_flops(spec, shape, T_tok, T_lab) * t if slices else 0.0
        if slices and spec == shared and batch == 1:
            fl_te -= 2 * shape.layers * shape.block * T_tok * t  # its forward is the target gradients'
        return {"method": "InfDist", "option": option, "spec": spec,
                "stages": {"landmark_gradients": s_lm, "pool": s_pool, "targets": s_tg + s_te,
                           "selection": s_krr + s_score + s_sel},
                "flops": fl_lm + fl_pool + fl_tg + fl_te, "direct": setting.direct, "direct_term": direct}

    # ---- InfDist as shipped: embed_pool decides the proxy on the landmarks, then embeds the rest
    choice, s_auto = timed(lambda: pipeline.embed_pool(model, pool, lm, GL, cfg, pad, log_fn=lambda m: print("  " + m),
                                                       known=known))
    emb = {choice.spec: choice.vectors.astype(np.float64)}
    widths = {choice.spec: choice.widths[choice.spec]}
    cost = {r["embedding"]: r["seconds_per_sample"] for r in choice.candidates}
    fl_auto = sum(proxy_flops(s, shape, float(tokens[lm].mean()), float(labels[lm].mean())) * len(lm)
                  for s in choice.landmark_embeddings if s != shared) + \
        proxy_flops(choice.spec, shape, T_tok, T_lab) * (n - len(lm))
    default = infdist_row(PROXY_AUTO, choice.spec, emb[choice.spec], widths[choice.spec], s_auto, fl_auto)
    rows.append(default)
    directs = {choice.spec: default["direct_term"]} if default["direct_term"] is not None else {}
    print(f"InfDist (auto -> {choice.spec}): pool embeddings {s_auto:.1f} s", flush=True)
    # ---- every option pinned
    for option in [o for o in args.options.split(",") if o]:
        spec, _, batch = option.partition("@")  # spec@B: the gradient passes in batches of B (batch_size)
        c = cfg.with_(batch_size=int(batch or 1))
        if option == choice.spec:
            E, s_pool, w = emb[spec], choice.seconds_per_sample * n, widths[spec]
        else:
            pe, s_pool = timed(lambda: pipeline.embed_samples(model, pool, spec, c, pad))
            E, w = pe.vectors.astype(np.float64), pe.widths
        emb[option], widths[option] = E, w
        cost[option] = s_pool / n
        row = infdist_row(option, spec, E, w, s_pool, proxy_flops(spec, shape, T_tok, T_lab) * n)
        if row["direct_term"] is not None:  # the targets' embeddings infdist_row computed, for the recovery
            directs[option] = row["direct_term"]
        row["choices"], row["spearman"] = shipped_recovery(emb, widths, cost, directs, G, T, args.landmarks, args.draws,
                                                            embedding=option)
        rows.append(row)
        print(f"  {option}: {s_pool / n:.3f} s/sample, Spearman@{args.landmarks} {row['spearman']:.3f} "
              f"({', '.join(sorted(set(row['choices'])))})", flush=True)
    missing = [c for c in cfg.data.embedding_candidates if c not in emb]
    for spec in missing:  # the auto emulation needs every candidate's rows
        pe = pipeline.embed_samples(model, pool, spec, cfg, pad)
        emb[spec], widths[spec] = pe.vectors.astype(np.float64), pe.widths
    default["choices"], default["spearman"] = shipped_recovery(emb, widths, cost, directs, G, T, args.landmarks,
                                                               args.draws)
    check = shipped_recovery(emb, widths, cost, directs, G, T, args.check_landmarks, args.draws) \
        if args.check_landmarks < n else ([], float("nan"))
    # ---- warm-up (the paper leaves it out of its cost)
    s_warm = float("nan")
    if not args.no_warmup:
        import copy

        wcfg = cfg.with_(pool_size=len(data.spare))
        _, s_warm = timed(lambda: pipeline.warm_up(copy.deepcopy(model), data.spare, wcfg, pad))
    # ---- what the shipped proxy's time goes to
    anatomy = proxy_anatomy(model, pool[: args.anatomy], pad)
    # ---- report
    rds = rows[0]
    rds_s, rds_f = sum(rds["stages"].values()), rds["flops"]
    print(f"\n{'method':8} {'option':24} {'total s':>8} {'s/sample':>8} {'xRDS+ s':>8} {'TFLOPs':>8} {'xRDS+ fl':>8} "
          f"{'rho@' + str(args.landmarks):>7}  stages (s)")
    for r in rows:
        r.pop("direct_term", None)
        tot = sum(r["stages"].values())
        r.update(seconds=tot, over_rds_seconds=tot / rds_s, over_rds_flops=r["flops"] / rds_f)
        rho = r.get("spearman", float("nan"))
        print(f"{r['method']:8} {r['option']:24} {tot:>8.1f} {tot / n:>8.3f} {tot / rds_s:>8.2f} {r['flops'] / 1e12:>8.2f} "
              f"{r['flops'] / rds_f:>8.2f} {rho:>7.3f}  " + ", ".join(f"{k} {v:.1f}" for k, v in r["stages"].items()))
    print(f"warm-up (not included, as in the paper): {s_warm:.1f} s = {s_warm / rds_s:.2f}x RDS+")
    print(f"the shipped proxy grad-last:2+grad-head, s/sample by part ({args.anatomy} samples, one at a time; "
          f"RDS+ forward {rds['stages']['pool'] / n:.3f} batched): " + ", ".join(f"{k} {v:.3f}" for k, v in anatomy.items()))
    # at the paper's landmark share: per pool sample, proxy + share x landmark gradient (+ targets, selection ~0)
    per_lm = s_lm / len(lm)
    rds_per = rds["stages"]["pool"] / n

    def at_paper(r):
        return (r["stages"]["pool"] / n + PAPER_LANDMARK_SHARE * per_lm) / rds_per

    print(f"InfDist as shipped: recovery Spearman {default['spearman']:.3f} at {args.landmarks} landmarks, "
          f"{check[1]:.3f} at {args.check_landmarks} ({', '.join(sorted(set(check[0])))})")
    options = [r for r in rows if r["method"] == "InfDist" and r["option"] != PROXY_AUTO]
    good = [r for r in options if r.get("spearman", -1) >= 0.5]
    best = min(good, key=lambda r: r["seconds"]) if good else None
    print(f"landmark gradients alone: {s_lm:.1f} s = {s_lm / rds_s:.2f}x RDS+'s total; at the paper's landmark share "
          f"({PAPER_LANDMARK_SHARE:.1%}) InfDist as shipped would cost {at_paper(default):.2f}x RDS+ (extrapolated)")
    quality = {}
    if args.quality:
        q = json.loads(open(args.quality).read().strip().splitlines()[-1])
        quality = q.get("mean_heldout_loss_by_method", {})
        if quality:
            print("\nFigure 1 (mean held-out loss over tasks and seeds, lower is better) vs selection seconds:")
            for name, key in (("InfDist", PROXY_AUTO), ("RDS+", "rds"), ("mid-PPL", "loss"), ("Grad", "full gradient")):
                r = next(x for x in rows if x["option"] == key)
                qname = {"InfDist": "infdist", "RDS+": "rds", "mid-PPL": "mid_ppl", "Grad": "grad"}[name]
                if qname in quality:
                    print(f"  {name:8} {r['seconds']:>8.1f} s  {quality[qname]:.4f}")
    summary = {
        "n": n, "landmarks": len(lm), "k": cfg.selection.k, "draws": args.draws, "default_embedding": choice.spec,
        "rds_seconds": rds_s, "infdist_seconds": default["seconds"],
        "infdist_over_rds_seconds": default["seconds"] / rds_s, "infdist_over_rds_flops": default["flops"] / rds_f,
        "spearman_default": default["spearman"],
        "best_option": best["option"] if best else None,
        "best_option_over_rds_seconds": best["seconds"] / rds_s if best else None,
        "best_option_spearman": best["spearman"] if best else None,
        "cheapest_option": min(options, key=lambda r: r["seconds"])["option"] if options else None,
        "landmark_gradients_over_rds_seconds": s_lm / rds_s,
        f"spearman_default_l{args.check_landmarks}": check[1],
        "proxy_anatomy_seconds_per_sample": {k: round(v, 4) for k, v in anatomy.items()},
        "warmup_over_rds_seconds": s_warm / rds_s,
        "infdist_over_rds_seconds_at_paper_ratio": at_paper(default),
        "options": {r["option"]: {"over_rds_seconds": round(r["seconds"] / rds_s, 3),
                                  "over_rds_flops": round(r["flops"] / rds_f, 3),
                                  "pool_seconds_per_sample": round(r["stages"]["pool"] / n, 4),
                                  "spearman": round(r["spearman"], 4),
                                  "at_paper_ratio": round(at_paper(r), 3)} for r in options},
        "seconds_per_sample": {r["option"] if r["method"] == "InfDist" else r["method"]: round(r["stages"]["pool"] / n, 4)
                               for r in rows},
    }
    if quality:
        summary["quality"] = quality
    clean = {k: (None if v != v else round(v, 4)) if isinstance(v, float) else v for k, v in summary.items()}
    print(json.dumps(clean))


if __name__ == "__main__":
    main()
