"""Landmark approximation quality on the default model and pool.

Protocol: SmolLM2-135M-Instruct, the first ``--n`` ShareGPT
first exchanges at ``--tokens`` tokens, the 8 GSM8K CoT exemplars as targets; true per-sample
gradients over all parameters, Hadamard-projected to ``--dim`` and normalised; p_i = mean over
targets of <g_i, g_t>. For l random landmarks (``--draws`` draws), p is propagated by RBF kernel
ridge regression on each proxy embedding (median-heuristic bandwidth times a scale, damping 0.01,
centred) and compared with the true p on the non-landmarks (Spearman), plus the paper's Fig. 7
gradient-recovery cosine. Gradient proxies are also run with the direct term (``+direct``: the
regression's linear part on each gradient part's cosine to the same part of the targets',
``landmarks.DirectTerm``; fitted per target, predictions averaged). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy.stats import spearmanr

from infdist_core import proxy_specs
from infdist_core.config import SelectionConfig
from infdist_core.maths.landmarks import DirectTerm, krr_fit, part_slices
from infdist_core.maths.preconditioning import moments_from_optimizer
from infdist_core.maths.projection import HadamardProjector
from infdist_core.model import proxies
from infdist_core.model.gradients import sample_gradients
from infdist_core.model.modeling import select_parameters
from infdist_core.pipeline import warm_up

import recovery_data
from recovery_data import shipped_recovery

CANDIDATES = ["jvp-hidden:4:2", "jvp-logits:4:2", "rds", "grad-last:2", "grad-head", "grad-last:2+grad-head",
              "grad-last:4+grad-head"]
COMBOS = [("grad-last:2", "jvp-hidden:4:2")]  # concatenations of separately computed proxies


def rowcos(a, b):
    return float(np.mean((a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)))


def evaluate(E, G, P, ell, draws, seed, scale=1.0, center=True, damping=0.01, with_cos=False, direct=None):
    """Mean over landmark draws of Spearman(mean_t p_hat, mean_t p) on the non-landmarks; P is (n, t)."""
    rhos, coss, means = [], [], []
    n, p = len(E), P.mean(1)
    kw = dict(damping=damping, bandwidth_scale=scale, center=center)
    for d in range(draws):
        lm = np.random.default_rng(seed + d).choice(n, ell, replace=False)
        rest = np.setdiff1d(np.arange(n), lm)
        pred = krr_fit(E[lm], P[lm] if direct else p[lm], direct=direct, **kw).predict(E[rest]).mean(1)
        rhos.append(spearmanr(pred, p[rest]).statistic)
        if with_cos:
            coss.append(rowcos(krr_fit(E[lm], G[lm], **kw).predict(E[rest]), G[rest]))
            means.append(rowcos(np.broadcast_to(G[lm].mean(0), G[rest].shape), G[rest]))
    out = {"spearman": float(np.mean(rhos))}
    if with_cos:
        out.update(grad_cosine=float(np.mean(coss)), mean_cosine=float(np.mean(means)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    recovery_data.add_arguments(ap)
    ap.add_argument("--landmarks", default="64,256,512")
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--warmup-steps", type=int, default=0)
    ap.add_argument("--adam", action="store_true", help="precondition pool gradients with the warm-up Adam state")
    ap.add_argument("--grad-params", default="", help="regex of the parameters the true gradients cover ('' = all)")
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    ap.add_argument("--auto-landmarks", type=int, default=256, help="landmarks for the emulated 'embedding: auto' run")
    ap.add_argument("--save", default="", help="write the gradients and embeddings to this .npz (for further analysis)")
    args = ap.parse_args()
    plain = not (args.warmup_steps or args.grad_params)  # the shared protocol: true gradients cached on disk
    data = recovery_data.load(recovery_data.setting(args), with_gradients=plain)
    model, tok, pool, spare, targets = data.model, data.tokenizer, data.pool, data.spare, data.targets
    pad = tok.pad_token_id
    if plain:
        G, T, t_true = data.G, data.T, data.seconds_per_gradient
    else:
        moments = None
        if args.warmup_steps:
            cfg = SelectionConfig.of(pool_size=len(spare), k=1, n_landmarks=2, warmup_steps=args.warmup_steps,
                                  warmup_samples=64, train_lr=2e-5, train_micro_batch=4, train_grad_accum=2)
            res = warm_up(model, spare, cfg, pad)
            print(f"warm-up: {res.steps} steps, loss {res.losses[0]:.3f} -> {res.losses[-1]:.3f}")
        params = [p for _, p in select_parameters(model, args.grad_params or None)]
        if args.warmup_steps and args.adam:
            moments = moments_from_optimizer(res.optimizer, params)
        proj = HadamardProjector(sum(p.numel() for p in params), args.dim, seed=0)
        t0 = time.perf_counter()
        G = sample_gradients(model, pool, params, proj, pad, moments=moments).vectors.astype(np.float64)
        t_true = (time.perf_counter() - t0) / len(pool)
        T = sample_gradients(model, targets, params, proj, pad).vectors.astype(np.float64)
    P = G @ T.T
    p = P.mean(1)
    print(f"true gradients: {t_true:.2f} s/sample; n={len(pool)}, {len(targets)} targets; "
          f"mean pairwise cosine {float(np.mean((G @ G.T)[np.triu_indices(len(G), 1)])):.3f}")
    ells = [int(x) for x in args.landmarks.split(",") if int(x) < len(pool)]
    emb, cost, directs, widths = {}, {}, {}, {}
    for spec in [c for c in args.candidates.split(",") if c]:
        pe = proxies.compute_proxy(model, pool, pad, spec, dim=4096, seed=0)
        emb[spec], cost[spec], widths[spec] = pe.vectors.astype(np.float64), pe.seconds_per_sample, pe.widths
        print(f"  embedded {spec}: {pe.seconds_per_sample:.3f} s/sample", flush=True)
        slices = part_slices(pe.widths, proxy_specs.ProxySpec.parse(spec).gradient_parts)
        if slices:
            te = proxies.compute_proxy(model, targets, pad, spec, dim=4096, seed=0).vectors.astype(np.float64)
            directs[spec] = DirectTerm(te, slices)
    if args.save:
        np.savez(args.save, G=G, T=T, costs=json.dumps(cost), **{f"E|{k}": v for k, v in emb.items()},
                 **{f"TE|{k}": dt.targets for k, dt in directs.items()}, **{f"S|{k}": np.array(dt.slices) for k, dt in directs.items()})
    for a, b in COMBOS:
        if a in emb and b in emb:
            emb[f"{a}+{b}"] = np.concatenate([emb[a], emb[b]], axis=1) / np.sqrt(2)
            cost[f"{a}+{b}"] = cost[a] + cost[b]
    for spec, dt in directs.items():
        emb[f"{spec}+direct"], cost[f"{spec}+direct"] = emb[spec], cost[spec]
    emb["true-gradients"], cost["true-gradients"] = G, t_true
    rows = []
    header = f"{'proxy':28} {'s/sample':>8} " + " ".join(f"{'l=' + str(e):>7}" for e in ells) + \
        f" {'cos@256':>8} {'best scale':>10} {'rho@256 best kernel':>19}"
    print(header)
    for spec, E in emb.items():
        r = {"embedding": spec, "seconds_per_sample": cost[spec]}
        dt = directs.get(spec.removesuffix("+direct")) if spec.endswith("+direct") else None
        for ell in ells:
            r[f"l{ell}"] = evaluate(E, G, P, ell, args.draws, 0, with_cos=(ell == 256), direct=dt)
        ell_k = 256 if 256 in ells else ells[-1]
        kern = {f"{s}-{c}": evaluate(E, G, P, ell_k, args.draws, 0, scale=s, center=c, direct=dt)["spearman"]
                for s in (0.5, 1.0, 2.0, 4.0) for c in (True, False)}
        best_k = max(kern, key=kern.get)
        r["kernel"] = kern
        rows.append(r)
        cos = r.get("l256", {}).get("grad_cosine", float("nan"))
        print(f"{spec:28} {cost[spec]:>8.3f} " + " ".join(f"{r[f'l{e}']['spearman']:>7.3f}" for e in ells) +
              f" {cos:>8.3f} {best_k:>10} {kern[best_k]:>19.3f}", flush=True)
    direct = {spec: float(spearmanr(dt.features(emb[spec]).mean(axis=(1, 2)), p).statistic) for spec, dt in directs.items()}
    print(f"direct similarity to the targets, no landmarks (mean part cosine): {direct}")
    ell = args.auto_landmarks
    picks, rho_auto = shipped_recovery(emb, widths, cost, directs, G, T, ell, args.draws) if len(G) > ell \
        else ([], float("nan"))
    print(f"embedding: auto at l={ell} (default candidates, pool-side choice per draw): {picks}, Spearman {rho_auto:.3f}")
    key = "l256" if 256 in ells else f"l{ells[-1]}"
    cands = [r for r in rows if r["embedding"] != "true-gradients"]
    best = max(cands, key=lambda r: r[key]["spearman"])
    get = lambda name: next((r[key]["spearman"] for r in rows if r["embedding"] == name), float("nan"))
    summary = {"n": len(pool), "tokens": args.tokens, "warmup_steps": args.warmup_steps, "adam": bool(args.adam),
               "grad_params": args.grad_params or "all", "true_gradient_seconds_per_sample": t_true,
               "spearman_best_l256": best[key]["spearman"], "best_embedding": best["embedding"],
               "seconds_per_sample_best": best["seconds_per_sample"], "spearman_jvp_l256": get("jvp-hidden:4:2"),
               "spearman_jvp_logits_l256": get("jvp-logits:4:2"), "spearman_rds_l256": get("rds"),
               "spearman_true_gradients_l256": get("true-gradients"),
               "best_kernel_spearman_l256": max(max(r["kernel"].values()) for r in cands),
               "auto_landmarks": ell, "auto_choices": picks, "spearman_auto": rho_auto,
               "direct_similarity": direct}
    clean = {k: (None if v != v else round(v, 4)) if isinstance(v, float) else v for k, v in summary.items()}
    print(json.dumps(clean))  # NaN (a proxy not run) becomes null: strict JSON


if __name__ == "__main__":
    main()
