"""Fault injection for the asset graph: kill the run (SIGKILL) or fail a write (ENOSPC) at the n-th
file-system write of the run, then resume as a user would, and compare with an uninterrupted run.

A write is what Python's audit hooks see under the data root (Dagster's own instance folder
``dagster_home`` aside): an ``open`` for writing, a rename or replace, a removal. Native writers
(Parquet, safetensors, DuckDB) write only under temporary names, which a rename then publishes, so
"before the n-th write" covers every state the data root passes through. The hook runs before
the operation: crash point n is the moment just before the n-th write.

A run here is the demo's graph on the tiny test world: ``pool_side_job`` for model ``tiny``, then
``selection_job`` for ``tiny x math``, in one process (in-process executor), on an instance stored
under the data root. Resuming is what the UI offers: the dead run is marked failed
(``reap_dead_runs``) and re-executed from failure; a job that never started is launched.

``tests/assets/test_faults.py`` runs a seeded sample of crash points; ``benchmarks/bench_faults.py`` all.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = dict(pool_size=24, max_length=48, n_landmarks=8, k=4, projection_dim=128, embedding_dim=32, warmup_samples=6,
                warmup_steps=2, adam_aware=False, train_epochs=2.0, train_micro_batch=1, train_grad_accum=1,
                train_save_steps=2, eval_subset=2, heldout_rows=3, task_metrics=False, kernel_search=False,
                embedding="grad-last:1+grad-head")
"""Small enough for a run in seconds; Trainer checkpoints every 2 of 8 fine-tuning steps."""

JOBS = (("pool_side_job", {"dagster/partition": "tiny"}),
        ("selection_job", {"dagster/partition": "tiny|math", "dagster/partition/model": "tiny", "dagster/partition/task": "math"}))
"""The two jobs and their partition tags (as the UI's launchpad sets them)."""
TEMPORARY = re.compile(r"^\..+\.(\d+)\.[0-9a-f]{8}\.tmp$")
NOT_COMPARED = re.compile(r"(\.meta\.json|\.lock|\.svg)$|(^|/)history/")
"""Sidecars (run ids, times), lock files, plots and the selection history (named by time) are not
results; everything else must be equal."""
BOOKKEEPING = ("run_id", "selected_at", "seconds_per_sample")
"""Columns of result tables that name the run that made them or time it: not compared."""


# ---- in the run's process ---------------------------------------------------------------------

def _writes(event: str, args: tuple) -> str | None:
    """The path of a write event, or None."""
    if event == "open":
        path, mode, flags = args
        if isinstance(path, (str, Path)) and flags is not None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            return str(path)
        return None
    if event in ("os.rename", "os.remove", "shutil.rmtree", "os.rmdir") and args and isinstance(args[0], (str, Path)):
        return str(args[0])
    return None


def install_hook(data: Path, fault: str, at: int, log: Path) -> None:
    """Count writes under ``data`` and, at the ``at``-th, ``kill`` the process, fail the write with
    ``enospc``, or ``pause:<marker>`` (create the marker file, wait until it is removed); log each
    write (and each read of another process's temporary) to ``log``."""
    data_s, home = str(data) + os.sep, str(data / "dagster_home") + os.sep
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    count = [0]

    def hook(event: str, args: tuple) -> None:
        if event not in ("open", "os.rename", "os.remove", "shutil.rmtree", "os.rmdir"):
            return
        path = _writes(event, args)
        if path is None:
            # a read: never of another process's temporary (opening its folder to remove it is no read)
            if event == "open" and isinstance(args[0], str) and not os.path.isdir(args[0]):
                for part in Path(args[0]).parts:
                    m = TEMPORARY.match(part)
                    if m and int(m.group(1)) != os.getpid() and args[0].startswith(data_s):
                        os.write(fd, json.dumps({"read_tmp": args[0]}).encode() + b"\n")
            return
        path = os.path.abspath(path)
        if not path.startswith(data_s) or path.startswith(home):
            return
        count[0] += 1
        os.write(fd, json.dumps({"n": count[0], "event": event, "path": path[len(data_s):]}).encode() + b"\n")
        if count[0] == at:
            if fault == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if fault.startswith("pause:"):  # hold here until the parent removes the marker it is told of
                marker = fault[len("pause:"):]
                os.close(os.open(marker, os.O_WRONLY | os.O_CREAT))
                while os.path.exists(marker):
                    time.sleep(0.05)
                return
            raise OSError(errno.ENOSPC, "No space left on device (injected)", path)

    sys.addaudithook(hook)


def drive(data: Path, only: tuple[str, ...] = ()) -> None:
    """Bring both jobs to success: skip a succeeded one, re-execute a failed one from failure
    (after marking dead runs failed), launch one that never ran. Prints one JSON line per job."""
    import dagster as dg

    from infdist_assets import definitions
    from infdist_assets.store.run_liveness import reap_dead_runs

    from infdist_core.config import nested

    config = {"resources": {"settings": {"config": nested(SETTINGS)}}, "execution": {"config": {"in_process": {}}}}
    with dg.DagsterInstance.get() as instance:
        reap_dead_runs(instance)
        for name, tags in JOBS:
            if only and name not in only:
                continue
            job = dg.reconstructable(getattr(definitions, name))
            runs = instance.get_runs(dg.RunsFilter(job_name=name, tags=tags), limit=1)
            if runs and runs[0].status == dg.DagsterRunStatus.SUCCESS:
                continue
            if runs and runs[0].status == dg.DagsterRunStatus.FAILURE:
                # the partition tags as the UI's "re-execute from failure" carries them (execute_job does not)
                res = dg.execute_job(job, instance, run_config=config, tags=tags, raise_on_error=False,
                                     reexecution_options=dg.ReexecutionOptions.from_failure(runs[0].run_id, instance))
            else:
                res = dg.execute_job(job, instance, run_config=config, tags=tags, raise_on_error=False)
            errors = [e.message for e in res.all_events if e.is_step_failure]
            print(json.dumps({"job": name, "run_id": res.run_id, "success": res.success, "errors": errors[:2]}), flush=True)
            if not res.success:
                sys.exit(3)


def child_main(argv: list[str]) -> None:
    data, fault, at, log = Path(argv[0]), argv[1], int(argv[2]), Path(argv[3])
    install_hook(data, fault, at, log)
    drive(data, tuple(argv[4].split(",")) if len(argv) > 4 else ())


# ---- in the test or benchmark ------------------------------------------------------------------

def make_world(data: Path) -> None:
    """The tiny test world at ``data`` (fresh), with its registry and instance folder."""
    from tests.conftest import write_world

    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True)
    write_world(data, pool_rows=30)
    (data / "dagster_home").mkdir()


def env(data: Path) -> dict[str, str]:
    """The driver's environment: the world's data root, registry and instance."""
    return {**os.environ, "INFDIST_DATA": str(data), "INFDIST_REGISTRY": str(data / "registry.yaml"),
            "DAGSTER_HOME": str(data / "dagster_home"), "PYTHONPATH": str(ROOT)}


def run(data: Path, fault: str = "none", at: int = 0, log: Path | None = None, timeout: float = 600,
        only: str = "") -> subprocess.CompletedProcess:
    """One process of the driver on ``data`` (``only``: these jobs, comma-separated); ``log``
    (default ``<data>/../writes.jsonl``) gets its writes."""
    log = log or data.parent / "writes.jsonl"
    return subprocess.run([sys.executable, "-m", "tests.assets.fault_harness", str(data), fault, str(at), str(log)] + [only] * bool(only),
                          cwd=ROOT, env=env(data), capture_output=True, text=True, timeout=timeout)


def pool_side_snapshot(data: Path, snapshot: Path) -> int:
    """Run the pool-side job alone on a fresh world at ``data`` and copy the data root (instance
    included) to ``snapshot``: crash points in the selection job start from it instead of running
    the pool side again. Returns the pool side's number of writes."""
    make_world(data)
    log = data.parent / "writes-pool.jsonl"
    log.unlink(missing_ok=True)
    out = run(data, "none", 0, log, only="pool_side_job")
    if out.returncode != 0:
        raise RuntimeError(f"the pool-side run failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    if snapshot.exists():
        shutil.rmtree(snapshot)
    shutil.copytree(data, snapshot, symlinks=True)
    return sum(1 for e in read_log(log) if "n" in e)


def results(data: Path) -> dict[str, str]:
    """SHA-256 of every result file (artefacts, checkpoints), by path relative to ``data``: a
    Parquet table's without its ``BOOKKEEPING`` columns, any other file's bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = {}
    for sub in ("assets", "checkpoints"):
        for f in sorted((data / sub).rglob("*")):
            rel = str(f.relative_to(data))
            if not f.is_file() or NOT_COMPARED.search(rel) or TEMPORARY.match(f.name):
                continue
            if f.suffix == ".parquet":
                table = pq.read_table(f)
                table = table.drop_columns([c for c in BOOKKEEPING if c in table.column_names]).combine_chunks()
                sink = pa.BufferOutputStream()
                with pa.ipc.new_stream(sink, table.schema) as w:
                    w.write_table(table)
                out[rel] = hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()
            else:
                out[rel] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def leftovers(data: Path, finished: bool = True) -> list[str]:
    """Temporaries still under the result folders, and once the run ``finished`` the Trainer's
    scratch folders too (kept after a failure: they are what the fine-tune resumes from)."""
    return sorted(str(p.relative_to(data)) for sub in ("assets", "checkpoints") for p in (data / sub).rglob("*")
                  if TEMPORARY.match(p.name) or (finished and p.name.endswith(".trainer")))


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def same_write(a: dict, b: dict) -> bool:
    """The same write of two runs: the same event on the same path, temporaries' process ids and
    random parts and run ids aside."""
    def norm(path: str) -> str:
        return UUID.sub("RUN", "/".join(p.rsplit(".", 3)[0] if TEMPORARY.match(p) else p for p in path.split("/")))

    return a["event"] == b["event"] and norm(a["path"]) == norm(b["path"])


def read_log(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def lineage_runs(data: Path) -> dict[str, set[str]]:
    """Per asset and partition, the run ids that wrote a lineage row (``lineage/<asset>/<partition>/<run>.parquet``)."""
    out: dict[str, set[str]] = {}
    for f in (data / "lineage").rglob("*.parquet"):
        out.setdefault(str(f.parent.relative_to(data / "lineage")), set()).add(f.stem)
    return out


def instance(data: Path):
    """The world's Dagster instance (``<data>/dagster_home``), opened without touching this process's
    ``DAGSTER_HOME`` (the test process goes on to other tests)."""
    import dagster as dg

    return dg.DagsterInstance.from_config(str(data / "dagster_home"))


def run_statuses(data: Path) -> dict[str, str]:
    with instance(data) as inst:
        return {r.run_id: r.status.value for r in inst.get_runs()}


def finished_steps(data: Path) -> dict[str, set[str]]:
    """Per run, the lineage folders (``asset`` with / as __) of the steps Dagster recorded as
    succeeded: a graph asset's by its gather op."""
    import dagster as dg

    out: dict[str, set[str]] = {}
    with instance(data) as inst:
        for r in inst.get_runs():
            records = inst.get_records_for_run(r.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS).records
            out[r.run_id] = {e.event_log_entry.step_key.rsplit(".", 1)[-1].removesuffix("__gather") for e in records}
    return out


def failed_checks(r: dict) -> list[str]:
    """The guarantees a ``crash_point`` finding breaks (empty: all held)."""
    checks = {"killed": r["killed"], "resumed": r["resumed"], "identical": r["identical"], "nothing lost": not r["lost"],
              "nothing redone": not r["recomputed"], "no temporary read": not r["read_tmp"],
              "no temporary left": not r["leftovers"], "catalog opens": r["catalog_ok"] is True,
              "no run left started": not r["started_runs"], "killed run failed, once": r["failed_runs"] == ["FAILURE"]}
    return [name for name, held in checks.items() if not held]


def sidecar_runs(data: Path) -> dict[str, str]:
    """The run id in every sidecar under ``assets`` (artefacts and pool shards), by path."""
    return {str(f.relative_to(data)): json.loads(f.read_text()).get("run_id")
            for f in (data / "assets").rglob("*.meta.json") if "history" not in f.parts}


def start_for(data: Path, at: int, snapshot: tuple[Path, int] | None) -> int:
    """Prepare ``data`` for a fault at write ``at``: a fresh world, or with ``snapshot`` and a
    point in the selection job, the finished pool side. Returns the writes already done."""
    if snapshot is not None and at > snapshot[1]:
        shutil.rmtree(data, ignore_errors=True)
        shutil.copytree(snapshot[0], data, symlinks=True)
        return snapshot[1]
    make_world(data)
    return 0


def crash_point(data: Path, at: int, reference: dict[str, str], snapshot: tuple[Path, int] | None = None) -> dict:
    """Kill the run before its ``at``-th write, resume, and check everything the guarantee says
    against ``reference`` (``reference_run`` at the same ``data``: artefacts record absolute paths).
    With ``snapshot`` (``pool_side_snapshot``'s folder and write count), a point in the selection
    job starts from the finished pool side.
    Returns the findings (``identical``, ``lost``, ``recomputed``, ``read_tmp``, ...)."""
    log = data.parent / f"writes-{at}.jsonl"
    log.unlink(missing_ok=True)
    first = run(data, "kill", at - start_for(data, at, snapshot), log)
    killed = first.returncode == -signal.SIGKILL
    writes = [e for e in read_log(log) if "n" in e]
    where = writes[-1] if killed and writes else None
    before = results(data)
    lineage_before, sidecars_before = lineage_runs(data), sidecar_runs(data)
    done_before = set().union(*finished_steps(data).values()) if killed else set()
    second = run(data, "none", 0, log)
    after = results(data)
    lineage_after, sidecars_after = lineage_runs(data), sidecar_runs(data)
    statuses = run_statuses(data)
    reads = [e["read_tmp"] for e in read_log(log) if "read_tmp" in e]
    lost = sorted(p for p, h in before.items() if p in reference and h == reference[p] and after.get(p) != h)
    # finished work redone: a step Dagster recorded as succeeded wrote another lineage row, or a
    # pool shard complete at the kill was written again
    recomputed = sorted(a.split("/")[0] for a, runs in lineage_after.items()
                        if a.split("/")[0] in done_before and runs != lineage_before.get(a))
    recomputed += sorted(p for p, r in sidecars_before.items() if "/shards/" in p and sidecars_after.get(p) != r)
    from infdist_assets.store.catalog import connect_readonly

    try:
        connect_readonly(data / "infdist.duckdb").close()
        catalog_ok = True
    except Exception as err:  # noqa: BLE001 - what failed is the finding
        catalog_ok = repr(err)
    return {"at": at, "killed": killed, "where": where, "resumed": second.returncode == 0,
            "resume_error": None if second.returncode == 0 else second.stdout[-1500:] + second.stderr[-1500:],
            "identical": after == reference, "differs": sorted(set(after) ^ set(reference) | {p for p in after if
                                                                                               p in reference and after[p] != reference[p]}),
            "lost": lost, "recomputed": recomputed, "read_tmp": reads, "leftovers": leftovers(data), "catalog_ok": catalog_ok,
            "failed_runs": sorted(s for s in statuses.values() if s == "FAILURE"),
            "started_runs": sorted(r for r, s in statuses.items() if s in ("STARTED", "STARTING"))}


def reference_run(data: Path, snapshot: Path | None = None) -> tuple[dict[str, str], list[dict]]:
    """An uninterrupted run: its results and its writes (the crash points). With ``snapshot``, the
    pool side runs first on its own (``pool_side_snapshot`` to that folder) and the selection job
    then continues on ``data``: the same results and writes as one process, and the snapshot the
    selection-job points start from, for one pool-side run less."""
    log = data.parent / "writes-reference.jsonl"
    log.unlink(missing_ok=True)
    before: list[dict] = []
    if snapshot is None:
        make_world(data)
        out = run(data, "none", 0, log)
    else:
        pool_side_snapshot(data, snapshot)
        before = [e for e in read_log(data.parent / "writes-pool.jsonl") if "n" in e]
        out = run(data, "none", 0, log, only="selection_job")
    if out.returncode != 0:
        raise RuntimeError(f"the uninterrupted run failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    after = [{**e, "n": e["n"] + len(before)} for e in read_log(log) if "n" in e]
    return results(data), before + after


if __name__ == "__main__":
    child_main(sys.argv[1:])
