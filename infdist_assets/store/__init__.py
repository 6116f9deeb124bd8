"""Where artefacts live and what makes one current: one ``step`` per materialisation (settings,
staleness, atomic writes, lineage), the typed ``artefacts`` and their ``loaders``, Parquet
``storage``, the DuckDB ``catalog``, the sharded pool passes, code ``versions``, peak ``memory``
and ``run_liveness`` (no two runs write one partition). Imports only the layer's settings
modules (registry, settings, resources, partitions) besides its own."""
