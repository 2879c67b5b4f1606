"""The package's layers, read from its source: runtime <- tools <- upstream glue <- method adapters
<- interface (the package facade, the CLI, the old-path aliases).

The import graph of ``anysr_plugin`` and ``adapters/`` (imported as ``anysr_plugin.adapters``) is
built with ``ast``, imports inside functions included.  It must have no cycle, no import from a
lower layer into a higher one, and nothing may import an old-path alias module.  The old paths
themselves must still import and be the moved modules."""
from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ((ROOT / "anysr_plugin", "anysr_plugin"), (ROOT / "adapters", "anysr_plugin.adapters"))
LAYERS = ("runtime", "tools", "glue", "adapters", "interface")
#: module paths the README, docs/ and examples/ (and users before the move) name
OLD_PATHS = ("errors", "limits", "files", "safe_yaml", "config", "gate", "recompute", "plan", "control", "injection",
             "unload", "export", "decoder", "checkpoint", "coords", "imresize", "data", "metrics", "plots", "runlock",
             "cost", "budget", "bench", "evaluate", "train", "demo", "checkout", "upstream", "blocks", "blocks.base",
             "blocks.edsr", "blocks.rdn", "blocks.registry", "reference", "reference.models", "reference.encoders",
             "reference.liif", "reference.srno")


def modules(packages=PACKAGES) -> dict:
    """{module name: (file, source)} of every module of the package and the adapters."""
    out = {}
    for base, prefix in packages:
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if prefix == "anysr_plugin" and parts[:1] == ["adapters"]:
                continue
            out[".".join([prefix] + parts)] = (path, path.read_text())
    return out


def layer(name: str, path: Path) -> str:
    if name.startswith("anysr_plugin.adapters"):
        return "adapters"
    for part in ("runtime", "tools", "glue"):
        if name == f"anysr_plugin.{part}" or name.startswith(f"anysr_plugin.{part}."):
            return part
    return "interface"


def is_alias(source: str) -> bool:
    """An old-path module: its docstring says "Old path"."""
    doc = ast.get_docstring(ast.parse(source)) or ""
    return doc.startswith("Old path")


def imports(mods: dict) -> dict:
    """{module: {imported module: line}}, every ``import`` / ``from ... import`` at any depth."""
    edges = {}
    for name, (path, source) in mods.items():
        is_pkg = path.name == "__init__.py"
        found = {}
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = base[:len(base) - node.level + 1]
                    where = ".".join(base + ([node.module] if node.module else []))
                else:
                    where = node.module or ""
                # `from PKG import submodule` imports the submodule; any other name comes from PKG itself
                targets = [f"{where}.{a.name}" if f"{where}.{a.name}" in mods else where for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in mods:  # the module a dotted name lies in
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found.setdefault(target, node.lineno)
        edges[name] = found
    return edges


def cycles(edges: dict) -> list:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def problems(mods: dict) -> list:
    """Every cycle, upward import and import of an alias, as readable lines."""
    edges = imports(mods)
    rank = {name: LAYERS.index(layer(name, path)) for name, (path, _) in mods.items()}
    aliases = {name for name, (_, source) in mods.items() if is_alias(source)}
    out = [f"cycle: {' <-> '.join(c)}" for c in cycles(edges)]
    for name, targets in sorted(edges.items()):
        for target, line in sorted(targets.items()):
            if rank[target] > rank[name]:
                out.append(f"upward: {name} ({LAYERS[rank[name]]}, line {line}) imports {target} "
                           f"({LAYERS[rank[target]]})")
            if target in aliases and name not in aliases:
                out.append(f"alias: {name} (line {line}) imports the old path {target}")
    return out


def test_no_cycle_no_upward_import_no_alias_import():
    mods = modules()
    assert {layer(n, p) for n, (p, _) in mods.items()} == set(LAYERS)
    assert problems(mods) == []


def _planted(tmp_path, relpath: str, line: str) -> list:
    """problems() of a copy of the source with `line` appended to one module."""
    copies = []
    for base, prefix in PACKAGES:
        target = tmp_path / base.name
        for path in base.rglob("*.py"):
            dest = target / path.relative_to(base)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(path.read_text())
        copies.append((target, prefix))
    planted = tmp_path / relpath
    planted.write_text(planted.read_text() + f"\n\ndef _planted():\n    {line}\n")
    return problems(modules(tuple(copies)))


def test_a_planted_upward_import_inside_a_function_fails(tmp_path):
    found = _planted(tmp_path, "anysr_plugin/runtime/plan.py", "from ..glue import official")
    assert "upward: anysr_plugin.runtime.plan (runtime, line" in "\n".join(found)
    assert any(p.startswith("cycle: ") and "anysr_plugin.runtime.plan" in p for p in found)  # official imports plan


def test_a_planted_cycle_within_a_layer_fails(tmp_path):
    found = _planted(tmp_path, "anysr_plugin/runtime/config.py", "from .blocks.registry import get_block_type")
    assert [p for p in found if p.startswith("cycle: ")] and not [p for p in found if p.startswith("upward")]


def test_a_planted_alias_import_fails(tmp_path):
    found = _planted(tmp_path, "adapters/liif.py", "from .. import control")
    line = len((ROOT / "adapters/liif.py").read_text().splitlines()) + 4
    assert found == [f"upward: anysr_plugin.adapters.liif (adapters, line {line}) imports anysr_plugin.control "
                     "(interface)",
                     f"alias: anysr_plugin.adapters.liif (line {line}) imports the old path anysr_plugin.control"]


@pytest.mark.parametrize("old", OLD_PATHS)
def test_old_paths_are_the_moved_modules(old):
    module = importlib.import_module(f"anysr_plugin.{old}")
    assert module.__name__.split(".")[1] in ("runtime", "tools", "glue")
    assert module.__name__.endswith("." + old.split(".")[-1])


def test_old_paths_that_merged_modules_keep_every_name():
    import anysr_plugin as anysr
    from anysr_plugin import launch, official
    from anysr_plugin.adapters import official_release, registry_hooks, structure
    from anysr_plugin.runtime import deferral, scale_source

    assert launch.install_registry_hooks is registry_hooks.install_registry_hooks and launch.run is anysr.glue.launch.run
    assert official.official_to_ours is official_release.official_to_ours
    assert official.official_config is anysr.glue.official.official_config
    assert structure.defer_features is deferral.defer_features and structure.CellSource is scale_source.CellSource
    for name in anysr.__all__:
        assert getattr(anysr, name) is not None
    assert anysr.cost is anysr.tools.cost and anysr.blocks is anysr.runtime.blocks  # attributes of the package too


def test_pickles_naming_old_paths_still_load():
    import pickle

    from anysr_plugin.runtime.blocks.edsr import AnySRResBlock
    from anysr_plugin.runtime.control import AnySRState

    assert pickle.loads(b"canysr_plugin.blocks.edsr\nAnySRResBlock\n.") is AnySRResBlock
    assert pickle.loads(b"canysr_plugin.control\nAnySRState\n.") is AnySRState
