"""Instruction samples from local files, normalised to chat ``messages``.

Accepted containers: JSONL (``.jsonl``/``.json`` lines), Parquet, or a ``datasets`` folder saved
with ``save_to_disk``. Accepted row shapes (first match wins):

- Tulu:     ``{"messages": [{"role", "content"}, ...]}``
- ShareGPT: ``{"conversations": [{"from", "value"}, ...]}``
- Alpaca:   ``{"instruction", "input"?, "output"}``
- prompt/completion: ``{"prompt", "completion"}``

Every record becomes ``{"id": str, "messages": [...]}``; a row that fits no shape raises a
``RecordError`` naming the file, the row and the fields it has.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

ROLE_ALIASES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
                "bard": "assistant", "bing": "assistant", "model": "assistant", "system": "system"}


class RecordError(ValueError):
    """A file or row that cannot be read as instruction samples."""


def _messages_from_row(row: dict[str, Any]) -> list[dict[str, str]] | None:
    if isinstance(row.get("messages"), list):
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in row["messages"]]
    if isinstance(row.get("conversations"), list):
        out = []
        for turn in row["conversations"]:
            role = ROLE_ALIASES.get(str(turn.get("from", "")).lower())
            if role is None:
                raise KeyError(f"unknown speaker {turn.get('from')!r}")
            out.append({"role": role, "content": str(turn.get("value", ""))})
        return out
    if "instruction" in row and "output" in row:
        prompt = str(row["instruction"])
        if row.get("input"):
            prompt += "\n\n" + str(row["input"])
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": str(row["output"])}]
    if "prompt" in row and "completion" in row:
        return [{"role": "user", "content": str(row["prompt"])}, {"role": "assistant", "content": str(row["completion"])}]
    return None


def normalise(row: dict[str, Any], source: str, index: int) -> dict[str, Any]:
    """One row as ``{"id", "messages"}``; raises ``RecordError`` naming ``source`` and ``index``."""
    if not isinstance(row, dict):
        raise RecordError(f"{source}: row {index} is a {type(row).__name__}, expected an object")
    try:
        messages = _messages_from_row(row)
    except (KeyError, TypeError) as err:
        raise RecordError(f"{source}: row {index}: malformed turns ({err})") from err
    if messages is None:
        raise RecordError(
            f"{source}: row {index} has fields {sorted(row)}; expected one of messages, conversations, "
            "instruction/output, prompt/completion"
        )
    rid = row.get("id", row.get("task_id", index))
    return {"id": str(rid), "messages": messages}


def _iter_rows(path: Path) -> Iterator[dict[str, Any]]:
    if path.is_dir():
        import datasets

        yield from datasets.load_from_disk(str(path))
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches():
            yield from batch.to_pylist()
    elif path.suffix in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as err:
                    raise RecordError(f"{path}: line {lineno} is not valid JSON ({err.msg})") from err
    else:
        raise RecordError(f"{path}: unsupported file type; use .jsonl, .parquet or a datasets folder")


def load_records(path: str | Path, limit: int | None = None) -> list[dict[str, Any]]:
    """Read and normalise instruction samples from ``path`` (see module docstring)."""
    path = Path(path)
    if not path.exists():
        raise RecordError(f"{path}: no such file or folder")
    out = []
    for i, row in enumerate(_iter_rows(path)):
        if limit is not None and i >= limit:
            break
        out.append(normalise(row, str(path), i))
    if not out:
        raise RecordError(f"{path}: contains no records")
    ids = [r["id"] for r in out]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise RecordError(f"{path}: duplicate record id {dup!r}; ids must be unique")
    return out


def write_jsonl(records: list[dict[str, Any]], path: str | Path) -> None:
    """Write records atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)
