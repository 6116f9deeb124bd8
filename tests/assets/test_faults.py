"""Faults injected into a real run of the demo's graph on the tiny world (``tests/assets/fault_harness.py``):
SIGKILL before a seeded sample of its writes, a full disk, a Postgres restart, two launches of the
same partition at once. Each ends, after the resume a user would do, with results byte-identical
to an uninterrupted run's. ``benchmarks/bench_faults.py`` kills before every write."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

import pytest
import yaml

from tests.assets import fault_harness as harness

SAMPLED = 1
"""Crash points drawn (seeded) per test run besides the fixed ones; the sweep is the benchmark's."""


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    data = tmp_path_factory.mktemp("faults") / "data"
    results, writes = harness.reference_run(data, data.parent / "after-pool-side")
    pool = harness.results(data.parent / "after-pool-side")
    snapshot = (data.parent / "after-pool-side", sum("n" in e for e in harness.read_log(data.parent / "writes-pool.jsonl")))
    assert pool and all(results[p] == h for p, h in pool.items()), "the pool side's results are part of the whole run's"
    return {"data": data, "results": results, "writes": writes, "snapshot": snapshot, "pool_results": pool}


def _first(writes, predicate) -> int:
    return next(w["n"] for w in writes if predicate(w))


def test_a_run_killed_before_any_of_its_writes_resumes_to_the_same_result(reference):
    """Fixed points where a lost or doubled write would show: a Trainer checkpoint's state file
    (the folder is then half-written) and between removing a sidecar and publishing its table;
    plus a seeded sample of the rest (the catalog swaps and every other point: bench_faults.py)."""
    writes = reference["writes"]
    fixed = [_first(writes, lambda w: w["path"].endswith("trainer_state.json")),
             _first(writes, lambda w: w["event"] == "os.remove" and w["path"].endswith("/data.meta.json")
                    and "fine_tuned_model" in w["path"]) + 1]
    rest = sorted(set(range(1, len(writes) + 1)) - set(fixed))
    points = fixed + random.Random(0).sample(rest, SAMPLED)
    for at in points:
        r = harness.crash_point(reference["data"], at, reference["results"], reference["snapshot"])
        assert r["killed"] and harness.same_write(r["where"], writes[at - 1]), \
            f"crash point {at}: killed at {r['where']}, meant before {writes[at - 1]}"
        assert r["resumed"], f"crash point {at} ({r['where']}): the resume failed:\n{r['resume_error']}"
        broken = harness.failed_checks(r)
        assert not broken, f"crash point {at} ({r['where']}): {broken} (differs: {r['differs']}): {r}"


def test_a_full_disk_fails_clearly_keeps_nothing_half_written_and_the_rerun_succeeds(reference):
    """ENOSPC on the write of a sidecar (inside an atomic write) and on a Trainer checkpoint file
    (a write in place): the step fails naming the path, no temporary is left, the previous
    content stays, and the run resumed once there is space gives the uninterrupted result."""
    writes = reference["writes"]
    data = reference["data"]
    for at, named in ((_first(writes, lambda w: w["path"].endswith(".tmp") and "meta.json" in w["path"]
                              and "target_gradients" in w["path"]), "no space left on the device writing"),
                      (_first(writes, lambda w: w["path"].endswith("trainer_state.json")), "No space left on device")):
        log = data.parent / f"writes-enospc-{at}.jsonl"
        log.unlink(missing_ok=True)
        offset = harness.start_for(data, at, reference["snapshot"])
        only = "" if offset else "pool_side_job"  # a pool-side write: the pool side alone shows it
        n = at - offset
        full = harness.run(data, "enospc", n, log, only=only)
        assert full.returncode != 0, "the run cannot succeed on a full disk"
        path = next(e["path"] for e in harness.read_log(log) if e.get("n") == n)
        said = full.stdout + full.stderr
        assert named in said and path.split("/.")[0] in said, f"the error names the path {path}:\n{said[-2000:]}"
        assert not harness.leftovers(data, finished=False), harness.leftovers(data, finished=False)
        again = harness.run(data, "none", 0, log, only=only)
        assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
        assert harness.results(data) == (reference["pool_results"] if only else reference["results"])


def test_two_launches_of_the_same_partition_at_once_run_one_and_refuse_the_other(reference):
    """A schedule and a person launching the pool-side job of one model together: the run created
    second is refused at its first step, before writing anything, naming the run in progress; the
    first ends with the uninterrupted result."""
    data = reference["data"]
    harness.make_world(data)
    assert harness.run_statuses(data) == {}  # the instance's storage exists before both start (SQLite creates it once)
    cmd = [sys.executable, "-m", "tests.assets.fault_harness", str(data), "none", "0", str(data.parent / "writes-concurrent.jsonl"),
           "pool_side_job"]
    procs = [subprocess.Popen(cmd, cwd=harness.ROOT, env=harness.env(data), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    said = "\n".join(o[0][-1500:] + o[1][-3000:] for o in outs)
    assert codes == [0, 3], said
    assert "is still running on this partition: this run is refused before writing anything" in said
    assert harness.results(data) == reference["pool_results"] and not harness.leftovers(data)
    statuses = sorted(harness.run_statuses(data).values())
    assert statuses == ["FAILURE", "SUCCESS"], statuses


def test_a_postgres_restart_mid_run_ends_in_the_same_result_and_the_event_log_agrees(reference, postgres, tmp_path):
    """The instance on Postgres (deploy/dagster.yaml), restarted while a pool-side step writes: the run
    finishes or fails cleanly, the resume reaches the uninterrupted result, and every artefact's
    run (its sidecar) has that asset's materialisation in the event log."""
    import dagster as dg

    data = reference["data"]
    harness.make_world(data)
    conf = yaml.safe_load((harness.ROOT / "deploy" / "dagster.yaml").read_text())["storage"]["postgres"]["postgres_db"]
    conf["port"] = postgres["port"]
    (data / "dagster_home" / "dagster.yaml").write_text(yaml.safe_dump({"storage": {"postgres": {"postgres_db": conf}}}))
    env = {**harness.env(data), "DAGSTER_PG_HOST": postgres["host"], "DAGSTER_PG_USER": "postgres",
           "DAGSTER_PG_PASSWORD": "unused-with-trust", "DAGSTER_PG_DB": "dagster"}
    at = _first(reference["writes"], lambda w: "landmark_gradients" in w["path"])
    pause = tmp_path / "paused"
    log = tmp_path / "writes.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "tests.assets.fault_harness", str(data), f"pause:{pause}", str(at), str(log),
                             "pool_side_job"],
                            cwd=harness.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not pause.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "the run never reached the write where Postgres restarts"
        time.sleep(0.1)
    postgres["restart"]()
    pause.unlink()
    first = proc.communicate(timeout=600)
    again = subprocess.run([sys.executable, "-m", "tests.assets.fault_harness", str(data), "none", "0", str(log), "pool_side_job"],
                           cwd=harness.ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, first[1][-2000:] + again.stdout[-2000:] + again.stderr[-2000:]
    assert harness.results(data) == reference["pool_results"]
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        with dg.DagsterInstance.get() as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            for side in (data / "assets").rglob("data.meta.json"):
                meta = json.loads(side.read_text())
                key = dg.AssetKey.from_user_string(meta["asset"])
                records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=100).records
                assert any(r.run_id == meta["run_id"] for r in records), \
                    f"{meta['asset']}: its artefact's run {meta['run_id'][:8]} has no materialisation in the event log"


REWRITE = r"""
import sys
from pathlib import Path
import pyarrow as pa
from tests.assets.fault_harness import install_hook
from infdist_assets.store import storage

data, at, log = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
install_hook(data, "kill", at, log)
storage.write_table(pa.table({"x": [2]}), data / "a" / "data.parquet", {"run_id": "new"})
"""


@pytest.mark.parametrize("at", [3, 4])
def test_a_kill_while_an_artefact_is_replaced_never_pairs_the_new_table_with_the_old_sidecar(tmp_path, at):
    """Writes of a replacement: the lock, removing the old sidecar, publishing the table (3),
    opening the new sidecar's temporary (4), publishing it. Killed before 3 or 4, the artefact
    reads as not materialised (the old sidecar used to describe the new table after a kill at 4)."""
    import pyarrow as pa

    from infdist_assets.store import storage

    path = tmp_path / "a" / "data.parquet"
    storage.write_table(pa.table({"x": [1]}), path, {"run_id": "old"})
    log = tmp_path / "writes.jsonl"
    out = subprocess.run([sys.executable, "-c", REWRITE, str(tmp_path), str(at), str(log)], cwd=harness.ROOT,
                         env=harness.env(tmp_path), capture_output=True, text=True, timeout=120)
    assert out.returncode == -9, out.stderr[-2000:]
    names = [w["path"].split("/")[-1] for w in harness.read_log(log)]
    events = [(w["event"], n.rsplit(".", 3)[0] if harness.TEMPORARY.match(n) else n) for w, n in zip(harness.read_log(log), names)]
    assert events == [("open", ".data.parquet.lock"), ("os.remove", "data.meta.json"), ("os.rename", ".data.parquet"),
                      ("open", ".data.meta.json")][:at], events
    with pytest.raises(storage.ArtefactMissing):
        storage.read_meta(path)


def test_which_partitions_overlap():
    """A model's pool side overlaps every partition of that model; two tasks of one model, or two
    models, do not (a backfill runs them side by side)."""
    from infdist_assets.store.run_liveness import overlaps

    assert overlaps("m", "m") and overlaps("m|t", "m|t") and overlaps("m", "m|t") and overlaps("m|t", "m")
    assert not overlaps("m|t", "m|u") and not overlaps("m", "n|t") and not overlaps("m", "n") and not overlaps("m", "mm|t")
