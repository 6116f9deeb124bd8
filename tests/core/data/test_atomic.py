"""The one atomic-write helper every writer uses (Parquet, sidecars, lineage, the catalog,
checkpoints, JSONL, Adam state, downloads)."""

import os
import subprocess
import sys

import pytest

from infdist_core.data.atomic import atomic_path, remove_orphans, write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.txt"
    write_text(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    write_text(path, "new")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_a_folder_is_never_replaced_the_first_complete_one_wins(tmp_path):
    final = tmp_path / "ckpt"
    with atomic_path(final, folder=True) as tmp:
        tmp.mkdir()
        (tmp / "w").write_text("first")
    with atomic_path(final, folder=True) as tmp:  # a concurrent writer of the same content
        tmp.mkdir()
        (tmp / "w").write_text("second")
    assert (final / "w").read_text() == "first" and sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_orphans_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / f".data.parquet.{dead_pid}.ab12.tmp").write_text("x")
    (tmp_path / f".data.parquet.{os.getpid()}.cd34.tmp").write_text("x")
    (tmp_path / f".ckpt.{dead_pid}.ef56.tmp").mkdir()
    removed = remove_orphans(tmp_path, "data.parquet") + remove_orphans(tmp_path, "ckpt")
    assert sorted(p.name for p in removed) == sorted([f".data.parquet.{dead_pid}.ab12.tmp", f".ckpt.{dead_pid}.ef56.tmp"])
    assert (tmp_path / f".data.parquet.{os.getpid()}.cd34.tmp").exists(), "a live writer's temporary is kept"


def test_a_full_disk_names_the_path_and_sizes_and_keeps_the_old_content(tmp_path):
    """ENOSPC while writing: the error names the file, what was written and what is free; the old
    content stays, no temporary is left, and the next write (space freed) succeeds."""
    import errno

    import pytest

    from infdist_core.data.atomic import atomic_path

    path = tmp_path / "data.parquet"
    path.write_text("old")
    with pytest.raises(OSError) as err:
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"x" * 1000)
            raise OSError(errno.ENOSPC, "No space left on device")
    msg = str(err.value)
    assert err.value.errno == errno.ENOSPC and str(path) in msg and "1,000 bytes were written" in msg and "bytes are free" in msg
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["data.parquet"]
    with atomic_path(path) as tmp:
        tmp.write_text("new")
    assert path.read_text() == "new"


def _hold_then_write(path, started, release):
    import pyarrow as pa

    from infdist_assets.store import storage

    with storage.artefact_lock(path):
        started.set()
        release.wait(30)
        storage.write_table(pa.table({"run_id": ["A"]}), path, {"run_id": "A"})


def _write_b(path):
    import pyarrow as pa

    from infdist_assets.store import storage

    storage.write_table(pa.table({"run_id": ["B"]}), path, {"run_id": "B"})


def test_two_writers_of_one_artefact_take_turns(tmp_path):
    """A second run writing the same artefact waits for the first to finish its table and sidecar,
    so the sidecar always describes the table beside it (never A's sidecar over B's table)."""
    import json
    import multiprocessing as mp
    import time

    import pyarrow.parquet as pq

    from infdist_assets.store import storage

    path = tmp_path / "data.parquet"
    ctx = mp.get_context("spawn")
    started, release = ctx.Event(), ctx.Event()
    a = ctx.Process(target=_hold_then_write, args=(path, started, release))
    a.start()
    assert started.wait(60)
    b = ctx.Process(target=_write_b, args=(path,))
    b.start()
    time.sleep(2.0)
    assert b.is_alive() and not path.exists(), "the second writer did not wait for the first"
    release.set()
    a.join(60)
    b.join(60)
    assert a.exitcode == 0 and b.exitcode == 0
    meta = json.loads(storage.sidecar(path).read_text())
    assert pq.read_table(path).column("run_id")[0].as_py() == meta["run_id"] == "B", "B waited, then wrote both files"
