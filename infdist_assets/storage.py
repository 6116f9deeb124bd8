"""Artefact storage: one Parquet file per asset and partition under the data root, written to a
temporary name and renamed, with a JSON sidecar (run id, config digest, code version, upstream).

    <root>/assets/<asset>/<model>[/<task>]/data.parquet   (+ data.meta.json)
    <root>/checkpoints/<asset>/<model>[/<task>]/           (model folders, recorded by size + hash)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from infdist_core.tokenization import TokenizedSample


class ArtefactMissing(FileNotFoundError):
    """An upstream artefact has not been materialised (or was written by an incompatible run)."""


def partition_dir(root: Path, asset: str, model: str, task: str | None = None) -> Path:
    p = root / "assets" / asset / model
    return p / task if task else p


def write_table(table: pa.Table, path: Path, meta: dict[str, Any]) -> None:
    """Atomically write ``table`` and its sidecar; the sidecar is written last (it marks completeness)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)
    side = sidecar(path)
    tmp_meta = side.with_name(f".{side.name}.{os.getpid()}.tmp")
    tmp_meta.write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
    tmp_meta.replace(side)


def sidecar(path: Path) -> Path:
    return path.with_name(path.stem + ".meta.json")


def read_meta(path: Path) -> dict[str, Any]:
    side = sidecar(path)
    if not path.exists() or not side.exists():
        raise ArtefactMissing(f"{path}: not materialised yet (materialise the upstream asset first)")
    return json.loads(side.read_text())


def read_table(path: Path) -> pa.Table:
    """The Parquet table at ``path`` (check completeness with ``read_meta`` first)."""
    return pq.read_table(path)


def vectors_column(x: np.ndarray) -> pa.Array:
    """An (n, d) float32 matrix as a FixedSizeList column (Arrow-native, zero-copy back)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])


def column_matrix(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name).combine_chunks()
    width = col.type.list_size
    return col.values.to_numpy(zero_copy_only=False).reshape(-1, width)


def samples_table(samples: list[TokenizedSample], extra: dict[str, Any] | None = None) -> pa.Table:
    cols = {
        "pool_index": pa.array(np.arange(len(samples)), pa.int64()),
        "sample_id": pa.array([s.id for s in samples]),
        "n_tokens": pa.array([len(s.input_ids) for s in samples], pa.int32()),
        "n_label_tokens": pa.array([s.n_label_tokens for s in samples], pa.int32()),
        "input_ids": pa.array([s.input_ids.tolist() for s in samples], pa.list_(pa.int32())),
        "labels": pa.array([s.labels.tolist() for s in samples], pa.list_(pa.int32())),
    }
    cols.update(extra or {})
    return pa.table(cols)


def table_samples(table: pa.Table) -> list[TokenizedSample]:
    ids, inp, lab = table.column("sample_id").to_pylist(), table.column("input_ids").to_pylist(), table.column("labels").to_pylist()
    return [TokenizedSample(i, torch.tensor(a, dtype=torch.long), torch.tensor(b, dtype=torch.long)) for i, a, b in zip(ids, inp, lab)]


def folder_digest(path: Path) -> tuple[int, str]:
    """Total size in bytes and SHA-256 over (relative name, content) of every file in ``path``."""
    h, size = hashlib.sha256(), 0
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        size += f.stat().st_size
    return size, h.hexdigest()


def save_checkpoint(model, tokenizer, final: Path, also: Callable[[Path], None] | None = None) -> tuple[int, str]:
    """Save model and tokenizer (and whatever ``also`` writes into the folder) to a temporary
    folder, swap it into ``final``, and return its size and SHA-256 (``folder_digest``)."""
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if also is not None:
        also(tmp)
    replace_folder(tmp, final)
    return folder_digest(final)


def replace_folder(tmp: Path, final: Path) -> None:
    """Swap a fully written folder into place (the old one is removed only after)."""
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
