"""Dagster resources: the selection settings (``settings.SelectionSettings``, generated from
``infdist_core.config.SelectionConfig``, converted to it in one place) and the artefact store
(data root, registry, DuckDB catalog)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from pydantic import Field

from infdist_assets.registry import Registry, data_root, load_registry
from infdist_assets.settings import SelectionSettings

__all__ = ["ArtefactStore", "SelectionSettings"]


class ArtefactStore(dg.ConfigurableResource):
    """Where artefacts, checkpoints, lineage and the DuckDB catalog live."""

    root: str = Field(default_factory=lambda: str(data_root()), description="Data root (INFDIST_DATA, default ./data).")
    registry_path: str = Field(default="", description="Registry YAML (INFDIST_REGISTRY, default the embedded one).")
    catalog_file: str = Field(default="infdist.duckdb", description="DuckDB catalog, relative to the root.")
    asset_keys: list[str] = Field(default_factory=list, description="Every asset key of the code location, for the "
                                  "catalog's asset_<name> views (filled by the definitions).")
    selection_stages: dict[str, list[str]] = Field(
        default_factory=dict, description="Per selection method, the assets its selection needs, read off the asset "
                                          "graph, for the catalog's selection_cost (filled by the definitions).")

    @property
    def path(self) -> Path:
        return Path(self.root).resolve()

    @property
    def catalog_path(self) -> Path:
        p = Path(self.catalog_file)
        return p if p.is_absolute() else self.path / p

    def registry(self) -> Registry:
        return load_registry(self.registry_path or None, self.path)
