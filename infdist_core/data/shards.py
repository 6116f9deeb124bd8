"""Splitting per-sample pool work into shards whose results concatenate to the unsharded result.

Every pool-side pass is per sample, or batched in fixed-size batches counted from the start of
its sample list (padding makes a batched row depend on its batch-mates). Shard boundaries at
multiples of the batch size therefore give every sample the batch it has unsharded, so the
gathered artefact is bit-identical whatever the number of shards (``tests/test_sharding.py``).
"""

from __future__ import annotations

import math


def shard_bounds(n: int, shards: int, align: int = 1) -> list[tuple[int, int]]:
    """At most ``shards`` contiguous, non-empty ``(lo, hi)`` ranges covering ``range(n)`` in order,
    every boundary a multiple of ``align`` (the batch size of the pass), as even as that allows."""
    if n < 0 or shards < 1 or align < 1:
        raise ValueError(f"need n >= 0, shards >= 1, align >= 1; got n={n}, shards={shards}, align={align}")
    if n == 0:
        return []
    units = math.ceil(n / align)
    per = math.ceil(units / min(shards, units))
    return [(lo * align, min(n, (lo + per) * align)) for lo in range(0, units, per)]
