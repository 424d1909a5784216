"""The house (STYLE.md §1, README "Architecture"): imports point down only, and nothing circles.

Every import of every module under ``nfd/`` is read with `ast` (imports inside functions count), and
each top-level part is given its layer. A part may import only parts of strictly lower layers;
the parts of one layer do not import each other.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent / "nfd"

# the layers, bottom first (README "Architecture" draws the same picture)
LAYERS: list[tuple[str, ...]] = [
    ("_typing", "_results"),
    ("param", "tasks"),
    ("nn",),
    ("model", "solver"),
    ("dynamics",),
    ("train", "limit"),
    ("config",),
    ("experiments",),
    ("analysis", "runs"),
    ("reports", "plots"),
    ("gallery",),
    ("cli",),
]
RANK = {part: i for i, layer in enumerate(LAYERS) for part in layer}


def _module(path: pathlib.Path) -> list[str]:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imports(path: pathlib.Path) -> set[str]:
    """The top-level nfd parts that ``path`` imports (relative and absolute imports)."""
    mod = _module(path)
    package = mod if path.name == "__init__.py" else mod[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = base + (node.module.split(".") if node.module else [])
                names = [target] if node.module else [target + [a.name] for a in node.names]
            else:
                names = [(node.module or "").split(".")]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".") for a in node.names]
        else:
            continue
        found.update(n[1] for n in names if len(n) > 1 and n[0] == "nfd")
    return found


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        mod = _module(path)
        if len(mod) < 2:  # nfd/__init__.py: the curated public names
            continue
        edges.setdefault(mod[1], set()).update(_imports(path) - {mod[1]})
    return edges


def test_every_part_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in ROOT.iterdir() if p.name != "__init__.py"}
    parts = {p for p in parts if not p.startswith("__")}
    assert parts <= set(RANK), f"parts without a layer: {sorted(parts - set(RANK))}"


def test_imports_point_down_only():
    upward = sorted(
        f"{a} -> {b}"
        for a, targets in _edges().items()
        for b in targets
        if RANK.get(b, -1) >= RANK[a]
    )
    assert not upward, f"imports that do not point down: {upward}"


def test_no_import_circles():
    edges = _edges()

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in edges.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    circles = sorted(a for a in edges if a in reachable(a))
    assert not circles, f"parts on an import circle: {circles}"


def test_solver_knows_nothing_of_neural_networks():
    """STYLE.md §1: `nfd.solver` imports only `_typing` and `_results`."""
    assert _edges().get("solver", set()) <= {"_typing", "_results"}


def test_function_level_and_relative_imports_are_read(tmp_path):
    """The parser sees an import hidden inside a function, relative or absolute (a check that
    would pass vacuously if it missed them would be worthless)."""
    fake = ROOT / "plots" / "_probe_for_test.py"
    source = "def f():\n    from ..experiments import run_finite\n    import nfd.limit._matrix\n"
    fake.write_text(source)
    try:
        assert _imports(fake) == {"experiments", "limit"}
    finally:
        fake.unlink()
