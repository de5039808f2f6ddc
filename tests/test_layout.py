"""The house as its folders draw it: every wing says what lives there, no module reads another's private names.

That each wing imports only the wings below it is import-linter's contract
in pyproject.toml (``lint-imports``, run in CI); these tests check what it
does not.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cnnx"
WINGS = ["base", "compute", "io", "sources", "explain", "render", "app"]
MODULES = sorted(p.relative_to(PACKAGE).with_suffix("").as_posix() for p in PACKAGE.rglob("*.py")
                 if not p.stem.startswith("__"))


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """Every cnnx module a file imports (at the top or inside a function), dotted below cnnx, with the names it
    takes from it."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cnnx"):
            module = node.module.removeprefix("cnnx").lstrip(".")
            for alias in node.names:
                found.append((module, [alias.name]) if module else (alias.name, []))
        elif isinstance(node, ast.Import):
            found += [(a.name.removeprefix("cnnx."), []) for a in node.names if a.name.startswith("cnnx.")]
    return found


def test_the_folders_are_the_wings_and_each_says_what_lives_there():
    """cnnx/ holds the seven wings (and data folders); each wing's __init__ says in its docstring what it holds."""
    folders = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert folders == sorted([*WINGS, "models"])
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py", "__main__.py"]
    for wing in WINGS:
        docstring = ast.get_docstring(ast.parse((PACKAGE / wing / "__init__.py").read_text()))
        assert docstring and "Import" in docstring, wing


def test_the_import_contract_names_every_wing_in_order():
    """import-linter's layers contract lists the wings top to bottom, as the architecture page draws them."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = config["contracts"]
    assert contract["type"] == "layers" and contract["layers"] == [f"cnnx.{w}" for w in reversed(WINGS)]


@pytest.mark.parametrize("name", MODULES)
def test_no_private_names_across_modules(name):
    """No module imports another's underscore names or reads them as attributes of an imported module."""
    path = PACKAGE / f"{name}.py"
    imported = set()
    for module, names in _imports(path):
        if module.startswith("__"):  # cnnx.__version__
            continue
        assert not any(part.startswith("_") for part in module.split(".")), f"{name} imports the private {module}"
        assert not [n for n in names if n.startswith("_")], f"{name} takes private names from {module}: {names}"
        imported.add(module.split(".")[-1])
        imported.update(names)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in imported:
            assert not node.attr.startswith("_"), f"{name} reads {node.value.id}.{node.attr}"


@pytest.mark.parametrize("name", MODULES)
def test_every_module_says_its_job(name):
    """Every module opens with a docstring whose first line says what it is for."""
    docstring = ast.get_docstring(ast.parse((PACKAGE / f"{name}.py").read_text()))
    assert docstring and len(docstring.splitlines()[0]) > 20
