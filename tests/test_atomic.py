"""The one atomic-write helper every writer uses (Parquet, sidecars, lineage, the catalog,
checkpoints, JSONL, Adam state, downloads)."""

import os
import subprocess
import sys

import pytest

from infdist_core.atomic import atomic_path, remove_orphans, write_text


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
