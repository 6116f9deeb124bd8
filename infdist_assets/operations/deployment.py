"""Where the jobs' steps run: in local processes (Dagster's default multi-or-in-process executor), or
one Kubernetes Job per step with ``dagster-k8s``'s ``k8s_job_executor`` (``INFDIST_EXECUTOR=k8s``).

On Kubernetes every step pod mounts the same ReadWriteMany volume at the data root (artefacts,
lineage, the catalog, the step outputs of the shard fan-out) and gets ``INFDIST_DATA`` pointing
at it; the shard steps of the pool side request one ``nvidia.com/gpu`` each through their op tags
(``loaders.GPU_TAGS``), the plan, gather and CPU-only assets (KRR, weights, selection) request none.
``deploy/`` holds the rest (image, instance on Postgres, Helm values); README "Scaling out".

Environment of the code location (all optional but ``INFDIST_EXECUTOR``):

    INFDIST_EXECUTOR=k8s           use k8s_job_executor for the jobs
    INFDIST_K8S_CLAIM=infdist-data the ReadWriteMany PersistentVolumeClaim holding the data root
    INFDIST_K8S_DATA=/data         where step pods mount it (their INFDIST_DATA)
    INFDIST_K8S_IMAGE=...          the step image (default: the code location's image)
    INFDIST_K8S_NAMESPACE=...      the namespace of the step Jobs
"""

import os

import dagster as dg


def step_k8s_settings(claim: str = "infdist-data", data_root: str = "/data", image: str | None = None,
                      namespace: str | None = None) -> dict:
    """The ``k8s_job_executor`` configuration: the shared volume at the data root for every step."""
    conf = {
        "volumes": [{"name": "infdist-data", "persistentVolumeClaim": {"claimName": claim}}],
        "volume_mounts": [{"name": "infdist-data", "mountPath": data_root}],
        "env_vars": [f"INFDIST_DATA={data_root}"],  # INFDIST_REGISTRY: set it in the run launcher's envVars
        # a step that dies is retried once by Kubernetes' own back-off; finished shards are kept
        "step_k8s_config": {"job_spec_config": {"backoff_limit": 1}},
    }
    if image:
        conf["job_image"] = image
    if namespace:
        conf["job_namespace"] = namespace
    return conf


def executor() -> dg.ExecutorDefinition | None:
    """The jobs' executor from the environment (None: Dagster's default)."""
    if os.environ.get("INFDIST_EXECUTOR", "") != "k8s":
        return None
    from dagster_k8s import k8s_job_executor  # the `k8s` extra

    return k8s_job_executor.configured(step_k8s_settings(
        os.environ.get("INFDIST_K8S_CLAIM", "infdist-data"), os.environ.get("INFDIST_K8S_DATA", "/data"),
        os.environ.get("INFDIST_K8S_IMAGE"), os.environ.get("INFDIST_K8S_NAMESPACE")), name="k8s_job_executor")
