"""Artefact storage: one Parquet file per asset and partition under the data root, written to a
temporary name and renamed, with a JSON sidecar (run id, config digest, code version, upstream).

    <root>/assets/<asset>/<model>[/<task>]/data.parquet   (+ data.meta.json)
    <root>/checkpoints/<asset>/<model>/<address>/          (model folders, recorded by path, size + hash)

A checkpoint folder is never moved or replaced once complete: it is written under a temporary
name unique to its process and renamed to a name that addresses its content (the settings or the
training inputs it was made from), so a sidecar always points at the folder it recorded, and a
crash leaves at most a temporary folder (removed by the next save in that place once its process
is gone).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from infdist_core.data import atomic
from infdist_core.data.atomic import atomic_path, remove_orphans
from infdist_core.model.tokenization import TokenizedSample


class ArtefactMissing(FileNotFoundError):
    """An upstream artefact has not been materialised (or was written by an incompatible run)."""


def partition_dir(root: Path, asset: str, model: str, task: str | None = None) -> Path:
    p = root / "assets" / asset / model
    return p / task if task else p


def write_table(table: pa.Table, path: Path, meta: dict[str, Any]) -> None:
    """Atomically write ``table`` and its sidecar; the sidecar is written last (it marks completeness).
    An older version's sidecar is removed before the new table replaces the old one, so a process
    killed between the two renames leaves a table without a sidecar ("not materialised"), never a
    new table described by the old sidecar. Temporary files that killed runs left for this path
    are removed first (``atomic.remove_orphans``). Two writers of the same path (two runs of one
    partition) take turns (``artefact_lock``), so a sidecar always describes the table beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with artefact_lock(path):
        remove_orphans(path.parent, path.name)
        remove_orphans(path.parent, sidecar(path).name)
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, compression="zstd")
            sidecar(path).unlink(missing_ok=True)
        atomic.write_text(sidecar(path), json.dumps(meta, indent=1, sort_keys=True, default=str))


def artefact_lock(path: Path):
    """The lock one writer of ``path`` and its sidecar holds (``.<name>.lock`` beside it)."""
    return atomic.exclusive(path.with_name(f".{path.name}.lock"))


def fingerprint(path: Path) -> str:
    """What tells that an input file (a pool, a target or evaluation file) or folder (a model)
    changed, without reading it whole: per file its name, size, first and last MiB. Survives a copy
    (no modification times); an edit in the middle of a large file that keeps its size is missed.
    Within a process the bytes are read again only when a file's size or modification time moved
    (every step checks the inputs of each upstream it loads)."""
    path = Path(path)
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    stats = tuple((str(f), st.st_size, st.st_mtime_ns, st.st_ino) for f in files for st in (f.stat(),))
    return _fingerprint(str(path), stats)


@lru_cache(maxsize=256)
def _fingerprint(root: str, stats: tuple[tuple[str, int, int, int], ...]) -> str:
    path = Path(root)
    h = hashlib.sha256()
    for name, size, _, _ in stats:
        f = Path(name)
        h.update(f"{f.relative_to(path) if path.is_dir() else f.name}\0{size}\0".encode())
        with f.open("rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), 2)
                h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


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
    """Save model and tokenizer (and whatever ``also`` writes into the folder) under a temporary
    name unique to this process, then rename it to ``final`` in one step, and return the size and
    SHA-256 (``folder_digest``) of ``final``. ``final`` must address the content (settings or
    training inputs): an existing ``final`` is complete and equal, so it is kept and ours dropped
    (a concurrent run of the same content wins the rename)."""
    remove_orphans(final.parent, final.name)
    with atomic_path(final, folder=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if also is not None:
            also(tmp)
    return folder_digest(final)


def remove_other_versions(keep: Path) -> list[Path]:
    """Delete the sibling checkpoint folders of ``keep`` (other settings' versions), once the
    sidecar that pointed at them has been replaced by one pointing at ``keep``."""
    gone = []
    for d in keep.parent.iterdir():
        if d != keep and d.is_dir() and not d.name.startswith("."):
            shutil.rmtree(d, ignore_errors=True)
            gone.append(d)
    return gone


def verify_checkpoint(path: Path, size: int) -> None:
    """Refuse a recorded checkpoint folder that is missing or whose total size changed since it
    was recorded (the full SHA-256 is recorded too; hashing gigabytes on every load is not done)."""
    if not path.is_dir():
        raise ArtefactMissing(f"{path}: the recorded checkpoint folder is missing; re-materialise the asset that made it")
    now = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    if now != size:
        raise ArtefactMissing(f"{path}: {now} bytes where {size} were recorded: the checkpoint changed after it was "
                              "written; re-materialise the asset that made it")
