"""The packages' import graph: no loop, nothing imports the top (definitions, cli), the core never
imports the asset layer, and no module changes another module's globals."""

from __future__ import annotations

import ast

from tests.conftest import ROOT

MUTATORS = {"append", "extend", "update", "clear", "pop", "insert", "remove", "setdefault", "add", "discard"}


def _modules(package: str) -> dict[str, ast.Module]:
    """The package's modules by dotted name below it (``maths.weights``), sub-packages' own
    ``__init__`` files left out."""
    out = {}
    for p in sorted((ROOT / package).rglob("*.py")):
        if p.stem != "__init__":
            out[".".join(p.relative_to(ROOT / package).with_suffix("").parts)] = ast.parse(p.read_text(), str(p))
    return out


def _imports(package: str, module: str) -> set[str]:
    """Modules ``package.module`` imports anywhere (function bodies included), as dotted names
    below ``package``: the import graph the code versions are built on
    (``infdist_assets.store.versions.imports``)."""
    from infdist_assets.store.versions import imports

    return {i.removeprefix(package + ".") for i in imports(ROOT, f"{package}.{module}") if i.startswith(package + ".")}


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
        graph = {m: _imports(package, m) & set(mods) for m in mods}
        loop = _cycle(graph)
        assert loop is None, f"{package} has an import loop: {' -> '.join(loop)}"
    assets = _modules("infdist_assets")
    graph = {m: _imports("infdist_assets", m) for m in assets}
    for top, allowed in (("cli", set()), ("definitions", {"cli"})):
        users = sorted(m for m, deps in graph.items() if top in deps and m not in allowed)
        assert not users, f"infdist_assets.{top} is the top of the layer, yet {users} import it"
    from infdist_assets.store.versions import imports

    core_users = sorted(m for m in _modules("infdist_core")
                        if any(i.startswith("infdist_assets") for i in imports(ROOT, f"infdist_core.{m}")))
    assert not core_users, f"infdist_core modules import the asset layer: {core_users}"


def test_the_core_sub_packages_import_downward():
    """model -> maths -> data; none of them imports the top (pipeline, methods), which is what a
    user calls; the settings (config, proxy_specs) are the one thing every layer may read."""
    below = {"model": {"model", "maths", "data"}, "maths": {"maths", "data"}, "data": {"data"}}
    settings = {"config", "proxy_specs"}
    for m in _modules("infdist_core"):
        layer = m.split(".")[0]
        if layer in below:
            bad = sorted(i for i in _imports("infdist_core", m) if i.split(".")[0] not in below[layer] | settings)
            assert not bad, f"infdist_core.{m} ({layer}) imports {bad}"
    assert {m.split(".")[0] for m in _modules("infdist_core") if "." not in m} == {"config", "proxy_specs", "pipeline",
                                                                                  "methods"}


def test_the_asset_layer_sub_packages_import_downward():
    """store below assets and operations, the settings modules below all, the code location
    (definitions, cli) on top; no asset module imports another."""
    base = {"registry", "settings", "resources", "partitions"}
    below = {"store": {"store"}, "assets": {"assets", "store"}, "operations": {"operations", "store"}}
    mods = _modules("infdist_assets")
    assert {m for m in mods if "." not in m} == base | {"definitions", "cli"}
    for m in mods:
        layer = m.split(".")[0]
        allowed = base if layer in base else below.get(layer, {"store", "assets", "operations"}) | base
        if layer in ("definitions", "cli"):
            allowed |= {"definitions"}
        bad = sorted(i for i in _imports("infdist_assets", m) if i.split(".")[0] not in allowed)
        assert not bad, f"infdist_assets.{m} ({layer}) imports {bad}"
    graphs = ("assets.pool_assets", "assets.target_assets", "assets.method_assets", "assets.benchmark")
    for m in graphs:
        assert not (_imports("infdist_assets", m) & set(graphs)), f"{m} imports another asset module"


def test_the_loop_check_sees_a_loop():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_mutates_another_modules_globals():
    for package in ("infdist_core", "infdist_assets"):
        for name, tree in _modules(package).items():
            imported = {a.asname or a.name for n in ast.walk(tree)
                        if isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == package for a in n.names}
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

    from infdist_assets.store import versions

    for pkg in versions.PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    pipeline_assets = [f"infdist_assets.assets.{m}" for m in ("pool_assets", "target_assets", "method_assets")]
    before = {m: versions.code_version(m, tmp_path) for m in pipeline_assets + ["infdist_assets.assets.benchmark"]}
    assert before == {m: versions.code_version(m) for m in before}, "the version depends on the sources, not the folder"
    for edited in ("assets/benchmark", "cli", "definitions"):
        with (tmp_path / "infdist_assets" / f"{edited}.py").open("a") as f:
            f.write("\n# edited\n")
    versions.code_version.cache_clear()
    after = {m: versions.code_version(m, tmp_path) for m in before}
    assert {m: after[m] for m in pipeline_assets} == {m: before[m] for m in pipeline_assets}, \
        "editing the benchmark, the CLI or the definitions re-versioned a pipeline asset"
    assert after["infdist_assets.assets.benchmark"] != before["infdist_assets.assets.benchmark"], \
        "quality_report runs benchmark.py"
    with (tmp_path / "infdist_core" / "maths" / "weights.py").open("a") as f:
        f.write("\n# edited\n")
    versions.code_version.cache_clear()
    target = "infdist_assets.assets.target_assets"
    assert versions.code_version(target, tmp_path) != before[target]
    versions.code_version.cache_clear()


def test_every_name_the_benchmarks_import_from_the_project_exists():
    """Benchmarks are not run by the suite (hours on 2 cores), so a name removed or renamed in the
    code, or in a benchmark helper module they share, would only show when someone runs them."""
    import importlib
    import importlib.util
    import sys

    bench = ROOT / "benchmarks"
    siblings = {p.stem for p in bench.glob("*.py")}
    sys.path.insert(0, str(bench))
    try:
        missing = []
        for p in sorted(bench.glob("*.py")):
            for node in ast.walk(ast.parse(p.read_text(), str(p))):
                if isinstance(node, ast.ImportFrom) and node.module and not node.level and (
                        node.module.split(".")[0] in {"infdist_core", "infdist_assets"} or node.module in siblings):
                    module = importlib.import_module(node.module)
                    missing += [f"{p.name}: {node.module}.{a.name}" for a in node.names
                                if not hasattr(module, a.name) and not (  # a submodule of a package counts
                                    hasattr(module, "__path__") and importlib.util.find_spec(f"{node.module}.{a.name}"))]
        assert not missing, missing
    finally:
        sys.path.remove(str(bench))
