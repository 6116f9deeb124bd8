"""Kubernetes readiness without a cluster: the Job spec of a shard step as dagster-k8s builds it,
and the demo partition on a Dagster instance stored in a real Postgres server."""

import os
import subprocess
from pathlib import Path

import dagster as dg
import pytest
import yaml

from tests.conftest import write_world

ROOT = Path(__file__).resolve().parents[2]


def test_a_shard_step_job_spec_has_a_gpu_the_data_volume_and_the_image():
    pytest.importorskip("dagster_k8s", reason="the k8s extra (make installs it)")
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import (DagsterK8sJobConfig, UserDefinedDagsterK8sConfig, construct_dagster_k8s_job,
                                 get_user_defined_k8s_config)

    from infdist_assets.definitions import defs
    from infdist_assets.operations import deployment

    conf = deployment.step_k8s_settings(claim="infdist-data", data_root="/data", image="registry.example.com/infdist:0.1.0")
    assert deployment.executor() is None, "local runs keep Dagster's default executor"
    os.environ["INFDIST_EXECUTOR"] = "k8s"
    try:
        assert deployment.executor().name == "k8s_job_executor"
    finally:
        del os.environ["INFDIST_EXECUTOR"]
    # as k8s_job_executor does: the executor's container context, merged with the step's op tags
    executor_context = K8sContainerContext(env_vars=conf["env_vars"], volume_mounts=conf["volume_mounts"],
                                           volumes=conf["volumes"],
                                           run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(conf["step_k8s_config"]))
    jobs = {}
    for op in ("pool_embeddings__shard", "pool_embeddings__gather"):
        node = next(n for n in defs.get_assets_def("pool_embeddings").node_def.node_defs if n.name == op)
        context = executor_context.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(node.tags)))
        job_config = DagsterK8sJobConfig(job_image=conf["job_image"], dagster_home="/opt/dagster/dagster_home",
                                         instance_config_map="dagster-instance")
        jobs[op] = construct_dagster_k8s_job(job_config, args=["dagster", "api", "execute_step"], job_name=f"step-{op}",
                                             pod_name=f"step-{op}", component="step_worker",
                                             user_defined_k8s_config=context.run_k8s_config,
                                             labels={"dagster/op": op}).to_dict()
    pod = jobs["pool_embeddings__shard"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.com/infdist:0.1.0"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1", "one GPU per shard step"
    assert {"name": "infdist-data", "mount_path": "/data"}.items() <= next(
        m for m in container["volume_mounts"] if m["name"] == "infdist-data").items()
    assert any(v["name"] == "infdist-data" and v["persistent_volume_claim"]["claim_name"] == "infdist-data"
               for v in pod["volumes"])
    assert {"name": "INFDIST_DATA", "value": "/data"}.items() <= next(e for e in container["env"]
                                                                     if e["name"] == "INFDIST_DATA").items()
    assert jobs["pool_embeddings__shard"]["spec"]["backoff_limit"] == 1
    gather = jobs["pool_embeddings__gather"]["spec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in ((gather.get("resources") or {}).get("limits") or {}), "the gather needs no GPU"


def test_the_demo_partition_runs_on_an_instance_stored_in_postgres(tmp_path, postgres, monkeypatch):
    """deploy/dagster.yaml's storage block (dagster-postgres) against a real server: every run,
    event and materialisation of a model x task partition lands in Postgres."""
    from infdist_assets.definitions import build_definitions
    from infdist_assets.operations.demo import run_partition
    from infdist_assets.resources import SelectionSettings

    instance_conf = yaml.safe_load((ROOT / "deploy" / "dagster.yaml").read_text())
    home = tmp_path / "home"
    home.mkdir()
    conf = instance_conf["storage"]["postgres"]["postgres_db"]
    conf["port"] = postgres["port"]
    (home / "dagster.yaml").write_text(yaml.safe_dump({"storage": {"postgres": {"postgres_db": conf}}}))
    for k, v in {"DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": postgres["host"], "DAGSTER_PG_USER": "postgres",
                 "DAGSTER_PG_PASSWORD": "unused-with-trust", "DAGSTER_PG_DB": "dagster"}.items():
        monkeypatch.setenv(k, v)
    data = tmp_path / "data"
    data.mkdir()
    reg = write_world(data)
    defs = build_definitions(str(reg), str(data))
    settings = SelectionSettings.of(pool_size=30, max_length=64, n_landmarks=12, k=5, projection_dim=256, embedding_dim=64,
                                 warmup_samples=8, warmup_steps=2, train_epochs=1.0, train_micro_batch=2,
                                 train_grad_accum=1, eval_subset=2, pool_shards=2)
    resources = {"store": defs.resources["store"], "settings": settings}
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        results = run_partition(defs, "tiny", "math", instance, resources=resources)
        assert all(r.success for r in results)
        runs = instance.get_runs()
        assert len(runs) == len(results) and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        mat = instance.get_latest_materialization_event(dg.AssetKey(["infdist", "eval_scores"]))
        assert mat is not None
    out = subprocess.run(["runuser", "-u", "postgres", "--"] * (os.geteuid() == 0) +
                         [str(postgres["bin"] / "psql"), "-h", postgres["host"], "-p", str(postgres["port"]), "-U", "postgres",
                          "-d", "dagster", "-tAc", "SELECT count(*) FROM runs"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and int(out.stdout.strip()) == len(results), out.stdout + out.stderr
