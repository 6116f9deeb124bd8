"""Model-side costs on SmolLM2-135M-Instruct at 256 tokens, on this machine.

- JVP embedding (Eq. 12, l=4 blocks, |V|=2) / partial forward through the same 4 blocks
- landmark gradient incl. projection / forward+backward: projection overhead
- RDS+ embedding seconds per sample
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from infdist_core.data.records import load_records
from infdist_core.maths.projection import HadamardProjector
from infdist_core.model.gradients import per_sample_losses, sample_gradients
from infdist_core.model.jvp import JVPEmbedder, truncated_backbone
from infdist_core.model.modeling import load_model, load_tokenizer, select_parameters
from infdist_core.model.proxies import rds_embeddings
from infdist_core.model.tokenization import pad_batch, tokenize_records


def median_time(fn, repeats: int) -> float:
    fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="data/models/smollm2-135m")
    ap.add_argument("--pool", default="data/pools/sharegpt.jsonl")
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--projection-dim", type=int, default=8192)
    args = ap.parse_args()
    tok = load_tokenizer(args.model)
    model = load_model(args.model, "cpu")
    recs = load_records(args.pool, limit=400)
    samples = [s for s in tokenize_records(tok, recs, args.tokens).samples if len(s.input_ids) == args.tokens][:args.repeats]
    if not samples:
        raise SystemExit(f"no pool sample reaches {args.tokens} tokens")
    pad = tok.pad_token_id
    s0 = samples[:1]
    batch = pad_batch(s0, pad)
    sub = truncated_backbone(model, args.blocks)
    res: dict[str, float] = {"threads": torch.get_num_threads(), "tokens": args.tokens}

    with torch.no_grad():
        t_partial = median_time(lambda: sub(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]), args.repeats)
    mean_jvp = JVPEmbedder(model, args.blocks, 2)  # tangents drawn once, as in the pipeline
    concat_jvp = JVPEmbedder(model, args.blocks, 2, combine="concat")
    t_jvp = median_time(lambda: mean_jvp(s0, pad), args.repeats)
    t_jvp_concat = median_time(lambda: concat_jvp(s0, pad), args.repeats)
    res.update(partial_forward_seconds=t_partial, jvp_seconds_per_sample=t_jvp, jvp_over_partial_forward=t_jvp / t_partial,
               jvp_concat_over_partial_forward=t_jvp_concat / t_partial)
    print(f"partial forward ({args.blocks} blocks): {t_partial:.4f} s; JVP (2 tangents, mean = one JVP): {t_jvp:.4f} s "
          f"= {t_jvp / t_partial:.2f}x; two separate JVPs: {t_jvp_concat / t_partial:.2f}x")

    params = [p for _, p in select_parameters(model)]
    in_dim = sum(p.numel() for p in params)
    proj = HadamardProjector(in_dim, args.projection_dim, seed=0)

    def fwd_bwd():
        loss = per_sample_losses(model, batch)[0]
        torch.autograd.grad(loss, params)

    t_fb = median_time(fwd_bwd, args.repeats)
    t_grad = median_time(lambda: sample_gradients(model, s0, params, proj, pad), args.repeats)
    res.update(forward_backward_seconds=t_fb, landmark_gradient_seconds=t_grad,
               projection_over_forward_backward=(t_grad - t_fb) / t_fb)
    print(f"forward+backward (all {in_dim:,} params): {t_fb:.3f} s; landmark gradient incl. projection to "
          f"{args.projection_dim}: {t_grad:.3f} s; projection share {(t_grad - t_fb) / t_fb:.1%} of forward+backward")

    t_rds = median_time(lambda: rds_embeddings(model, s0, pad), args.repeats)
    res["rds_seconds_per_sample"] = t_rds
    print(f"RDS+ embedding: {t_rds:.4f} s/sample; JVP/RDS+ = {t_jvp / t_rds:.2f}")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in res.items()}))


if __name__ == "__main__":
    main()
