"""Code versions per asset module: the package version and a hash of the sources the module can
run, i.e. its import closure within ``infdist_core`` and ``infdist_assets`` (imports inside
functions included). Editing a module no asset's code reaches (a benchmark, the command line, the
definitions) re-versions nothing; editing the maths an asset runs re-versions that asset, so
Dagster's "code version changed" and the lineage's ``code_version`` mean what they say.

Module granularity, read from the sources with ``ast`` (nothing is imported to compute it).
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

import infdist_core

PACKAGES = ("infdist_core", "infdist_assets")
ROOT = Path(__file__).resolve().parents[2]


def _file(root: Path, module: str) -> Path:
    """The source of ``module`` (``a.b.c``): ``a/b/c.py``, or ``a/b/c/__init__.py`` for a package."""
    path = root.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imports(root: Path, module: str) -> set[str]:
    """The modules of ``PACKAGES`` that ``module`` imports anywhere in its source (a package's
    ``__init__`` only when a name is taken from it)."""
    tree = ast.parse(_file(root, module).read_text(), str(_file(root, module)))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
            for a in node.names:  # submodules, or names defined by the module (or the package's __init__)
                sub = f"{node.module}.{a.name}"
                out.add(sub if _file(root, sub).exists() else node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] in PACKAGES}
    return {m for m in out if _file(root, m).exists()}


def closure(root: Path, module: str) -> list[str]:
    """``module`` and every module it reaches through imports, sorted."""
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(imports(root, m) - seen)
    return sorted(seen)


@lru_cache(maxsize=None)
def code_version(module: str, root: Path = ROOT) -> str:
    """``<package version>+<hash>`` of ``module``'s import closure (file names and contents)."""
    h = hashlib.sha256()
    for m in closure(root, module):
        h.update(m.encode() + b"\0" + _file(root, m).read_bytes())
    return f"{infdist_core.__version__}+{h.hexdigest()[:10]}"
