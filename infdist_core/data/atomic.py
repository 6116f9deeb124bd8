"""One way to write a file or a folder so that no reader ever sees it half-written: write under a
temporary sibling name unique to the writing process (``.<name>.<pid>.<random>.tmp``), then
rename it into place in one step. A failure removes the temporary; a killed process leaves it,
and ``remove_orphans`` deletes those whose process is gone.

Files are replaced atomically (``os.replace``). A folder is never replaced: if the destination
exists when the rename comes (a concurrent writer of the same content won), ours is dropped, so
callers name folders by what they contain.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _remove(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def _size(p: Path) -> int:
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size if p.exists() else 0


@contextmanager
def atomic_path(path: str | Path, folder: bool = False) -> Iterator[Path]:
    """Yield a temporary name to write ``path``'s content to (a file, or with ``folder`` a folder
    the block creates); on success it becomes ``path``. A full disk (``ENOSPC``) is re-raised
    naming ``path``, how much had been written when the disk filled and how much is free; the
    temporary is removed, and ``path`` keeps its previous content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        try:
            yield tmp
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            written, free = _size(tmp), shutil.disk_usage(path.parent).free
            raise OSError(errno.ENOSPC, f"no space left on the device writing {path}: {written:,} bytes were written "
                                        f"when it filled, {free:,} bytes are free there now; free space (or point the "
                                        f"data root elsewhere) and run again: nothing half-written is kept") from err
        if not folder:
            os.replace(tmp, path)
        else:
            try:
                tmp.rename(path)
            except OSError:
                if not path.is_dir():
                    raise
    finally:
        if tmp.exists():
            _remove(tmp)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(parent: Path, name: str) -> list[Path]:
    """Remove the temporaries of ``name`` in ``parent`` left by processes that are gone (a killed
    run). Only this host's processes are known: on a volume several hosts share, clean when no run
    is active (README, "What infdist guarantees")."""
    removed = []
    for tmp in parent.glob(f".{name}.*.tmp"):
        try:
            pid = int(tmp.name[len(name) + 2 :].split(".")[0])
        except ValueError:
            continue
        if not _alive(pid):
            _remove(tmp)
            removed.append(tmp)
    return removed


@contextmanager
def exclusive(lock: str | Path) -> Iterator[None]:
    """Hold an exclusive POSIX lock on the file ``lock`` (created if needed) for the block: one
    holder at a time across processes, and across hosts on NFSv4. Released when the block ends or
    the process dies."""
    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.lockf(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(fh, fcntl.LOCK_UN)
