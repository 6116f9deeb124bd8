"""Which models, target tasks and pool exist: a YAML registry (``INFDIST_REGISTRY``, default the
embedded ``default_registry.yaml``), with paths relative to the data root (``INFDIST_DATA``).

The registry decides the partitions, so it is read when the definitions load; adding a model or
a task is an edit of the registry file (see README, "Your own model, pool and task"). A task whose
target or evaluation file does not exist is *unavailable*: it gets no partition, and the reason
(with the set-up's own reason when ``offline/READY`` under the data root records one) is logged
and shown in the UI, instead of a failure when it is materialised.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from infdist_core.data.evalsets import KINDS as EVAL_KINDS

log = logging.getLogger(__name__)
_REPORTED: set[tuple[str, str]] = set()

DEFAULT_REGISTRY = Path(__file__).with_name("default_registry.yaml")
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
"""Model and task names become folder names and partition keys: letters, digits, '.', '_', '-'."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping (PyYAML keeps the last)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"{key!r} is defined twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


class RegistryError(ValueError):
    """The registry file is missing, malformed, or names something that does not exist."""


@dataclass(frozen=True)
class TaskSpec:
    name: str
    targets: Path
    eval_kind: str
    eval_path: Path | None


@dataclass(frozen=True)
class Registry:
    source: Path
    data_root: Path
    pool: Path
    models: dict[str, Path]
    tasks: dict[str, TaskSpec]
    unavailable: dict[str, str]
    """Tasks whose files are missing, with the reason; not in ``tasks``."""

    def model_path(self, name: str) -> Path:
        if name not in self.models:
            raise RegistryError(f"unknown model {name!r}; {self.source} registers {sorted(self.models)}")
        path = self.models[name]
        if not (path / "config.json").is_file():
            raise RegistryError(f"model {name!r}: {path} is not a Hugging Face model folder (no config.json); "
                                "run `make setup` for the embedded default")
        return path

    def task(self, name: str) -> TaskSpec:
        if name in self.unavailable:
            raise RegistryError(f"task {name!r} is unavailable: {self.unavailable[name]}")
        if name not in self.tasks:
            raise RegistryError(f"unknown task {name!r}; {self.source} registers {sorted(self.tasks)}")
        spec = self.tasks[name]
        if not spec.targets.exists():
            raise RegistryError(f"task {name!r}: target file {spec.targets} does not exist")
        return spec


def setup_reasons(root: Path) -> dict[Path, str]:
    """Why set-up could not write some files under ``root``: ``offline/READY``'s ``missing``."""
    try:
        missing = json.loads((root / "offline" / "READY").read_text()).get("missing", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {root / rel: why for rel, why in missing.items()} if isinstance(missing, dict) else {}


def _unavailable(tasks: dict[str, TaskSpec], root: Path) -> dict[str, str]:
    reasons = setup_reasons(root)
    out = {}
    for name, spec in tasks.items():
        absent = [p for p in (spec.targets, spec.eval_path) if p is not None and not p.exists()]
        if absent:
            out[name] = "; ".join(f"{p} does not exist" + (f" (set-up: {reasons[p]})" if p in reasons else "")
                                  for p in absent)
    return out


def data_root() -> Path:
    return Path(os.environ.get("INFDIST_DATA", "data")).resolve()


def load_registry(path: str | Path | None = None, root: str | Path | None = None) -> Registry:
    """Parse and validate the registry; raises ``RegistryError`` naming the file and field."""
    path = Path(path or os.environ.get("INFDIST_REGISTRY") or DEFAULT_REGISTRY)
    root = Path(root).resolve() if root else data_root()
    if not path.is_file():
        raise RegistryError(f"{path}: registry file not found")
    try:
        doc = yaml.load(path.read_text(), Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as err:
        raise RegistryError(f"{path}: not valid YAML ({err})") from err
    for key in ("pool", "models", "tasks"):
        if key not in doc:
            raise RegistryError(f"{path}: missing top-level field {key!r}")

    def resolve(p: str) -> Path:
        q = Path(os.path.expanduser(str(p)))
        return q if q.is_absolute() else root / q

    models = {}
    for name, m in (doc["models"] or {}).items():
        if not isinstance(m, dict) or "path" not in m:
            raise RegistryError(f"{path}: models.{name} needs a 'path'")
        models[str(name)] = resolve(m["path"])
    tasks = {}
    for name, t in (doc["tasks"] or {}).items():
        if not isinstance(t, dict) or "targets" not in t:
            raise RegistryError(f"{path}: tasks.{name} needs a 'targets' file")
        ev = t.get("eval") or {"kind": "none"}
        if not isinstance(ev, dict):
            raise RegistryError(f"{path}: tasks.{name}.eval must be a mapping like {{kind: heldout, path: ...}}, got {ev!r}")
        kind = ev.get("kind", "none")
        if kind not in EVAL_KINDS:
            raise RegistryError(f"{path}: tasks.{name}.eval.kind is {kind!r}; use one of {EVAL_KINDS}")
        if kind != "none" and not ev.get("path"):
            raise RegistryError(f"{path}: tasks.{name}.eval (kind {kind}) needs a 'path' to its rows")
        tasks[str(name)] = TaskSpec(str(name), resolve(t["targets"]), kind, resolve(ev["path"]) if ev.get("path") else None)
    if not models or not tasks:
        raise RegistryError(f"{path}: needs at least one model and one task")
    unavailable = _unavailable(tasks, root)
    for name, why in unavailable.items():
        if (name, why) not in _REPORTED:  # once per process: the registry is read by every step
            _REPORTED.add((name, why))
            log.warning("task %r is unavailable: %s", name, why)
    for kind, names in (("models", models), ("tasks", tasks)):
        for n in names:
            if not SAFE_NAME.fullmatch(n):
                suggestion = re.sub(r"[^A-Za-z0-9._-]+", "-", n).strip(".-")[:100] or "name"
                raise RegistryError(f"{path}: {kind}.{n}: a name becomes a folder and a partition key, so it may use "
                                    f"letters, digits, '.', '_' and '-' only (at most 100, starting with a letter or "
                                    f"digit); e.g. {suggestion!r}")
    available = {n: t for n, t in tasks.items() if n not in unavailable}
    return Registry(path, root, resolve(doc["pool"]), models, available, unavailable)
