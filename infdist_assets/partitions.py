"""Partitions: pool-side assets by model; target-side assets by model x target task.

The partition keys come from the registry, read once when the definitions load.
"""

from __future__ import annotations

import warnings

import dagster as dg

from infdist_assets.registry import Registry

MODEL = "model"
TASK = "task"


def model_partitions(reg: Registry) -> dg.StaticPartitionsDefinition:
    return dg.StaticPartitionsDefinition(sorted(reg.models))


def model_task_partitions(reg: Registry) -> dg.MultiPartitionsDefinition:
    return dg.MultiPartitionsDefinition({
        MODEL: dg.StaticPartitionsDefinition(sorted(reg.models)),
        TASK: dg.StaticPartitionsDefinition(sorted(reg.tasks)),
    })


def on_model(key: str | dg.AssetKey) -> dg.AssetDep:
    """Depend on a model-partitioned asset from a model x task asset (same model)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        mapping = dg.MultiToSingleDimensionPartitionMapping(partition_dimension_name=MODEL)
    return dg.AssetDep(key, partition_mapping=mapping)


def split_key(partition_key: str | dg.MultiPartitionKey) -> tuple[str, str | None]:
    """(model, task) of a partition key; task is None for model-only partitions."""
    if isinstance(partition_key, dg.MultiPartitionKey):
        d = partition_key.keys_by_dimension
        return d[MODEL], d[TASK]
    if "|" in str(partition_key):
        a, b = str(partition_key).split("|")
        return a, b  # MultiPartitionKey strings are dimension-sorted: model|task
    return str(partition_key), None
