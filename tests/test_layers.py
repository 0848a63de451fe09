"""The house's dependencies point one way: front ends (api/, protocols/) -> the data plane
(dataplane/) -> the engine (engine/, render/). Read from the imports of every module."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "service" / "mindscope"


def imports(folder: str) -> dict[str, set[str]]:
    """Each module of the folder and the mindscope modules it imports."""
    found = {}
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        tree = ast.parse(path.read_text())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mindscope"):
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names if alias.name.startswith("mindscope")}
        found[str(path.relative_to(PACKAGE))] = names
    return found


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("engine", ("mindscope.api", "mindscope.dataplane", "mindscope.protocols")),
        ("render", ("mindscope.api", "mindscope.dataplane", "mindscope.protocols", "mindscope.engine")),
        ("dataplane", ("mindscope.api", "mindscope.protocols")),
        ("protocols", ("mindscope.api",)),
        ("jobs", ("mindscope.api", "mindscope.protocols")),
    ],
)
def test_dependencies_point_from_the_front_ends_to_the_engine(folder, forbidden):
    wrong = {
        module: sorted(name for name in names if name.startswith(forbidden))
        for module, names in imports(folder).items()
        if any(name.startswith(forbidden) for name in names)
    }
    assert wrong == {}


def test_no_module_holds_a_models_input_size_as_a_default():
    for path in (PACKAGE / "engine").rglob("*.py"):
        text = path.read_text()
        assert "INPUT_SIZE" not in text and "CIFAR_INPUT_SHAPE" not in text, path
    for path in (PACKAGE / "dataplane").rglob("*.py"):
        assert "(32, 32" not in path.read_text(), path
