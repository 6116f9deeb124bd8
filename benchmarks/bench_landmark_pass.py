"""What the landmark-gradient pass saves by computing the landmarks' proxy rows from its own
forwards (``pipeline.compute_gradients_and_proxy``), against computing the gradients and then
embedding the landmarks in a second pass, as the pipeline did before.

On the recovery protocol's pool (``recovery_data``: the first ``--n`` usable ShareGPT samples at
``--tokens`` tokens, SmolLM2-135M-Instruct, the shipped settings), the landmarks of selection seed
0 (``--landmarks``, default the shipped count), in ``--rounds`` rounds that alternate the order of
the two ways so that a drifting machine speed does not favour either:

- apart: ``pipeline.compute_gradients``, then ``pipeline.embed_samples`` of the partial-backward
  candidate (``pipeline.gradient_pass_proxy``: the shipped ``grad-last:2+grad-head``);
- shared: ``pipeline.compute_gradients_and_proxy``;

checks that both give the same gradients and rows bit for bit, and prints the seconds per
landmark, the saving, and how many landmarks the shared pass affords in the seconds the two
passes took. The whole selection's share is estimated from this run's own figures only: its pool
pass as the measured proxy seconds per sample times the non-landmark samples (the other
candidate's landmark rows and the target side, the same either way, are left out of both, so the
share is an upper bound). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import recovery_data
from infdist_core import pipeline
from infdist_core.config import SelectionConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    recovery_data.add_arguments(ap)
    ap.add_argument("--landmarks", type=int, default=SelectionConfig().pool.n_landmarks)
    ap.add_argument("--rounds", type=int, default=2, help="repetitions, alternating which way runs first")
    args = ap.parse_args()
    data = recovery_data.load(recovery_data.setting(args), with_gradients=False)
    model, pad, pool = data.model, data.tokenizer.pad_token_id, data.pool
    n = len(pool)
    cfg = SelectionConfig.of(pool_size=n, max_length=args.tokens, n_landmarks=args.landmarks)
    spec = pipeline.gradient_pass_proxy(cfg)
    if spec is None:
        raise SystemExit("the shipped settings have no partial-backward proxy candidate: nothing to share")
    lm = pipeline.landmark_indices([s.id for s in pool], cfg)
    samples = [pool[i] for i in lm]
    print(f"pool n={n}, {len(lm)} landmarks, proxy {spec}, {args.rounds} round(s)", flush=True)

    def apart():
        t0 = time.perf_counter()
        g = pipeline.compute_gradients(model, samples, cfg, pad)
        t1 = time.perf_counter()
        pe = pipeline.embed_samples(model, samples, spec, cfg, pad)
        return g, pe, {"gradients": t1 - t0, "proxy": time.perf_counter() - t1}

    def shared():
        t0 = time.perf_counter()
        g, pe = pipeline.compute_gradients_and_proxy(model, samples, cfg, pad, spec)
        return g, pe, {"shared": time.perf_counter() - t0}

    seconds: dict[str, list[float]] = {"gradients": [], "proxy": [], "shared": []}
    identical = True
    for r in range(args.rounds):
        order = (apart, shared) if r % 2 == 0 else (shared, apart)
        out = {}
        for way in order:
            g, pe, s = way()
            out[way.__name__] = (g, pe)
            for k, v in s.items():
                seconds[k].append(v)
            print(f"round {r}: {way.__name__}: " + ", ".join(f"{k} {v:.1f} s" for k, v in s.items()), flush=True)
        (ga, pa), (gs, ps) = out["apart"], out["shared"]
        identical &= bool(np.array_equal(ga.vectors, gs.vectors) and np.array_equal(ga.norms, gs.norms)
                          and np.array_equal(pa.vectors, ps.vectors))
    L = len(lm)
    grad, proxy, both = (float(np.mean(seconds[k])) for k in ("gradients", "proxy", "shared"))
    sep = grad + proxy
    saved = sep - both
    per_proxy = proxy / L
    pool_pass = per_proxy * (n - L)  # the non-landmarks' proxy rows, at this run's proxy seconds per sample
    summary = {
        "n": n, "landmarks": L, "proxy": spec, "rounds": args.rounds, "identical": identical,
        "seconds_apart": sep, "seconds_shared": both, "seconds_saved": saved,
        "shared_over_apart": both / sep,
        "gradient_seconds_per_landmark": grad / L, "proxy_seconds_per_landmark": per_proxy,
        "shared_seconds_per_landmark": both / L,
        "proxy_share_saved": saved / proxy,
        "landmarks_for_the_same_seconds": L * sep / both,
        "selection_share_saved_upper_bound": saved / (sep + pool_pass),
    }
    print(f"\napart: gradients {grad:.1f} s + proxy {proxy:.1f} s = {sep:.1f} s; shared {both:.1f} s "
          f"({both / sep:.3f}x, {saved:.1f} s saved = {saved / proxy:.0%} of the landmarks' proxy pass); "
          f"bit-identical: {identical}")
    print(f"per landmark: gradient {grad / L:.3f} s, proxy {per_proxy:.3f} s, shared {both / L:.3f} s; "
          f"for the same seconds: {L * sep / both:.1f} landmarks instead of {L}")
    print(f"of the landmark passes plus a pool pass of {n - L} samples at {per_proxy:.3f} s: "
          f"{saved / (sep + pool_pass):.1%} saved (an upper bound on the whole selection's share)")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}))


if __name__ == "__main__":
    main()
