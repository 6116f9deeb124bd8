"""Per-sample rows computed before, found by what determines them, so a re-materialisation
computes only the samples it has not seen.

A projected gradient or a per-sample proxy row depends on three things only: the sample's tokens,
the weights it is computed at, and the ``config.ROW_FIELDS`` settings. So a row is stored under
the hash of its tokens and labels (``sample_key``: an edited sample is a new key, a moved one is
not), in a folder per computation (``kind``: the asset, and the proxy spec) and *state* (the
weights' identity, the device kind, the inference dtype and those settings):

    <root>/cache/rows/<model>/<kind>/<state digest>/state.json    what the state is
    <root>/cache/rows/<model>/<kind>/<state digest>/<name>.parquet rows: key, scalars, vector

A pool that grew, another selection seed, a resumed benchmark or a re-run after a crash then
reuse every row they share, and the result is the one a run that computed every row gives, bit
for bit, because only computations made from one sample alone are cached (gradients at
``batch_size`` 1, proxies whose rows ``ProxySpec.per_sample`` says are; batched passes pad
samples together and recompute). Files are only ever added, each written atomically by one
step (shards write their own), so concurrent writers never meet. When the warm-up is retrained,
rows at its earlier weights are removed (``prune_warmup_states``).

Written by hand: Dagster versions and caches whole assets (data and code versions), not the rows
inside one, and the rows' identity (tokens x weights x settings) is this project's to define.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from infdist_assets.store import storage
from infdist_core.config import ROW_FIELDS, SelectionConfig
from infdist_core.data import atomic
from infdist_core.model.tokenization import TokenizedSample


def sample_key(sample: TokenizedSample) -> str:
    """The row key of a tokenised sample: a hash of its input ids and labels (not its id)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.asarray(sample.input_ids, np.int64).tobytes())
    h.update(b"/")
    h.update(np.asarray(sample.labels, np.int64).tobytes())
    return h.hexdigest()


def samples_digest(samples: list[TokenizedSample]) -> str:
    """One hash of the samples' keys, in order: what a model trained on them is addressed by."""
    h = hashlib.sha256()
    for s in samples:
        h.update(sample_key(s).encode())
    return h.hexdigest()[:16]


def device_kind(cfg: SelectionConfig) -> str:
    """Where the rows are computed ('cuda' or 'cpu'-like): rows from another device kind differ in
    rounding, so they are not mixed."""
    import torch

    if cfg.runtime.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return cfg.runtime.device.split(":")[0]


@dataclass(frozen=True)
class RowCache:
    path: Path

    @classmethod
    def open(cls, root: Path, model: str, kind: str, weights: str, cfg: SelectionConfig, warmup: bool) -> "RowCache":
        """The rows of computation ``kind`` at the weights identified by ``weights`` (a checkpoint's
        digest or a model folder's fingerprint) under ``cfg``'s row settings; ``warmup`` marks
        weights of a warm-up checkpoint (pruned when it is retrained)."""
        settings = cfg.to_dict()
        state = {"kind": kind, "weights": weights, "warmup": warmup, "device": device_kind(cfg),
                 "dtype": str(cfg.inference_dtype()), "settings": {f: settings[f] for f in ROW_FIELDS}}
        digest = hashlib.sha256(json.dumps(state, sort_keys=True, default=list).encode()).hexdigest()[:16]
        path = root / "cache" / "rows" / model / kind.replace("/", "__").replace(":", "_") / digest
        if not (path / "state.json").exists():
            path.mkdir(parents=True, exist_ok=True)
            atomic.write_text(path / "state.json", json.dumps(state, indent=1, sort_keys=True, default=list))
        return cls(path)

    def lookup(self, keys: list[str]) -> tuple[np.ndarray, pa.Table | None]:
        """Which of ``keys`` have a row (bool mask) and those rows, in the order of ``keys``."""
        files = sorted(self.path.glob("*.parquet"))
        found = np.zeros(len(keys), bool)
        if not files:
            return found, None
        table = pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")
        where: dict[str, int] = {}
        for i, k in enumerate(table.column("key").to_pylist()):
            where.setdefault(k, i)
        take = [where.get(k, -1) for k in keys]
        found = np.array([t >= 0 for t in take], bool)
        return found, table.take(pa.array([t for t in take if t >= 0], pa.int64()))

    def add(self, keys: list[str], vectors: np.ndarray, **columns) -> None:
        """Store rows (one file, written atomically): ``vectors`` (n, d) and per-row ``columns``
        (arrays, or lists for nested values)."""
        if not keys:
            return
        table = pa.table({"key": keys, **{k: v if isinstance(v, list) else np.asarray(v) for k, v in columns.items()},
                          "vector": storage.vectors_column(vectors)})
        with atomic.atomic_path(self.path / f"{uuid.uuid4().hex}.parquet") as tmp:
            pq.write_table(table, tmp)


def prune_warmup_states(root: Path, model: str, keep_weights: str) -> int:
    """Remove the rows computed at warm-up weights other than ``keep_weights`` (a retrained
    warm-up makes them unreachable); returns the folders removed."""
    removed = 0
    for state in (root / "cache" / "rows" / model).glob("*/*/state.json"):
        try:
            meta = json.loads(state.read_text())
        except (OSError, ValueError):
            continue
        if meta.get("warmup") and meta.get("weights") != keep_weights:
            shutil.rmtree(state.parent, ignore_errors=True)
            removed += 1
    return removed
