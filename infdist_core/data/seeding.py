"""Deterministic random streams derived from explicit seeds, never from global RNG state."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *names: object) -> int:
    """A 63-bit seed derived from ``seed`` and a stable identifier (same in every process)."""
    text = "/".join([str(int(seed)), *map(str, names)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(seed: int, *names: object) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``derive_seed(seed, *names)``."""
    g = torch.Generator(device="cpu")
    g.manual_seed(derive_seed(seed, *names))
    return g

