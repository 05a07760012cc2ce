"""The package's layout: import direction and the one family list.

Every ``import`` of a ``t2igan`` module is read from the source (also those inside functions),
so a circle hidden in a function counts as a circle."""
from __future__ import annotations

import ast
from pathlib import Path

import t2igan

PKG = Path(t2igan.__file__).parent


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The t2igan modules ``path`` imports (``from t2igan.x import y`` counts as t2igan.x.y when
    that is a module, else t2igan.x); the bare package ``t2igan`` (T2IError) is left out."""
    name = module_name(path)
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(pkg.split(".")[: len(pkg.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        out.update(t for t in targets if t in modules and t != "t2igan")
    return out


def graph() -> dict[str, set[str]]:
    files = sorted(PKG.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports_of(f, modules) - {module_name(f)} for f in files}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
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

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_sees_imports_inside_functions():
    g = graph()
    assert "t2igan.pipeline" in g["t2igan.cli"]  # cli imports Pipeline inside cmd_sample only
    assert "t2igan.families.registry" in g["t2igan.pipeline"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle():
    assert cycles(graph()) == []


def test_inference_text_and_core_never_import_training():
    bad = []
    for mod, deps in graph().items():
        layer = mod.split(".")[1] if "." in mod else ""
        if layer in ("pipeline", "eval", "serve", "text", "core", "models", "data", "families", "style"):
            bad += [f"{mod} -> {d}" for d in deps if d.startswith("t2igan.train")]
    assert bad == []


def test_lower_layers_import_nothing_above_them():
    """core imports no other t2igan layer; models only models and core; families never the pipeline."""
    g = graph()
    for mod, deps in g.items():
        if mod.startswith("t2igan.core"):
            assert all(d.startswith("t2igan.core") for d in deps), (mod, deps)
        if mod.startswith("t2igan.models"):
            assert all(d.startswith(("t2igan.models", "t2igan.core")) for d in deps), (mod, deps)
        if mod.startswith("t2igan.families"):
            assert not any(d.startswith(("t2igan.pipeline", "t2igan.serve", "t2igan.cli")) for d in deps), (mod, deps)
