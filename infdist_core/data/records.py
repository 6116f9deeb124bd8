"""Instruction samples from local files, normalised to chat ``messages``.

Accepted containers: JSONL (``.jsonl``/``.json`` lines), Parquet, or a ``datasets`` folder saved
with ``save_to_disk``. Accepted row shapes (first match wins):

- Tulu:     ``{"messages": [{"role", "content"}, ...]}``
- ShareGPT: ``{"conversations": [{"from", "value"}, ...]}``
- Alpaca:   ``{"instruction", "input"?, "output"}``
- prompt/completion: ``{"prompt", "completion"}``

Every record becomes ``{"id": str, "messages": [...]}``; a row that fits no shape, or whose turn
text is missing (``null``) or not a string, raises a ``RecordError`` naming the file, the line
(JSONL, 1-based, blank lines counted) or row (Parquet and datasets, 1-based) and the field. An
empty assistant reply is valid here; tokenisation excludes such a sample with the reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

from infdist_core.data.atomic import atomic_path

ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
                "bard": "assistant", "bing": "assistant", "model": "assistant", "system": "system"}


class RecordError(ValueError):
    """A file or row that cannot be read as instruction samples."""


def _text(value: Any, field: str) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        raise TypeError(f"{field} is null")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # a number as text (e.g. an answer of 42)
    raise TypeError(f"{field} is a {type(value).__name__}, expected text")


def _messages_from_row(row: dict[str, Any]) -> list[dict[str, str]] | None:
    if isinstance(row.get("messages"), list):
        return [{"role": str(m["role"]), "content": _text(m["content"], f"messages[{i}].content")}
                for i, m in enumerate(row["messages"])]
    if isinstance(row.get("conversations"), list):
        out = []
        for i, turn in enumerate(row["conversations"]):
            role = ROLE_ALIASES.get(str(turn.get("from", "")).lower())
            if role is None:
                raise KeyError(f"conversations[{i}]: unknown speaker {turn.get('from')!r}")
            out.append({"role": role, "content": _text(turn.get("value"), f"conversations[{i}].value")})
        return out
    if row.get("instruction") is not None:  # (Parquet and datasets rows carry every column, None where absent)
        prompt = _text(row["instruction"], "instruction")
        if row.get("input"):
            prompt += "\n\n" + _text(row["input"], "input")
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": _text(row.get("output"), "output")}]
    if row.get("prompt") is not None:
        return [{"role": "user", "content": _text(row["prompt"], "prompt")},
                {"role": "assistant", "content": _text(row.get("completion"), "completion")}]
    return None


def normalise(row: dict[str, Any], source: str, index: int, where: str = "") -> dict[str, Any]:
    """One row as ``{"id", "messages"}``; raises ``RecordError`` naming ``source`` and ``where``
    (e.g. ``"line 12"``; default ``row <index + 1>``). Without an ``id`` field the id is ``index``
    (0-based position among the records)."""
    at = where or f"row {index + 1}"
    if not isinstance(row, dict):
        raise RecordError(f"{source}: {at} is a {type(row).__name__}, expected an object")
    try:
        messages = _messages_from_row(row)
    except (KeyError, TypeError) as err:
        raise RecordError(f"{source}: {at}: malformed turns ({str(err).strip(chr(34) + chr(39))})") from err
    if messages is None:
        raise RecordError(
            f"{source}: {at} has fields {sorted(row)}; expected one of messages, conversations, "
            "instruction/output, prompt/completion"
        )
    rid = row.get("id", row.get("task_id", index))
    return {"id": str(rid), "messages": messages}


def jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(1-based line number, parsed value) of every non-blank line of a JSONL file; a line that is
    not UTF-8 or not JSON raises ``RecordError`` naming the file, line and column."""
    try:
        f = path.open("rb")
    except OSError as err:
        raise RecordError(f"{path}: cannot read ({err.strerror})") from err
    with f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise RecordError(f"{path}: line {lineno} is not UTF-8 (byte {raw[err.start]:#04x} at column "
                                  f"{err.start + 1}); re-encode the file as UTF-8") from err
            if not line.strip():
                continue
            yield lineno, parse_line(path, lineno, line)


def parse_line(path: Path | str, lineno: int, line: str) -> Any:
    """One JSONL line as a value; ``RecordError`` naming the file, line and column if it is not JSON."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise RecordError(f"{path}: line {lineno} is not valid JSON ({err.msg} at column {err.colno})") from err


def _iter_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, row) pairs: ``"line N"`` for JSONL (1-based, blank lines counted), ``"row N"`` else."""
    if path.is_dir():
        import datasets

        for i, row in enumerate(datasets.load_from_disk(str(path)), 1):
            yield f"row {i}", row
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        i = 0
        for batch in pq.ParquetFile(path).iter_batches():
            for row in batch.to_pylist():
                i += 1
                yield f"row {i}", row
    elif path.suffix in (".jsonl", ".json"):
        for lineno, row in jsonl_rows(path):
            yield f"line {lineno}", row
    else:
        raise RecordError(f"{path}: unsupported file type; use .jsonl, .parquet or a datasets folder")


def load_records(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Read and normalise instruction samples from ``path`` (see module docstring)."""
    path = Path(path)
    if not path.exists():
        raise RecordError(f"{path}: no such file or folder")
    out = []
    for i, (where, row) in enumerate(_iter_rows(path)):
        if limit is not None and i >= limit:
            break
        out.append(normalise(row, str(path), i, where))
    if not out:
        raise RecordError(f"{path}: contains no records")
    ids = [r["id"] for r in out]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise RecordError(f"{path}: duplicate record id {dup!r}; ids must be unique")
    return out


def write_jsonl(records: list[dict[str, Any]], path: str | Path) -> Path:
    """Write records atomically (temporary name, then rename); returns the path."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return Path(path)
