"""What each selection's picks are worth in exact influence, offline, over many landmark draws.

The held-out benchmark (``bench_quality.py``) fine-tunes, so it affords three to five seeds; this
one affords twenty draws because it fine-tunes nothing. On the recovery protocol of
``recovery_data`` (the first ``--n`` usable ShareGPT first exchanges at ``--tokens`` tokens, the 8
GSM8K CoT targets, SmolLM2-135M-Instruct, true gradients of every pool sample), for each draw
``d`` (landmarks drawn with seed ``d``, selection seed ``d``) and landmark count, it selects ``k``
samples through the pipeline's own functions and methods:

- ``infdist``: the pinned proxy (``--embedding``, the one ``embedding: auto`` chooses here), the
  kernel setting by landmark cross-validation, the direct term decided per task
  (``pipeline.fit_landmark_regression``, ``pipeline.score_targets``), per-target round-robin;
- ``calibrated``: the same scores with the propagated ones stretched about the landmarks' mean by
  the cross-validated calibration slope (``recovery.stretch_propagated`` by
  ``recovery.calibration_slope``, the slope ``recovery_report`` reports, fitted without the direct
  term), the lever the quality runs left unmeasured;
- ``landmarks``: the landmarks' exact scores alone (the ``landmarks`` method);
- ``guided``: InfDist at the same landmark count, but only ``1 - --guided-share`` of the landmarks
  drawn at random; the rest are the non-landmarks the first round's propagated scores rank highest
  (``landmarks.guided_landmarks``: the samples the selection would take, scored exactly next),
  then the regression refitted on all of them;
- ``grad``: every sample's exact scores (the ceiling); ``uniform``: seeded random.

Each selection is valued two ways, both as a share of Grad's value over uniform's expectation
(``(v(S) - v(pool)) / (v(Grad) - v(pool))``, 1 = the ceiling's picks, 0 = random picks):

- ``objective``: the mean over the picks of their exact mean-target influence (Eq. 3 with the
  true gradients). The targets are the selection's own, so this measures how well a method
  optimises what it sets out to optimise, not whether the selection helps: an approximation
  figure like recovery, never a quality figure;
- ``heldout``: the same with the gradients of ``--heldout`` GSM8K test rows (none of them a
  target) in place of the targets: the first-order influence of the picks on held-out rows. It is
  not the held-out loss after fine-tuning (that is ``bench_quality.py``), but it does not reuse
  the selection's targets.

Paired differences over the draws (infdist − landmarks, calibrated − infdist, guided − infdist,
and InfDist at each further landmark count − at the first: what more landmarks buy) come with 95%
t-intervals. True gradients, proxy rows and held-out gradients are cached in ``data/bench_cache``
(a rerun recomputes nothing). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from infdist_core import methods, pipeline, proxy_specs
from infdist_core.config import SelectionConfig
from infdist_core.data.evalsets import load_eval_set
from infdist_core.data.records import load_records
from infdist_core.maths import recovery
from infdist_core.maths.influence import landmark_scores
from infdist_core.maths.landmarks import DirectTerm, guided_landmarks, part_slices
from infdist_core.maths.statistics import t_interval
from infdist_core.model.tokenization import tokenize_records

import recovery_data

PROXY_CODE = Path(__file__).resolve().parents[1] / "infdist_core" / "model" / "proxies.py"


def share(picks: np.ndarray, value: np.ndarray, ceiling: np.ndarray) -> float:
    """The picks' mean ``value`` over the pool's mean, as a share of the ceiling's picks' gain."""
    base = value.mean()
    return float((value[picks].mean() - base) / (value[ceiling].mean() - base))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    recovery_data.add_arguments(ap)
    ap.add_argument("--landmarks", default="64,128,256")
    ap.add_argument("--k", type=int, default=SelectionConfig().selection.k)
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--embedding", default=SelectionConfig().data.embedding_candidates[0])
    ap.add_argument("--eval", default="data/eval/gsm8k_test.jsonl", help="GSM8K test rows (the held-out value)")
    ap.add_argument("--heldout", type=int, default=64, help="held-out rows whose gradients value the picks")
    ap.add_argument("--guided-share", type=float, default=0.5, help="share of the guided selection's landmarks chosen by score")
    args = ap.parse_args()
    setting = recovery_data.setting(args)
    data = recovery_data.load(setting)
    model, tok, pool, targets, G, T = data.model, data.tokenizer, data.pool, data.targets, data.G, data.T
    pad, n = tok.pad_token_id, len(pool)
    ells = [int(x) for x in args.landmarks.split(",") if args.k <= int(x) < n]
    base = SelectionConfig.of(pool_size=n, max_length=args.tokens, n_landmarks=ells[0], k=args.k, embedding=args.embedding)
    tag = hashlib.sha256(args.embedding.encode() + PROXY_CODE.read_bytes()).hexdigest()[:8]

    def embed() -> dict[str, np.ndarray]:
        every = np.arange(n)
        pe = pipeline.embed_pool_rows(model, pool, every, args.embedding, base, pad)
        te = pipeline.embed_pool_rows(model, targets, np.arange(len(targets)), args.embedding, base, pad)
        return {"E": pe.vectors.astype(np.float64), "TE": te.vectors.astype(np.float64),
                "widths": np.array(pe.widths), "seconds": np.float64(pe.seconds_per_sample)}

    rows = recovery_data.cached(f"proxy_{tag}", setting, embed)
    E, TE = rows["E"], rows["TE"]
    slices = part_slices(tuple(int(w) for w in rows["widths"]), proxy_specs.ProxySpec.parse(args.embedding).gradient_parts)
    direct = DirectTerm(TE, slices) if slices else None

    def heldout() -> dict[str, np.ndarray]:
        held = load_eval_set("gsm8k", Path(args.eval), load_records(args.targets)).records
        samples = tokenize_records(tok, held, args.tokens).samples[: args.heldout]
        return {"H": recovery_data.true_gradients(model, samples, args.dim, pad)[0]}

    H = recovery_data.cached(f"heldout_gradients_{args.heldout}", setting, heldout)["H"]
    value = {"objective": landmark_scores(G, T).mean(1), "heldout": landmark_scores(G, H).mean(1)}
    print(f"pool n={n}, {len(T)} targets, {len(H)} held-out rows, k={args.k}, {args.draws} draws, proxy "
          f"{args.embedding} ({float(rows['seconds']):.2f} s/sample when computed); Spearman of the two values over "
          f"the pool {spearmanr(value['objective'], value['heldout']).statistic:.3f}", flush=True)

    def propagated(landmarks: np.ndarray, cfg: SelectionConfig):
        """The pipeline's scores and kernel setting with these landmarks."""
        reg = pipeline.fit_landmark_regression(E, landmarks, G[landmarks], cfg)
        return pipeline.score_targets(E, landmarks, G[landmarks], T, reg, cfg, direct)[:2]

    names = ("infdist", "calibrated", "guided", "landmarks", "uniform")
    results: dict[int, dict] = {}
    first: dict[str, list] = {}  # the first landmark count's values, which the others are paired with
    for ell in ells:
        got = {f"{m}_{v}": [] for m in names for v in value} | {"picks_from_landmarks": [], "calibration_slope": [],
                                                                "overlap_infdist_grad": [], "overlap_landmarks_grad": []}
        for d in range(args.draws):
            cfg = base.with_(n_landmarks=ell, seed=d)
            lm = np.sort(np.random.default_rng(d).choice(n, ell, replace=False))
            scores, setting_used = propagated(lm, cfg)
            slope = recovery.calibration_slope(E[lm], landmark_scores(G[lm], T).mean(1), setting_used, seed=d)
            stretched = pipeline.weigh_scores(recovery.stretch_propagated(scores.scores, lm, slope), args.k)
            drawn = ell - round(ell * args.guided_share)
            first_round = np.sort(np.random.default_rng(d).choice(n, drawn, replace=False))
            second_round = guided_landmarks(propagated(first_round, cfg)[0].scores.mean(1), first_round, ell - drawn)
            guided_scores = propagated(np.sort(np.concatenate([first_round, second_round])), cfg)[0]
            picks = {"infdist": methods.select("infdist", cfg, n, influence=scores)[0],
                     "calibrated": methods.select("infdist", cfg, n, influence=stretched)[0],
                     "guided": methods.select("infdist", cfg, n, influence=guided_scores)[0],
                     "landmarks": methods.select("landmarks", cfg, n, landmark_gradients=(lm, G[lm]),
                                                 target_gradients=T)[0],
                     "uniform": methods.select("uniform", cfg, n)[0]}
            grad = methods.select("grad", cfg, n, pool_gradients=G, target_gradients=T)[0]
            for m, idx in picks.items():
                for v, val in value.items():
                    got[f"{m}_{v}"].append(share(idx, val, grad))
            got["picks_from_landmarks"].append(int(np.isin(picks["infdist"], lm).sum()))
            got["calibration_slope"].append(slope)
            got["overlap_infdist_grad"].append(len(set(picks["infdist"]) & set(grad)))
            got["overlap_landmarks_grad"].append(len(set(picks["landmarks"]) & set(grad)))
        diffs = {f"{a}_minus_{b}_{v}": t_interval(np.subtract(got[f"{a}_{v}"], got[f"{b}_{v}"]))
                 for a, b in (("infdist", "landmarks"), ("calibrated", "infdist"), ("guided", "infdist")) for v in value}
        if ell == ells[0]:
            first = got
        else:  # what the extra landmarks buy, paired by draw (the same seeds)
            diffs |= {f"infdist_minus_l{ells[0]}_{v}": t_interval(np.subtract(got[f"infdist_{v}"], first[f"infdist_{v}"]))
                      for v in value}
        results[ell] = {"means": {key: t_interval(vals) for key, vals in got.items()}, "diffs": diffs}
        print(f"\n{ell} landmarks ({ell / n:.0%} of the pool), share of Grad's value over random picks, "
              f"mean [95% interval] over {args.draws} draws:")
        print(f"{'selection':12} {'objective (own targets)':>28} {'held-out rows, first order':>28}")
        for m in names:
            cells = [results[ell]["means"][f"{m}_{v}"] for v in value]
            print(f"{m:12} " + " ".join(f"{c.mean:>8.3f} [{c.low:+.3f}, {c.high:+.3f}]".rjust(28) for c in cells))
        for key, c in diffs.items():
            print(f"  {key}: {c.mean:+.3f} [{c.low:+.3f}, {c.high:+.3f}]")
        for key in ("picks_from_landmarks", "calibration_slope", "overlap_infdist_grad", "overlap_landmarks_grad"):
            print(f"  {key}: mean {results[ell]['means'][key].mean:.2f}")

    summary = {"n": n, "k": args.k, "draws": args.draws, "embedding": args.embedding, "heldout_rows": len(H),
               "guided_share": args.guided_share}
    for ell, r in results.items():
        for key, c in {**r["means"], **r["diffs"]}.items():
            summary[f"{key}_l{ell}"] = round(c.mean, 4)
            if key in r["diffs"]:
                summary[f"{key}_l{ell}_ci"] = [round(c.low, 4), round(c.high, 4)]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
