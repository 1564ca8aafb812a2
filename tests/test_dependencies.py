"""The import graph of src/contriever, read with `ast` (module-level and function-level imports):
no import cycle between modules, and no import against the layer order of ARCHITECTURE.md."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from code_shape import cycles, import_graph  # noqa: E402

# Lowest first. A module may import modules of its own layer's package or of a lower layer, never a
# higher one nor a peer package of its layer. `model.locate` (finding a model folder or Hub id and
# loading a tokenizer) sits with the foundations, so that data.prepare may load a tokenizer.
LAYERS = [
    ["contriever", "contriever.errors"],
    ["contriever.io", "contriever.machine", "contriever.model.locate"],
    ["contriever.data"],
    ["contriever.model"],
    ["contriever.retrieval"],
    ["contriever.evaluation"],
    ["contriever.training", "contriever.serving"],
    ["contriever.cli"],
]


def layer_of(module: str) -> tuple[int, str]:
    """(layer number, the prefix that placed it): the longest prefix of `module` in LAYERS."""
    best = None
    for number, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > len(best[1])
            ):
                best = (number, prefix)
    assert best is not None, f"{module} has no layer in LAYERS"
    return best


def back_edges(graph: dict[str, set[str]]) -> list[str]:
    found = []
    for module, targets in sorted(graph.items()):
        layer, prefix = layer_of(module)
        for target in sorted(targets):
            target_layer, target_prefix = layer_of(target)
            if target_layer > layer or (target_layer == layer and target_prefix != prefix):
                found.append(f"{module} -> {target} ({prefix} may not import {target_prefix})")
    return found


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_the_graph_sees_module_and_function_level_imports(graph):
    assert "contriever.errors" in graph["contriever.io"]  # module level
    assert "contriever.evaluation.beir_eval" in graph["contriever.cli.evaluate"]  # inside a function


def test_no_import_cycles(graph):
    assert cycles(graph) == []


def test_no_layer_back_edges(graph):
    assert back_edges(graph) == []


def test_the_checks_can_fail():
    graph = {"contriever.data.a": {"contriever.cli.main"}, "contriever.cli.main": {"contriever.data.a"}}
    assert cycles(graph) == [["contriever.cli.main", "contriever.data.a"]]
    assert back_edges(graph) == [
        "contriever.data.a -> contriever.cli.main (contriever.data may not import contriever.cli)"
    ]
    assert back_edges({"contriever.serving.x": {"contriever.training.y"}})  # peers of one layer


def test_nothing_outside_cli_imports_cli(graph):
    assert [
        m
        for m, targets in graph.items()
        if not m.startswith("contriever.cli") and any(t.startswith("contriever.cli") for t in targets)
    ] == []
