"""Deterministic random streams derived from explicit seeds, never from global RNG state."""

from __future__ import annotations

import hashlib

import numpy as np
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


def stable_order(ids, seed: int, name: str, count: int | None = None):
    """Positions of ``ids`` by increasing ``derive_seed(seed, name, id)``: a seeded random order in
    which an item's rank among the others depends on its own id alone, so adding or removing items
    never reorders the rest (``count``: the number of ids, when ``ids`` is a generator)."""
    keys = np.fromiter((derive_seed(seed, name, i) for i in ids), dtype=np.uint64, count=-1 if count is None else count)
    return np.argsort(keys, kind="stable")
