"""The shape of src/contriever, read with `ast` (nothing is imported): the import graph between its
modules (module-level and function-level imports), import cycles, and function lengths and parameter
counts.

    python tools/code_shape.py            # the longest functions and the most parameters (top 10 each)
    python tools/code_shape.py --cycles   # import cycles between modules, one a line

tests/test_dependencies.py uses `import_graph` to fail on a cycle or a layer back-edge.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "contriever"


def module_name(path: Path, src: Path = SRC) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def modules(src: Path = SRC) -> dict[str, Path]:
    return {module_name(path, src): path for path in sorted((src / PACKAGE).rglob("*.py"))}


def _imported(node: ast.AST, here: str, is_package: bool, known: set[str]) -> list[str]:
    """The contriever modules one import statement names (`from a import b` is a.b when b is a module)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = here.split(".") if is_package else here.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            root = ".".join(base + ([node.module] if node.module else []))
        else:
            root = node.module or ""
        names = [f"{root}.{alias.name}" if f"{root}.{alias.name}" in known else root for alias in node.names]
    else:
        return []
    found = []
    for name in names:
        while name and name not in known:  # contriever.x.y.func -> contriever.x.y
            name = name.rpartition(".")[0]
        if name and name.split(".")[0] == PACKAGE:
            found.append(name)
    return found


def import_graph(src: Path = SRC) -> dict[str, set[str]]:
    """module -> the contriever modules it imports anywhere in its body (package __init__s skipped as
    targets when a submodule is named: importing a.b runs a/__init__, which imports nothing here)."""
    found = modules(src)
    known = set(found)
    graph: dict[str, set[str]] = {}
    for name, path in found.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        edges = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                continue
            for target in _imported(node, name, path.name == "__init__.py", known):
                if target != name:
                    edges.add(target)
        graph[name] = edges
    for name, node in _type_checking_blocks(found):
        graph[name] -= node
    return graph


def _is_type_checking(test: ast.AST) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _type_checking_blocks(found: dict[str, Path]):
    """Imports under `if TYPE_CHECKING:` never run: they are no dependency."""
    known = set(found)
    for name, path in found.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                targets = set()
                for inner in ast.walk(node):
                    targets.update(_imported(inner, name, path.name == "__init__.py", known))
                yield name, targets


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def functions(src: Path = SRC):
    """(module, qualified name, lines, parameters) for every function and method."""
    for name, path in modules(src).items():
        tree = ast.parse(path.read_text())
        yield from _functions(tree, name, "")


def _functions(tree: ast.AST, module: str, prefix: str):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            params = [*args.posonlyargs, *args.args, *args.kwonlyargs]
            params = [p for p in params if p.arg not in ("self", "cls")]
            count = len(params) + (args.vararg is not None) + (args.kwarg is not None)
            lines = node.end_lineno - node.lineno + 1
            yield module, f"{prefix}{node.name}", lines, count
            yield from _functions(node, module, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, module, f"{prefix}{node.name}.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", action="store_true", help="list import cycles instead")
    parser.add_argument("--top", type=int, default=10, help="rows per table")
    args = parser.parse_args(argv)
    if args.cycles:
        found = cycles(import_graph())
        for component in found:
            print(" <-> ".join(component))
        print(f"{len(found)} import cycles")
        return 1 if found else 0
    rows = list(functions())
    print("longest functions (lines, def to last line):")
    for module, name, lines, _ in sorted(rows, key=lambda r: -r[2])[: args.top]:
        print(f"  {lines:4d}  {module}.{name}")
    print("most parameters (self/cls not counted; *args and **kwargs count one each):")
    for module, name, _, count in sorted(rows, key=lambda r: -r[3])[: args.top]:
        print(f"  {count:4d}  {module}.{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
