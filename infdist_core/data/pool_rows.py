"""A pool file as memory-mapped Arrow rows, read through ``datasets``: only the rows a sample
keeps are parsed and normalised.

``records.load_records`` turns every row into a Python dict, which is fine for target and
evaluation files (thousands of rows) but not for a pool (Tulu V2: 5.8 million rows, several GB
of dicts to keep 200k). Here the file is converted once into an Arrow cache (``datasets``, keyed
by the file's path, size and modification time, so a second run maps it without reading the
source) and rows are fetched by position:

- JSONL: ``Dataset.from_text`` keeps every line as a string, blank ones included, so row ``i``
  is line ``i + 1`` and errors name the line exactly as ``load_records`` does. The JSON of a row
  is parsed only when the row is fetched; a JSON loader that infers one Arrow schema for the
  whole file would refuse pools whose rows mix shapes (Tulu ``messages`` next to Alpaca
  ``instruction``), which ``records`` accepts.
- Parquet: ``Dataset.from_parquet``; a ``datasets`` folder: ``load_from_disk`` (already mapped).

Differences from ``load_records``, by design: a malformed row or a duplicate id is reported
when a sample reaches it, not when the file is opened (a bad row the sample never touches does
not stop the run), and the blank lines of a JSONL file are located with one vectorised pass over
the column's offsets (an int64 per record, the only memory that grows with the file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from infdist_core.data.records import RecordError, jsonl_rows, normalise, parse_line

SHORT_LINE = 64
"""JSONL lines shorter than this are checked for being blank (whitespace only)."""


def _quiet_datasets():
    """``datasets`` with its progress bars off (they flood a run's log with one line per chunk)."""
    import datasets

    datasets.disable_progress_bars()
    return datasets


def _jsonl_error(path: Path, err: Exception) -> RecordError:
    """The line-level reason a JSONL file failed to convert (a non-UTF-8 byte), found by
    ``records.jsonl_rows``; the conversion's own error when that finds none."""
    try:
        for _ in jsonl_rows(path):
            pass
    except RecordError as found:
        return found
    return RecordError(f"{path}: cannot be read as JSONL ({type(err).__name__}: {err})")


class PoolRows:
    """Normalised records of a pool file by position (``len``, ``rows[i]``), mapped, not loaded.

    ``rows[i]`` is ``records.normalise``'s ``{"id", "messages"}`` for the ``i``-th record (0-based,
    blank JSONL lines skipped, as ``load_records`` counts); it raises ``RecordError`` naming the
    file and line (or row) for a malformed row, and for an id already returned for another row."""

    def __init__(self, path: str | Path, cache_dir: str | Path | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise RecordError(f"{self.path}: no such file or folder")
        datasets = _quiet_datasets()
        cache = str(cache_dir) if cache_dir is not None else None
        self._index: np.ndarray | None = None  # JSONL: the line of each record (blank lines skipped)
        if self.path.is_dir():
            try:
                self._ds = datasets.load_from_disk(str(self.path))
            except (FileNotFoundError, ValueError) as err:
                raise RecordError(f"{self.path}: not a datasets folder saved with save_to_disk ({err})") from err
        elif self.path.suffix == ".parquet":
            try:
                self._ds = datasets.Dataset.from_parquet(str(self.path), cache_dir=cache)
            except Exception as err:  # pyarrow's and datasets' many error types: name the file instead
                raise RecordError(f"{self.path}: cannot be read as Parquet ({type(err).__name__}: {err})") from err
        elif self.path.suffix in (".jsonl", ".json"):
            try:
                self._ds = datasets.Dataset.from_text(str(self.path), cache_dir=cache, keep_linebreaks=False)
            except Exception as err:  # a decode error deep inside the builder: find the line
                raise _jsonl_error(self.path, err) from err
            self._index = self._non_blank_lines()
        else:
            raise RecordError(f"{self.path}: unsupported file type; use .jsonl, .parquet or a datasets folder")
        if len(self) == 0:
            raise RecordError(f"{self.path}: contains no records")
        self._seen: dict[str, tuple[int, str]] = {}

    def _non_blank_lines(self) -> np.ndarray:
        """0-based line numbers of the lines that hold something besides whitespace. Read from the
        column's offsets (line lengths) without touching its text, except for lines shorter than
        ``SHORT_LINE`` characters, which are checked for whitespace: the mapped file stays out of
        memory. (A line of ``SHORT_LINE`` or more whitespace characters is therefore read as a
        record, and refused as invalid JSON if the sample reaches it; ``load_records`` skips it.)"""
        import pyarrow.compute as pc

        column = self._ds.data.column("text")
        out, start = [], 0
        for chunk in column.chunks:
            lengths = pc.binary_length(chunk).to_numpy(zero_copy_only=False)
            keep = lengths > 0
            for j in np.flatnonzero(keep & (lengths < SHORT_LINE)):
                keep[j] = bool(chunk[int(j)].as_py().strip())
            out.append(np.flatnonzero(keep) + start)
            start += len(chunk)
        return np.concatenate(out).astype(np.int64) if out else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self._index) if self._index is not None else len(self._ds)

    def _raw(self, i: int) -> tuple[str, Any]:
        if self._index is not None:
            line = int(self._index[i]) + 1
            return f"line {line}", parse_line(self.path, line, self._ds[line - 1]["text"])
        return f"row {i + 1}", self._ds[i]

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not 0 <= i < len(self):
            raise IndexError(f"{self.path}: record {i} of {len(self)}")
        where, row = self._raw(i)
        rec = normalise(row, str(self.path), i, where)
        first, at = self._seen.setdefault(rec["id"], (i, where))
        if first != i:
            raise RecordError(f"{self.path}: duplicate record id {rec['id']!r} ({at} and {where}); ids must be unique")
        return rec
