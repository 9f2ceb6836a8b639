"""The package's layers look only down: every import statement of every module (inside functions
too) is parsed, mapped to its layer node, and checked.

A node is a subpackage (``centernet.models``, ``centernet.weights``, ``centernet.engine``,
``centernet.data``) or a top-level module (``centernet.io``, ``centernet.export``, ...); the
package's ``__init__`` is the node ``centernet``. docs/architecture.md draws the same layers.
"""

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "centernet"

# Bottom to top; a node may import the nodes of the layers below its own, never those above nor
# those beside it in its own layer.
LAYERS = [
    ["centernet.io", "centernet.allocator"],
    ["centernet.config", "centernet.targets", "centernet.losses", "centernet.decode", "centernet.nms",
     "centernet.viz"],
    ["centernet.data", "centernet.models"],
    ["centernet.weights", "centernet.inference"],
    ["centernet.builder", "centernet.export"],
    ["centernet.engine"],
    ["centernet.serve"],
    ["centernet"],
    ["centernet.cli"],
    ["centernet.__main__"],
]


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def node_of(module: str) -> str:
    """``centernet.engine.trainer`` -> ``centernet.engine``; ``centernet.io`` -> itself."""
    return ".".join(module.split(".")[:2])


def imported_modules(path: Path, modules: set[str], root: Path = ROOT) -> list[tuple[str, int]]:
    """Every centernet module ``path`` imports, at any depth of its code, with the line."""
    name = module_name(path, root)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = []
    for statement in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(statement, ast.Import):
            found += [(alias.name, statement.lineno) for alias in statement.names]
        elif isinstance(statement, ast.ImportFrom):
            base = statement.module or ""
            if statement.level:  # relative: from .. import x, from .x import y
                anchor = package[:len(package) - statement.level + 1]
                base = ".".join(anchor + ([statement.module] if statement.module else []))
            for alias in statement.names:  # `from package import module` imports the module
                target = f"{base}.{alias.name}"
                found.append((target if target in modules else base, statement.lineno))
    return [(target, line) for target, line in found if target.split(".")[0] == "centernet"]


def import_graph(package: Path = PACKAGE) -> dict[str, dict[str, list[str]]]:
    """``{node: {imported node: ["module:line", ...]}}`` between distinct nodes."""
    paths = sorted(package.rglob("*.py"))
    modules = {module_name(path, package.parent) for path in paths}
    graph: dict[str, dict[str, list[str]]] = {}
    for path in paths:
        source = module_name(path, package.parent)
        for target, line in imported_modules(path, modules, package.parent):
            if node_of(source) != node_of(target):
                graph.setdefault(node_of(source), {}).setdefault(node_of(target), []).append(f"{source}:{line}")
    return graph


def find_cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph.get(node, {}):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def describe(cycle: list[str], graph) -> str:
    """``a -> b (a.x:12, ...); b -> a (b.y:3)``: the edges inside a cycle with where they are."""
    return "; ".join(f"{a} -> {b} ({', '.join(graph[a][b])})" for a in cycle for b in cycle
                     if b in graph.get(a, {}))


def test_no_import_cycle_between_subpackages():
    graph = import_graph()
    cycles = find_cycles(graph)
    assert not cycles, "import cycles: " + " | ".join(describe(cycle, graph) for cycle in cycles)


def test_every_node_is_in_a_layer():
    nodes = {node_of(module_name(path)) for path in PACKAGE.rglob("*.py")}
    placed = {node for layer in LAYERS for node in layer}
    assert nodes == placed, f"not in LAYERS: {sorted(nodes - placed)}; gone: {sorted(placed - nodes)}"


def test_layers_import_only_downward():
    level = {node: depth for depth, layer in enumerate(LAYERS) for node in layer}
    upward = [f"{a} -> {b} ({', '.join(where)})" for a, targets in import_graph().items()
              for b, where in targets.items() if level[b] >= level[a]]
    assert not upward, "imports that do not look down: " + "; ".join(upward)


def test_no_private_name_crosses_modules():
    """A ``_name`` belongs to its module: imported from elsewhere it is an interface, to be named so."""
    crossing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for statement in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(statement, ast.ImportFrom) and (statement.level or (statement.module or "").startswith("centernet")):
                crossing += [f"{module_name(path)}:{statement.lineno} {alias.name}" for alias in statement.names
                             if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not crossing, "private names imported from another module: " + "; ".join(crossing)


def test_no_patching_and_no_private_torch_names_in_the_package():
    """Production code does not swap functions at run time (``unittest.mock``) nor lean on
    PyTorch's private names (``torch._shape_as_tensor``, ``torch.onnx.symbolic_helper._is_none``)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{module_name(path)}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import):
                found += [f"{where} import {alias.name}" for alias in node.names if alias.name.startswith("unittest")]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("unittest", "torch"):
                if node.module.startswith("unittest") or any(part.startswith("_") for part in node.module.split(".")):
                    found.append(f"{where} from {node.module}")
                found += [f"{where} {node.module}.{alias.name}" for alias in node.names
                          if node.module.startswith("torch") and alias.name.startswith("_")]
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                chain = node.value
                while isinstance(chain, ast.Attribute):
                    chain = chain.value
                if isinstance(chain, ast.Name) and chain.id in ("torch", "symbolic_helper"):
                    found.append(f"{where} .{node.attr}")
    assert not found, "tricks in production code: " + "; ".join(found)


def test_architecture_page_draws_these_layers():
    """docs/architecture.md lists the layers, bottom first, one line each: ``N. node, node``."""
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    listed = [[name.strip().strip("`") for name in names.split(",")]
              for names in re.findall(r"^\d+\. (`centernet[^\n]*?)(?:  |$| —)", page, flags=re.M)]
    assert listed == LAYERS


def resolve(dotted: str):
    """The object a dotted name such as ``centernet.engine.predict.Detector.from_checkpoint`` names."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for name in parts[split:]:
            target = getattr(target, name)
        return target
    raise ModuleNotFoundError(dotted)


def test_architecture_page_names_what_exists():
    """Every module, file and function the page names (``engine/predict.Detector.from_checkpoint``,
    ``weights/hub.py``, ``centernet.create_model``) is in the code under that name."""
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    tops = {path.stem for path in PACKAGE.iterdir() if path.suffix == ".py" or (path / "__init__.py").is_file()}
    named = set()
    for path, attributes in re.findall(r"(?<![\w/.$])((?:[a-z_]+/)*[a-z_]+)\.([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)", page):
        if path.split("/")[0] in tops and attributes != "py":
            named.add(f"centernet.{path.replace('/', '.')}.{attributes}")
    named |= {name for name in re.findall(r"`(centernet(?:\.\w+)+)`", page)}
    files = re.findall(r"`((?:[a-z_]+/)*[a-z_]+\.py)`", page)
    assert len(named) > 40 and len(files) > 20  # the page names things, and the patterns find them
    missing = [name for name in sorted(named) if not _exists(name)]
    missing += [file for file in files if not ((PACKAGE / file).is_file() or (ROOT / file).is_file())]
    assert not missing, f"docs/architecture.md names what the code lacks: {missing}"


def _exists(dotted: str) -> bool:
    if dotted == "centernet.__main__":  # importing it runs the command line
        return (PACKAGE / "__main__.py").is_file()
    try:
        resolve(dotted)
    except (ModuleNotFoundError, AttributeError):
        return False
    return True


# --- the checker itself, on packages written for the purpose --------------------------------------

def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "centernet" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "centernet"


@pytest.mark.parametrize("files, expected", [
    ({"__init__.py": "", "models/__init__.py": "def f():\n    from ..weights import load\n",
      "weights/__init__.py": "from ..models import build\n"}, [["centernet.models", "centernet.weights"]]),
    ({"__init__.py": "", "export.py": "import centernet.engine.predict\n",
      "engine/__init__.py": "", "engine/bench.py": "from centernet import export\n"},
     [["centernet.engine", "centernet.export"]]),
    ({"__init__.py": "", "io.py": "", "weights/__init__.py": "from .. import io\n",
      "engine/__init__.py": "from ..weights import x\n"}, []),
])
def test_the_checker_finds_cycles_hidden_in_functions(files, expected, tmp_path):
    assert find_cycles(import_graph(write_package(tmp_path, files))) == expected
