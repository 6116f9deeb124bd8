"""Runs whose worker process was killed are marked failed instead of staying STARTED forever.

Dagster's run monitoring detects dead run workers only for run launchers that report worker
health (Kubernetes, Docker, ECS); the default launcher (``dagster dev``, ``make ui``) and
in-process runs (``make demo``) do not, so a ``kill -9`` left the run STARTED and "Re-execute
from failure" unavailable. Every step records its run worker's host, pid and process start time
as a run tag (``infdist/worker``); ``reap_dead_runs`` fails the STARTED runs of this host whose
worker is gone (or whose pid now belongs to another process). It runs at the start of
``make demo``, from ``dead_run_sensor`` in the daemon, and as
``python -m infdist_assets.cli reap --data data``.
"""

from __future__ import annotations

import multiprocessing
import os
import socket

import dagster as dg

WORKER_TAG = "infdist/worker"


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def worker_identity() -> str:
    """``host:pid:start`` of the run worker: the parent of a multiprocess-executor step, else us."""
    parent = multiprocessing.parent_process()
    pid = parent.pid if parent is not None and parent.pid else os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid) or ''}"


def record_worker(context: dg.AssetExecutionContext) -> None:
    """Tag the run with its worker process (once per run)."""
    if WORKER_TAG not in context.run.tags:
        context.instance.add_run_tags(context.run.run_id, {WORKER_TAG: worker_identity()})


def worker_gone(identity: str) -> bool:
    """True when the recorded worker is on this host and no longer runs (pid gone or reused)."""
    host, _, rest = identity.partition(":")
    pid, _, ticks = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another host's worker: only its own reaper can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    now = _start_ticks(int(pid))
    return bool(ticks) and now is not None and now != ticks


def reap_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed the STARTED runs whose recorded worker is gone; returns their run ids."""
    reaped = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        identity = run.tags.get(WORKER_TAG)
        if identity and worker_gone(identity):
            instance.report_run_failed(run, message=f"run worker {identity} (host:pid:start) is gone, killed or "
                                                    "crashed; finished artefacts are kept, re-execute from failure")
            reaped.append(run.run_id)
    return reaped


ACTIVE = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
PARTITION_TAG = "dagster/partition"


def overlaps(a: str, b: str) -> bool:
    """Do two runs' partitions write the same artefacts? The same key, or a model's pool side and
    any partition of that model (``model`` and ``model|task``); two tasks of one model do not."""
    return a == b or ("|" not in a and b.split("|")[0] == a) or ("|" not in b and a.split("|")[0] == b)


def earlier_active_run(instance: dg.DagsterInstance, run: dg.DagsterRun) -> dg.DagsterRun | None:
    """An active run created before ``run`` whose partition overlaps ``run``'s, with a live (or
    not yet recorded) worker: the run ``run`` must not write beside. Both runs of a simultaneous
    launch agree on which was first (creation time, then run id)."""
    key = run.tags.get(PARTITION_TAG)
    if key is None:
        return None
    me = instance.get_run_record_by_id(run.run_id)
    mine = (me.create_timestamp, run.run_id) if me else None
    for rec in instance.get_run_records(filters=dg.RunsFilter(statuses=ACTIVE)):
        other = rec.dagster_run
        theirs = other.tags.get(PARTITION_TAG)
        if other.run_id == run.run_id or theirs is None or not overlaps(key, theirs):
            continue
        if mine is not None and (rec.create_timestamp, other.run_id) > mine:
            continue
        identity = other.tags.get(WORKER_TAG)
        if identity and worker_gone(identity):
            continue
        return other
    return None


def refuse_if_overlapping(context) -> None:
    """Fail the step (before it writes anything) when an earlier run of an overlapping partition
    is still active: two runs of one partition (a schedule and a person) would each re-make the
    artefacts the other is reading. Launches through the daemon's queue wait instead
    (``tag_concurrency_limits`` on ``dagster/partition``: deploy/dagster.yaml)."""
    other = earlier_active_run(context.instance, context.run)
    if other is not None:
        raise dg.Failure(description=f"run {other.run_id[:8]} ({other.job_name}, partition "
                                     f"{other.tags.get(PARTITION_TAG)}) is still running on this partition: this run "
                                     "is refused before writing anything; launch it again once that one has ended")


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
           description="Marks failed the runs whose worker process on this host was killed (kill -9, OOM).")
def dead_run_sensor(context: dg.SensorEvaluationContext):
    reaped = reap_dead_runs(context.instance)
    return dg.SkipReason(f"marked failed: {', '.join(reaped)}" if reaped else "no dead runs")
