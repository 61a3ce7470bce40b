"""The import arrows of the house plan (/work/shared/DESIGN.md "Layers"), read from the source (AST) and checked in a
fresh interpreter:

* ``data_pipelines`` imports from ``vidrd_jax`` only its lowest layer (``LOWEST``), which imports nothing from
  either package;
* nothing in ``vidrd_jax`` imports ``data_pipelines`` except the recipes (the top floor) and the ``main`` of the
  entry points that wire the data in (``ENTRY_POINTS``): the trainer reaches the data through
  ``vidrd_jax.data_interface``;
* models, diffusion, parallel and tasks import neither the trainer nor the recipes, and only the recipes import the
  recipes (``python -m vidrd_jax.four_module`` aside, an alias of one).
"""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOWEST = {"vidrd_jax.cli", "vidrd_jax.config_loading", "vidrd_jax.data_interface", "vidrd_jax.media"}
ENTRY_POINTS = {"vidrd_jax/train.py": "main", "vidrd_jax/export.py": "main"}
RECIPE_ALIASES = {"vidrd_jax/four_module.py"}
LOWER = ("vidrd_jax/models/", "vidrd_jax/diffusion/", "vidrd_jax/parallel/", "vidrd_jax/tasks/")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, int, str | None]]:
    """``(imported module, line, enclosing top-level function or None)`` for every import statement of ``path``;
    ``from a import b`` counts as ``a.b`` (a submodule or a name of ``a``), relative imports are resolved."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = ".".join(package[:len(package) - child.level + 1] + [child.module or ""]).strip(".") \
                    if child.level else child.module
                found.extend((f"{base}.{alias.name}", child.lineno, function) for alias in child.names)
            inner = child.name if function is None and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                else function
            visit(child, inner)

    visit(ast.parse(path.read_text(), str(path)), None)
    return found


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _within(name: str, modules: set[str] | tuple[str, ...]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)


def test_data_pipelines_import_only_the_lowest_layer_of_vidrd_jax():
    bad = [f"{p.relative_to(ROOT)}:{line} imports {name}" for p in _sources("data_pipelines")
           for name, line, _ in imports(p) if _within(name, ("vidrd_jax",)) and not _within(name, LOWEST)]
    assert not bad, bad


def test_the_lowest_layer_imports_neither_package():
    paths = [ROOT / (m.replace(".", "/") + ".py") for m in LOWEST]
    bad = [f"{p.relative_to(ROOT)}:{line} imports {name}" for p in paths for name, line, _ in imports(p)
           if _within(name, ("vidrd_jax", "data_pipelines")) and not _within(name, LOWEST)]
    assert not bad, bad


def test_vidrd_jax_imports_data_pipelines_only_in_recipes_and_entry_points():
    bad = []
    for p in _sources("vidrd_jax"):
        rel = p.relative_to(ROOT).as_posix()
        if rel.startswith("vidrd_jax/recipes/"):
            continue
        entry = ENTRY_POINTS.get(rel, "")  # an import inside this function is allowed; "" names none
        bad += [f"{rel}:{line} imports {name}" for name, line, function in imports(p)
                if _within(name, ("data_pipelines",)) and function != entry]
    assert not bad, bad


def test_lower_layers_import_neither_the_trainer_nor_the_recipes():
    bad = []
    for p in _sources("vidrd_jax"):
        rel = p.relative_to(ROOT).as_posix()
        above = ("vidrd_jax.train", "vidrd_jax.train_config", "vidrd_jax.recipes") if rel.startswith(LOWER) else \
            ("vidrd_jax.recipes",)
        if rel.startswith("vidrd_jax/recipes/") or rel in RECIPE_ALIASES:
            continue
        bad += [f"{rel}:{line} imports {name}" for name, line, _ in imports(p) if _within(name, above)]
    assert not bad, bad


def test_the_trainer_runs_without_the_data_package_until_an_entry_point_wires_it_in():
    """Importing the trainer, every task and export loads no ``data_pipelines`` (nor through a string import); a
    config then needs the data package, and says so in one line; importing it registers it."""
    code = """
import sys
from vidrd_jax import export, train, train_config
from vidrd_jax.tasks import TASKS, get_task_class
for name in TASKS:
    get_task_class(name)
loaded = sorted(m for m in sys.modules if m.split(".")[0] == "data_pipelines")
assert not loaded, loaded
try:
    train_config.base_config()
except RuntimeError as e:
    assert "import data_pipelines" in str(e), e
else:
    raise AssertionError("base_config() worked without a data pipeline")
import data_pipelines
assert train_config.base_config().data.to_dict() == data_pipelines.get_default_config().to_dict()
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, capture_output=False)
