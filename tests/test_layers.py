"""The package's layers, read from its imports with ast (module-level and lazy ones alike).

A module may import its own layer and the layers below it, never one above; no two modules import each other
round a cycle. docs/architecture.md draws the layers; a new module goes in the folder of its layer.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "repa_mdlm"
# bottom to top; a layer is a subpackage (or, at the bottom, the two top-level modules)
LAYERS = ["base", "config", "data", "model", "teachers", "training", "evaluation", "analysis", "reporting",
          "bench", "workflow"]
BASE = {"io", "layout"}  # the one writer and the file names: every layer may use them
TOP = {"__init__.py", "__main__.py", "io.py", "layout.py"}
MAX_MODULE, MAX_FUNCTION, MAX_CLASS = 400, 80, 200


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["repa_mdlm", *parts])


def layer_of(module: str) -> str | None:
    parts = module.split(".")[1:]
    if not parts or parts[0] == "__main__":
        return None  # the package itself and `python -m repa_mdlm`: above every layer
    return "base" if parts[0] in BASE else parts[0]


def imports(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, module) for each repa_mdlm module a file imports; `from x import name` counts as x, unless name
    is a module of its own."""
    here = module_name(path, root)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    known = {module_name(p, root) for p in root.rglob("*.py")}
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "repa_mdlm"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "repa_mdlm":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                found.append((node.lineno, sub if sub in known else target))
    return sorted({(line, m) for line, m in found if m != here})


def import_graph(root: Path = PACKAGE) -> dict[str, list[tuple[int, str]]]:
    return {module_name(p, root): imports(p, root) for p in sorted(root.rglob("*.py"))}


def upward_imports(root: Path = PACKAGE) -> list[str]:
    rank = {name: i for i, name in enumerate(LAYERS)}
    broken = []
    for module, targets in import_graph(root).items():
        low = layer_of(module)
        for line, target in targets:
            high = layer_of(target)
            if low is None or high is None:
                continue
            if low not in rank or high not in rank:
                broken.append(f"{module}:{line} imports {target}: layer {low if low not in rank else high!r} "
                              f"is in no layer of LAYERS (put the module in a layer's folder)")
            elif rank[high] > rank[low]:
                broken.append(f"{module}:{line} imports {target}: layer {low} must not import the higher "
                              f"layer {high} ({' < '.join(LAYERS)})")
    return broken


def cycles(root: Path = PACKAGE) -> list[list[str]]:
    """Each strongly connected component of more than one module (Tarjan's algorithm)."""
    graph = {m: sorted({t for _, t in ts}) for m, ts in import_graph(root).items()}
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_layer_imports_a_higher_one():
    assert upward_imports() == []


def test_no_modules_import_each_other_round_a_cycle():
    assert cycles() == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles())


def test_only_the_entry_the_writer_and_the_file_names_stay_at_the_top():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert set(top) <= TOP, f"modules at the top of src/repa_mdlm: {sorted(set(top) - TOP)}; move each into its layer"
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert folders == sorted(LAYERS[1:]), f"subpackages {folders} against the layers {LAYERS[1:]}"


def test_no_module_function_or_class_is_over_the_house_limits():
    over = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        name = path.relative_to(PACKAGE)
        if len(text.splitlines()) > MAX_MODULE:
            over.append(f"{name}: {len(text.splitlines())} lines (at most {MAX_MODULE})")
        for node in ast.walk(ast.parse(text)):
            limit = {ast.FunctionDef: MAX_FUNCTION, ast.AsyncFunctionDef: MAX_FUNCTION, ast.ClassDef: MAX_CLASS}
            if type(node) in limit:
                lines = node.end_lineno - node.lineno + 1
                if lines > limit[type(node)]:
                    over.append(f"{name}:{node.lineno} {node.name}: {lines} lines (at most {limit[type(node)]})")
    assert over == []


def _planted(tmp_path: Path, module: str, text: str) -> Path:
    """A copy of the package with one file's text appended to."""
    import shutil

    root = tmp_path / "repa_mdlm"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    target = root.joinpath(*module.split(".")).with_suffix(".py")
    target.write_text(target.read_text() + text)
    return root


@pytest.mark.parametrize("module, text, expected", [
    ("model.diffusion", "\n\ndef _up():\n    from ..training.trainer import Trainer  # noqa\n",
     "imports repa_mdlm.training.trainer: layer model must not import the higher layer training"),
    ("config.specs", "\nfrom repa_mdlm.workflow import cli  # noqa\n",
     "imports repa_mdlm.workflow.cli: layer config must not import the higher layer workflow"),
])
def test_an_upward_import_is_named_with_both_layers(tmp_path, module, text, expected):
    root = _planted(tmp_path, module, text)
    line = len(root.joinpath(*module.split(".")).with_suffix(".py").read_text().splitlines())
    planted = [b.split(" (")[0] for b in upward_imports(root) if b not in upward_imports(PACKAGE)]
    assert planted == [f"repa_mdlm.{module}:{line} {expected}"]


def test_a_cycle_inside_one_layer_is_found(tmp_path):
    root = _planted(tmp_path, "analysis.stats", "\n\ndef _back():\n    from .correction import METHOD  # noqa\n")
    assert cycles(root) == [["repa_mdlm.analysis.correction", "repa_mdlm.analysis.stats"]]
