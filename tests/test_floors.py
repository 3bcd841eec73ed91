"""The house's floors, read from its imports (module level and inside functions): ``models/`` at the bottom,
the torch-free ``engine/`` on it, ``plugin_bridge/`` on the engine; ``data/``, ``training/`` and ``export/``
beside each other above them (training and export may read data's builds), ``backline/`` on top. Nothing
reaches up, no two rooms import each other, and no module imports itself round a circle."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOOR = {"models": 0, "engine": 1, "plugin_bridge": 2, "data": 3, "training": 3, "export": 3, "backline": 4}
BESIDE_ALLOWED = {("training", "data"), ("export", "data")}
# torch only inside functions of the optional torch backend and of LAION-CLAP (the clap extra)
TORCH_BACKEND_FILES = {"runtime.py", "clap.py"}


def imports() -> dict[str, set[str]]:
    """module -> the backline modules it imports ("room.module"), from every import statement in it."""
    edges: dict[str, set[str]] = {}
    for room in FLOOR:
        for path in (ROOT / room).glob("*.py"):
            module = f"{room}.{path.stem}"
            found = edges.setdefault(module, set())
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.level == 1:
                    found.update(f"{room}.{node.module or alias.name}" for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("backline."):
                    parts = node.module.split(".")
                    target = "backline" if parts[1] in ("cli", "bench_cli") else parts[1]
                    if len(parts) > 2:
                        found.add(f"{target}.{parts[2]}")
                    else:
                        found.update(f"{target}.{alias.name}" for alias in node.names)
    return edges


def test_no_room_imports_a_room_above_it_or_beside_it():
    wrong = []
    for module, targets in imports().items():
        room = module.split(".")[0]
        for target in targets:
            other = target.split(".")[0]
            if other == room or other not in FLOOR:
                continue
            if FLOOR[other] > FLOOR[room] or (FLOOR[other] == FLOOR[room] and (room, other) not in BESIDE_ALLOWED):
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_no_import_circles():
    edges = imports()
    circles, done = [], set()

    def visit(module, path):
        if module in path:
            circles.append(" -> ".join(path[path.index(module):] + [module]))
            return
        if module in done:
            return
        for target in sorted(edges.get(module, ())):
            visit(target, path + [module])
        done.add(module)

    for module in sorted(edges):
        visit(module, [])
    assert circles == []


def test_the_engine_and_the_bridge_import_torch_only_in_their_optional_backends():
    for room in ("engine", "plugin_bridge"):
        for path in (ROOT / room).glob("*.py"):
            tree = ast.parse(path.read_text())
            top = {alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
            top |= {node.module.split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom) and node.module}
            assert "torch" not in top, f"{path} imports torch at module level"
            inside = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                      for alias in node.names}
            assert "torch" not in inside or path.name in TORCH_BACKEND_FILES, path
