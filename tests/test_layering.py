"""The packages' import graph: no loop, nothing imports the top (definitions, cli), the core never
imports the asset layer, and no module changes another module's globals."""

from __future__ import annotations

import ast

from tests.conftest import ROOT

MUTATORS = {"append", "extend", "update", "clear", "pop", "insert", "remove", "setdefault", "add", "discard"}


def _modules(package: str) -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text(), str(p)) for p in sorted((ROOT / package).glob("*.py")) if p.stem != "__init__"}


def _imports(package: str, module: str) -> set[str]:
    """Modules ``package.module`` imports anywhere (function bodies included), as ``pkg.mod``: the
    import graph the code versions are built on (``infdist_assets.versions.imports``)."""
    from infdist_assets.versions import imports

    return imports(ROOT, f"{package}.{module}")


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_layers_import_downward_only():
    for package in ("infdist_core", "infdist_assets"):
        mods = _modules(package)
        graph = {m: {i.split(".")[1] for i in _imports(package, m) if i.startswith(package + ".")} & set(mods)
                 for m in mods}
        loop = _cycle(graph)
        assert loop is None, f"{package} has an import loop: {' -> '.join(loop)}"
    assets = _modules("infdist_assets")
    graph = {m: {i.split(".")[1] for i in _imports("infdist_assets", m) if i.startswith("infdist_assets.")} for m in assets}
    for top, allowed in (("cli", set()), ("definitions", {"cli"})):
        users = sorted(m for m, deps in graph.items() if top in deps and m not in allowed)
        assert not users, f"infdist_assets.{top} is the top of the layer, yet {users} import it"
    core_users = sorted(m for m in _modules("infdist_core") if any(i.startswith("infdist_assets")
                                                                   for i in _imports("infdist_core", m)))
    assert not core_users, f"infdist_core modules import the asset layer: {core_users}"


def test_the_loop_check_sees_a_loop():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_mutates_another_modules_globals():
    for package in ("infdist_core", "infdist_assets"):
        for name, tree in _modules(package).items():
            imported = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == package
                        for a in n.names}
            for node in ast.walk(tree):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AugAssign) else []
                for t in targets:
                    base = t.value if isinstance(t, ast.Subscript) else t
                    if isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name) and base.value.id in imported:
                        raise AssertionError(f"{package}.{name} line {node.lineno} assigns {base.value.id}.{base.attr}")
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATORS
                        and isinstance(node.func.value, ast.Attribute) and isinstance(node.func.value.value, ast.Name)
                        and node.func.value.value.id in imported):
                    raise AssertionError(f"{package}.{name} line {node.lineno} mutates "
                                         f"{node.func.value.value.id}.{node.func.value.attr} of another module")


def test_an_assets_code_version_follows_the_code_it_runs(tmp_path):
    """Editing the benchmark asset, the command line or the definitions re-versions no pipeline
    asset; editing the maths they run (the robust weights) re-versions the target side."""
    import shutil

    from infdist_assets import versions

    for pkg in versions.PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    pipeline_assets = [f"infdist_assets.{m}" for m in ("pool_assets", "target_assets", "method_assets")]
    before = {m: versions.code_version(m, tmp_path) for m in pipeline_assets + ["infdist_assets.benchmark"]}
    assert before == {m: versions.code_version(m) for m in before}, "the version depends on the sources, not the folder"
    for edited in ("benchmark", "cli", "definitions"):
        with (tmp_path / "infdist_assets" / f"{edited}.py").open("a") as f:
            f.write("\n# edited\n")
    versions.code_version.cache_clear()
    after = {m: versions.code_version(m, tmp_path) for m in before}
    assert {m: after[m] for m in pipeline_assets} == {m: before[m] for m in pipeline_assets}, \
        "editing the benchmark, the CLI or the definitions re-versioned a pipeline asset"
    assert after["infdist_assets.benchmark"] != before["infdist_assets.benchmark"], "quality_report runs benchmark.py"
    with (tmp_path / "infdist_core" / "weights.py").open("a") as f:
        f.write("\n# edited\n")
    versions.code_version.cache_clear()
    assert versions.code_version("infdist_assets.target_assets", tmp_path) != before["infdist_assets.target_assets"]
    versions.code_version.cache_clear()
