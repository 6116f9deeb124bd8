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
ROOT = Path(__file__).resolve().parents[1]


def _file(root: Path, module: str) -> Path:
    pkg, _, name = module.partition(".")
    return root / pkg / f"{name or '__init__'}.py"


def imports(root: Path, module: str) -> set[str]:
    """The modules of ``PACKAGES`` that ``module`` imports anywhere in its source."""
    tree = ast.parse(_file(root, module).read_text(), str(_file(root, module)))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
            if "." in node.module:
                out.add(".".join(node.module.split(".")[:2]))
            else:  # from infdist_core import a, b: submodules, or names of the package's __init__
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    out.add(sub if _file(root, sub).exists() else node.module)
        elif isinstance(node, ast.Import):
            out |= {".".join(a.name.split(".")[:2]) for a in node.names if a.name.split(".")[0] in PACKAGES}
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
