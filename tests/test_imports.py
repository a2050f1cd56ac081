"""The import graph of golden, hdl and sim: no cycle between modules, and no import against the layers.

The graph is read with ``ast`` from the source, so it holds every import, those inside functions too
(which only run when their code runs). The layers are golden <- hdl <- sim: golden imports neither hdl
nor sim, hdl does not import sim.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("golden", "hdl", "sim")
LAYER = {"golden": 0, "hdl": 1, "sim": 2}


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of :data:`PACKAGES` by dotted name (a package by its own name, for its ``__init__``)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _target(name: str, known: dict[str, Path]) -> str | None:
    """The module of ours that importing ``name`` runs (a package's ``__init__`` for a package)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(root: Path = ROOT) -> dict[str, set[tuple[str, int]]]:
    """Module -> the (module of ours, line) pairs it imports, at module level and inside functions."""
    known = modules(root)
    graph = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                wanted = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                # ``from pkg import name`` imports the submodule pkg.name when there is one
                wanted = [f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module
                          for alias in node.names]
            else:
                continue
            for want in wanted:
                target = _target(want, known)
                if target is not None and target != name:
                    edges.add((target, node.lineno))
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[tuple[str, int]]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w, _ in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_imports_inside_functions_and_relative_ones():
    graph = imports()
    targets = {name: {t for t, _ in edges} for name, edges in graph.items()}
    assert "sim.engine.bus" in targets["sim.flows.gemm"]            # from ..engine.bus import ... (module level)
    assert "sim.engine.runner" in targets["sim.runtime"]            # inside a function
    assert "golden.numerics" in targets["hdl.config"] or any("golden" in t for t in targets["hdl.top"])


def test_cycles_are_found():
    graph = {"a": {("b", 1)}, "b": {("c", 2)}, "c": {("a", 3)}, "d": {("a", 4)}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {("b", 1)}, "b": set()}) == []


def test_no_import_cycle():
    assert cycles(imports()) == []


def test_imports_follow_the_layers():
    """golden <- hdl <- sim: an import never reaches a higher layer."""
    wrong = [f"{name} imports {target} (line {line})"
             for name, edges in imports().items() for target, line in sorted(edges)
             if LAYER[target.split(".")[0]] > LAYER[name.split(".")[0]]]
    assert wrong == []


def test_no_module_reaches_into_another_modules_private_names():
    known = modules()
    wrong = []
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                if _target(module, known) is None or _target(module, known) == name:
                    continue
                wrong += [f"{name} line {node.lineno}: {module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert wrong == []


DOC = ROOT / "docs" / "architecture.md"


def drawn_layers(text: str) -> list[str]:
    """The folders of docs/architecture.md's figure, top to bottom (its continuation lines start blank)."""
    block = text.split("<!-- layers: top to bottom, checked by tests/test_imports.py -->\n```\n", 1)[1]
    block = block.split("```", 1)[0]
    return [line.split()[0] for line in block.splitlines() if line and not line[0].isspace()]


def _layer_of(module: str, drawn: list[str]) -> int:
    """Index in ``drawn`` of the deepest drawn folder holding ``module``."""
    path = module.replace(".", "/")
    best = [i for i, folder in enumerate(drawn)
            if path + ".py" == folder or (path + "/").startswith(folder)]
    assert best, f"{module} lies in no folder of the figure"
    return max(best, key=lambda i: len(drawn[i]))


def test_the_architecture_figure_draws_every_folder_and_the_real_layering():
    drawn = drawn_layers(DOC.read_text())
    packages = sorted(p.parent.relative_to(ROOT).as_posix() + "/" for package in PACKAGES
                      for p in (ROOT / package).rglob("__init__.py"))
    # every package folder is drawn (sim/ itself is the sum of its folders), and nothing else
    assert sorted(f for f in drawn if f.endswith("/")) == [p for p in packages if p != "sim/"]
    assert all((ROOT / f).exists() for f in drawn)
    # every module of sim/ lies in a drawn folder (a new top-level module must be drawn or moved)
    for name in modules():
        if name != "sim":
            _layer_of(name, drawn)
    upward = [f"{name} ({drawn[_layer_of(name, drawn)]}) imports {target} ({drawn[_layer_of(target, drawn)]})"
              for name, edges in imports().items() if name != "sim" for target, _ in edges
              if target != "sim" and _layer_of(target, drawn) < _layer_of(name, drawn)]
    assert upward == []



def test_every_import_of_our_modules_names_one_that_exists():
    """A module moved without its importers updated (`from .stream import ...` after stream.py left the
    folder) fails here, not only when the code that imports it runs."""
    known = modules()
    missing = []
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PACKAGES:
                module = node.module
            else:
                continue
            if module not in known:
                missing.append(f"{path.relative_to(ROOT)}:{node.lineno}: {module}")
    assert missing == []
