"""A run killed with SIGKILL at the worst moment of a checkpoint swap loses nothing finished and
leaves no sidecar pointing at the wrong folder; the next save in that place cleans up after it."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL_DIR = ROOT / "data" / "models" / "smollm2-135m"

CHILD = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from infdist_core.model.modeling import load_tokenizer, tiny_llama
    from infdist_assets.store import storage

    final, ready, stage = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    tok = load_tokenizer(sys.argv[4])
    model = tiny_llama(len(tok), seed=1, n_layers=1, hidden=16, pad_token_id=tok.pad_token_id)

    def wait(_folder=None):
        ready.write_text("x")
        time.sleep(60)

    if stage == "inside":  # killed while the new folder is being written
        storage.save_checkpoint(model, tok, final, also=wait)
    else:  # killed after the new folder is in place, before its sidecar is written
        storage.save_checkpoint(model, tok, final)
        wait()
""")


def _kill_at(tmp_path, final, stage):
    ready = tmp_path / f"ready-{stage}"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(final), str(ready), stage, str(MODEL_DIR)],
                            cwd=ROOT)
    deadline = time.time() + 120
    while not ready.exists():
        assert proc.poll() is None, "the child died before the point where it is to be killed"
        assert time.time() < deadline, "the child never reached the point where it is to be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc.pid


def _old_version(tmp_path, tokenizer):
    """A finished checkpoint with its sidecar, as a completed earlier run leaves them."""
    import pyarrow as pa

    from infdist_assets.store import storage
    from infdist_core.model.modeling import tiny_llama

    model = tiny_llama(len(tokenizer), seed=0, n_layers=1, hidden=16, pad_token_id=tokenizer.pad_token_id)
    old = tmp_path / "checkpoints" / "warmup_checkpoint" / "m" / "settings-a"
    size, digest = storage.save_checkpoint(model, tokenizer, old)
    table = tmp_path / "assets" / "warmup_checkpoint" / "m" / "data.parquet"
    storage.write_table(pa.table({"model_path": [str(old)]}), table, {"model_path": str(old), "bytes": size, "sha256": digest})
    return old, table


def test_kill_while_writing_a_checkpoint_leaves_the_finished_one_and_its_sidecar(tmp_path, tokenizer):
    from infdist_assets.store import storage
    from infdist_core.model.modeling import tiny_llama

    old, table = _old_version(tmp_path, tokenizer)
    new = old.with_name("settings-b")
    pid = _kill_at(tmp_path, new, "inside")
    meta = storage.read_meta(table)
    assert meta["model_path"] == str(old) and not new.exists()
    storage.verify_checkpoint(old, meta["bytes"])  # intact, nothing half-written is visible
    orphans = list(old.parent.glob(".settings-b.*.tmp"))
    assert [o.name.split(".")[2] for o in orphans] == [str(pid)], "the killed run's temporary folder names its process"
    model = tiny_llama(len(tokenizer), seed=1, n_layers=1, hidden=16, pad_token_id=tokenizer.pad_token_id)
    storage.save_checkpoint(model, tokenizer, new)  # the next save in that place removes the orphan
    assert new.is_dir() and not list(old.parent.glob(".*.tmp"))


def test_kill_between_the_folder_and_its_sidecar_never_pairs_them_wrongly(tmp_path, tokenizer):
    """The old replace-in-place swap could pair a new checkpoint with the old sidecar; versions
    live side by side now, and the sidecar always points at the folder it recorded."""
    from infdist_assets.store import storage

    old, table = _old_version(tmp_path, tokenizer)
    before = json.loads(storage.sidecar(table).read_text())
    new = old.with_name("settings-b")
    _kill_at(tmp_path, new, "after")
    assert new.is_dir(), "the new version was complete when the run died"
    assert json.loads(storage.sidecar(table).read_text()) == before
    storage.verify_checkpoint(old, before["bytes"])
    with pytest.raises(storage.ArtefactMissing, match="bytes where"):
        storage.verify_checkpoint(new, before["bytes"] + 1)
    assert storage.remove_other_versions(old) == [new] and not new.exists()


CATALOG_CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import duckdb

    con = duckdb.connect(sys.argv[1])  # read-write, against the contract
    con.execute("CREATE TABLE mine AS SELECT 42 AS x")
    Path(sys.argv[2]).write_text("x")
    time.sleep(60)
""")


def test_a_read_write_session_killed_around_a_catalog_swap_leaves_it_readable(tmp_path):
    """A read-write session's write-ahead log used to outlive the file it belonged to and make the
    swapped-in catalog unreadable ("WAL does not match"). The swap removes it; the session's own
    table is lost (the README's DuckDB contract: open the catalog read-only)."""
    from datetime import datetime, timezone

    from infdist_assets.store import catalog

    now = datetime.now(timezone.utc)
    catalog.write_lineage(tmp_path, {"asset": "a", "partition": "m", "run_id": "r1", "started_at": now, "finished_at": now,
                                     "row_count": 1})
    path = tmp_path / "infdist.duckdb"
    catalog.rebuild(tmp_path, path, ["a"])
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", CATALOG_CHILD, str(path), str(ready)])
    deadline = time.time() + 60
    while not ready.exists():
        assert proc.poll() is None and time.time() < deadline, "the session never wrote"
        time.sleep(0.05)
    assert path.with_name(path.name + ".wal").exists(), "the session's write sits in the write-ahead log"
    catalog.rebuild(tmp_path, path, ["a"])  # a run finishes meanwhile
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    con = catalog.connect_readonly(path)
    try:
        assert con.execute("SELECT run_id FROM lineage").fetchall() == [("r1",)]
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        assert "mine" not in tables
    finally:
        con.close()


RUN_CHILD = r"""
import sys, time
from pathlib import Path
import dagster as dg
from infdist_assets.store.run_liveness import record_worker

ready = Path(sys.argv[1])

@dg.asset
def slow(context: dg.AssetExecutionContext):
    record_worker(context)
    ready.write_text(context.run.run_id)
    time.sleep(600)

with dg.DagsterInstance.get() as instance:
    dg.materialize([slow], instance=instance)
"""


def test_a_run_whose_worker_is_killed_is_marked_failed_not_left_started(tmp_path, monkeypatch):
    """kill -9 of a run worker: Dagster alone leaves the run STARTED forever; reap_dead_runs fails
    it (and leaves a live run alone)."""
    import dagster as dg

    from infdist_assets.store.run_liveness import WORKER_TAG, reap_dead_runs

    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", RUN_CHILD, str(ready)], env={**os.environ, "DAGSTER_HOME": str(home)})
    try:
        deadline = time.time() + 120
        while not ready.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert ready.exists(), "the child run never reached its step"
        run_id = ready.read_text()
        with dg.DagsterInstance.get() as instance:
            assert reap_dead_runs(instance) == [], "a live run must not be reaped"
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
            assert instance.get_run_by_id(run_id).tags[WORKER_TAG].split(":")[1] == str(proc.pid)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED, "Dagster alone leaves it STARTED"
            assert reap_dead_runs(instance) == [run_id]
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE
            assert reap_dead_runs(instance) == []
    finally:
        if proc.poll() is None:
            proc.kill()


FINISHER = r"""
import sys, time
from pathlib import Path
import pyarrow as pa
from infdist_assets.store import catalog, storage

root, i, n = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
keys = [f"asset{j}" for j in range(n)]
while time.time() < float(sys.argv[4]):  # start together
    time.sleep(0.001)
for r in range(5):  # five materialisations each, finishing as steps do: artefact, lineage row, catalog refresh
    storage.write_table(pa.table({"x": [i, r]}), storage.partition_dir(root, f"asset{i}", "m") / f"r{r}" / "data.parquet",
                        {"run_id": f"{i}-{r}"})
    catalog.write_lineage(root, {"asset": f"asset{i}", "partition": "m", "run_id": f"{i}-{r}", "variant": "",
                                 "code_version": "", "config_hash": "", "upstream": [], "row_count": 2, "metrics": {}})
    catalog.rebuild(root, root / "infdist.duckdb", keys)
"""


def test_steps_finishing_together_lose_no_lineage_row_and_no_view(tmp_path):
    """Six processes (six parallel steps) each write artefacts and lineage rows and refresh the
    catalog at the same moment: every row is in the lineage view, every asset has its view, and
    the catalog opens."""
    n = 6
    start = time.time() + 3
    procs = [subprocess.Popen([sys.executable, "-c", FINISHER, str(tmp_path), str(i), str(n), str(start)])
             for i in range(n)]
    assert [p.wait(180) for p in procs] == [0] * n
    from infdist_assets.store.catalog import connect_readonly

    con = connect_readonly(tmp_path / "infdist.duckdb")
    try:
        assert con.execute("SELECT count(*) FROM lineage").fetchone()[0] == 5 * n
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        assert {f"asset_asset{i}" for i in range(n)} <= views
        assert con.execute("SELECT count(*) FROM asset_asset0").fetchone()[0] == 10
    finally:
        con.close()
