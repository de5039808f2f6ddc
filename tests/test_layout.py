"""The house as the README's layout table draws it: every import goes down, no module reads another's private names."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cnnx"


def _floors() -> dict[str, tuple[int, int]]:
    """Each module of the README's layout table: (floor, place in its row)."""
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Layout") :].split("\n\n")[2]
    floors = {}
    for row in table.splitlines()[2:]:
        floor, modules = row.split("|")[1:3]
        for place, name in enumerate(re.findall(r"`(\w+)\.py`", modules)):
            floors[name] = (int(floor), place)
    return floors


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """Every cnnx module a file imports (at the top or inside a function), with the names it takes from it."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cnnx"):
            module = node.module.removeprefix("cnnx").lstrip(".")
            for alias in node.names:
                if module:
                    found.append((module.split(".")[0], [alias.name]))
                else:  # from cnnx import runtime
                    found.append((alias.name, []))
        elif isinstance(node, ast.Import):
            found += [(a.name.split(".")[1], []) for a in node.names if a.name.startswith("cnnx.")]
    return found


MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("__"))


def test_every_module_is_in_the_table():
    """The layout table lists every module of the package, and nothing that is not there."""
    assert sorted(_floors()) == MODULES


@pytest.mark.parametrize("name", MODULES)
def test_imports_go_down(name):
    """A module imports only from lower floors, or from modules listed before it on its own floor."""
    floors = _floors()
    for module, _ in _imports(PACKAGE / f"{name}.py"):
        if module in ("__version__", "models") or module not in floors:
            continue
        assert floors[module] < floors[name], f"{name} (floor {floors[name]}) imports {module} (floor {floors[module]})"


@pytest.mark.parametrize("name", MODULES)
def test_no_private_names_across_modules(name):
    """No module imports another's underscore names or reads them as attributes of an imported module."""
    path = PACKAGE / f"{name}.py"
    imported = set()
    for module, names in _imports(path):
        if module.startswith("__"):  # cnnx.__version__
            continue
        assert not module.startswith("_"), f"{name} imports the private module {module}"
        assert not [n for n in names if n.startswith("_")], f"{name} takes private names from {module}: {names}"
        imported.add(module)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in imported:
            assert not node.attr.startswith("_"), f"{name} reads {node.value.id}.{node.attr}"


@pytest.mark.parametrize("name", MODULES)
def test_every_module_says_its_job(name):
    """Every module opens with a docstring whose first line says what it is for."""
    docstring = ast.get_docstring(ast.parse((PACKAGE / f"{name}.py").read_text()))
    assert docstring and len(docstring.splitlines()[0]) > 20
