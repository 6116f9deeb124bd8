"""Dagster asset graph over ``infdist_core``: partitions, storage, catalog, checks, automation."""
