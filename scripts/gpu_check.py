"""One short GPU check (run through the device tool, or by hand on a CUDA machine).

1. The CUDA Hadamard path (fast-hadamard-transform) gives the same projection as the CPU path
   for the same seed, and how fast it is against a device memcpy.
2. Batched per-sample gradients on CUDA (one vmapped backward) equal unbatched ones, and the
   speed-up; the landmark pass's proxy rows from its own forwards equal the proxy pass's, and the
   time against the two passes. Uses a small random Llama, so it needs no model files.
3. The sharded pool side on CUDA in bf16 (``dtype=bfloat16``, ``pool_shards`` 1 and 2, the tests'
   tiny world): the gathered artefacts of 1 and 2 shards are identical, and the seconds of each.
   Needs the SmolLM2 tokenizer files (``data/models/smollm2-135m``, or ``$INFDIST_TOKENIZER``: a
   few MB, carry them to the device); reported as skipped without them.
4. Fine-tuning through Trainer on CUDA (a small random Llama): bf16 mixed precision and
   activation checkpointing against fp32 without checkpointing (loss trajectories close; the
   checkpointed run's peak memory lower), and a LoRA run when peft is installed.
Last line: one JSON object.
"""

from __future__ import annotations

import json
import time

import torch


def cuda_time(fn, repeats=5):
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / repeats


def cuda_projection_ratio(projector_cls) -> float:
    big = torch.randn(1 << 28, device="cuda")
    dst = torch.empty_like(big)
    proj = projector_cls(1 << 28, 131072, seed=0, device="cuda")
    return cuda_time(lambda: proj(big)) / cuda_time(lambda: dst.copy_(big))


def main() -> None:
    from infdist_core.maths import hadamard
    from infdist_core.maths.projection import HadamardProjector
    from infdist_core.model.gradients import sample_gradients
    from infdist_core.model.modeling import tiny_llama
    from infdist_core.model.tokenization import TokenizedSample

    assert torch.cuda.is_available(), "no CUDA device"
    out = {"backends": hadamard.available_backends()}
    x = torch.randn(3, 1 << 20)
    cpu = HadamardProjector(1 << 20, 4096, seed=1)(x)
    gpu_proj = HadamardProjector(1 << 20, 4096, seed=1, device="cuda")
    gpu = gpu_proj(x.cuda()).cpu()
    out["cuda_backend"] = gpu_proj.backend
    out["cpu_vs_cuda_max_abs"] = float((cpu - gpu).abs().max())
    out["cuda_projection_over_memcpy_2^28"] = cuda_projection_ratio(HadamardProjector)

    model = tiny_llama(4096, seed=0, n_layers=4, hidden=256).cuda()
    gen = torch.Generator().manual_seed(0)
    samples = []
    for i in range(32):
        ids = torch.randint(0, 4096, (int(torch.randint(32, 128, (1,), generator=gen)),), generator=gen)
        labels = ids.clone()
        labels[: len(ids) // 2] = -100
        samples.append(TokenizedSample(str(i), ids, labels))
    params = [p for p in model.parameters()]
    proj = HadamardProjector(sum(p.numel() for p in params), 1024, seed=0, device="cuda")
    t0 = time.perf_counter()
    a = sample_gradients(model, samples, params, proj, pad_id=0, batch_size=1)
    t1 = time.perf_counter()
    b = sample_gradients(model, samples, params, proj, pad_id=0, batch_size=16)
    t2 = time.perf_counter()
    out["batched_vs_unbatched_max_abs"] = float(abs(a.vectors - b.vectors).max())
    out["batched_speedup"] = (t1 - t0) / (t2 - t1)
    out.update(shared_proxy_pass(model, samples, params, proj, a, t1 - t0))
    out.update(trainer_bf16_checkpointing(samples))
    out.update(sharded_pool_side_bf16())
    print(json.dumps(out))


def shared_proxy_pass(model, samples, params, proj, apart, gradient_seconds: float) -> dict:
    """The landmark pass's proxy rows from its own forwards on CUDA: the same gradients and rows
    as the two passes apart (close: CUDA kernels need not be bitwise deterministic), and the time."""
    from infdist_core.model.proxies import compute_proxy, gradients_with_proxy

    spec = "grad-last:2+grad-head"
    t0 = time.perf_counter()
    rows = compute_proxy(model, samples, 0, spec, dim=1024, seed=0)
    t1 = time.perf_counter()
    g, pe = gradients_with_proxy(model, samples, params, proj, 0, spec, dim=1024, seed=0)
    t2 = time.perf_counter()
    return {"shared_vs_apart_max_abs_gradients": float(abs(g.vectors - apart.vectors).max()),
            "shared_vs_apart_max_abs_proxy": float(abs(pe.vectors - rows.vectors).max()),
            "shared_over_apart_seconds": (t2 - t1) / (gradient_seconds + t1 - t0)}


def trainer_bf16_checkpointing(samples) -> dict:
    import importlib.util
    import tempfile

    from infdist_core.model.finetuning import TrainerOptions, fine_tune
    from infdist_core.model.modeling import tiny_llama
    from infdist_core.model.training import TrainConfig

    cfg = TrainConfig(lr=1e-3, epochs=2, micro_batch=4, grad_accum=2, seed=0)
    runs = {"fp32": TrainerOptions(use_cpu=False),
            "bf16_checkpointed": TrainerOptions(precision="bfloat16", gradient_checkpointing=True, use_cpu=False)}
    if importlib.util.find_spec("peft") is not None:
        runs["bf16_lora"] = TrainerOptions(precision="bfloat16", lora_rank=8, use_cpu=False)
    out, losses = {}, {}
    for name, opts in runs.items():
        model = tiny_llama(4096, seed=0, n_layers=8, hidden=512).cuda()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        res = fine_tune(model, samples, cfg, opts, pad_id=0, output_dir=tempfile.mkdtemp(prefix=f"ft-{name}-"))
        out[f"finetune_{name}_seconds"] = round(time.perf_counter() - t0, 2)
        out[f"finetune_{name}_peak_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        losses[name] = res.losses
        out[f"finetune_{name}_loss_first_last"] = [round(res.losses[0], 4), round(res.losses[-1], 4)]
    out["bf16_checkpointed_vs_fp32_max_loss_gap"] = max(abs(a - b) for a, b in zip(losses["fp32"], losses["bf16_checkpointed"]))
    return out


def sharded_pool_side_bf16() -> dict:
    import os
    import sys
    import tempfile
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    tok = Path(os.environ.get("INFDIST_TOKENIZER", root / "data" / "models" / "smollm2-135m"))
    if not (tok / "tokenizer.json").exists():
        return {"sharded_pool_side": f"skipped: no tokenizer at {tok}"}
    sys.path.insert(0, str(root))
    import pyarrow.parquet as pq

    import tests.conftest as conftest
    from tests.assets.test_sharding import SETTINGS, SHARDED, _materialize

    conftest.MODEL_DIR = tok
    out, tables = {}, []
    for shards in (1, 2):
        data = Path(tempfile.mkdtemp(prefix=f"gpu-shards{shards}-"))
        reg = conftest.write_world(data)
        t0 = time.perf_counter()
        res = _materialize(data, reg, ["sampled_pool", "warmup_checkpoint", *SHARDED], **SETTINGS, pool_shards=shards,
                           device="cuda", dtype="bfloat16")
        out[f"pool_side_shards_{shards}_seconds"] = round(time.perf_counter() - t0, 2)
        assert res.success
        tables.append({a: pq.read_table(next((data / "assets" / a / "tiny").rglob("data.parquet"))) for a in SHARDED})
    out["sharded_bf16_identical"] = all(tables[0][a].equals(tables[1][a]) for a in SHARDED)
    return out


if __name__ == "__main__":
    main()
