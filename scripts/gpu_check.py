"""One short GPU check (run through the device tool, or by hand on a CUDA machine).

1. The CUDA Hadamard path (fast-hadamard-transform) gives the same projection as the CPU path
   for the same seed, and how fast it is against a device memcpy.
2. Batched per-sample gradients on CUDA (one vmapped backward) equal unbatched ones, and the
   speed-up. Uses a small random Llama, so it needs no model files.
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
    from infdist_core import hadamard
    from infdist_core.gradients import sample_gradients
    from infdist_core.modeling import tiny_llama
    from infdist_core.projection import HadamardProjector
    from infdist_core.tokenization import TokenizedSample

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
    print(json.dumps(out))


if __name__ == "__main__":
    main()
