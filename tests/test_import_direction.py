"""The import direction app -> jobs -> ia3engine holds, and peft is never a runtime import.

Inside ia3engine: method <- data <- training <- serve <- cli (see INNER_FORBIDDEN)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> top-level modules it must never import
FORBIDDEN = {
    "ia3engine": {"app", "jobs", "gradio", "sqlalchemy", "alembic", "peft"},
    "jobs": {"app", "gradio", "peft"},
    "app": {"peft"},
}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downwards(package):
    offenders = []
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_modules(path) & FORBIDDEN[package]
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {', '.join(sorted(bad))}")
    assert not offenders, "imports against the direction app -> jobs -> ia3engine:\n" + "\n".join(
        offenders
    )


def test_checker_sees_a_forbidden_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import os\nfrom jobs.queue import enqueue\nimport gradio as gr\n")
    assert imported_modules(sample) == {"os", "jobs", "gradio"}


# Inside ia3engine: the method (ia3engine/*.py) knows nothing of data/, training/ or serve/;
# data/ needs nothing but errors from the method and nothing from training/ or serve/;
# training/ never imports serve/. The CLI and the package face (__init__) sit on top.
METHOD_FILES = sorted(
    p for p in (ROOT / "ia3engine").glob("*.py") if p.name not in {"cli.py", "__init__.py"}
)
METHOD_MODULES = tuple(f"ia3engine.{p.stem}" for p in METHOD_FILES if p.stem != "errors")
TOP = ("ia3engine.cli",)
INNER_FORBIDDEN = {
    "method": ("ia3engine.data", "ia3engine.training", "ia3engine.serve", *TOP),
    "data": ("ia3engine.training", "ia3engine.serve", *TOP, *METHOD_MODULES),
    "training": ("ia3engine.serve", *TOP),
}
INNER_FILES = {
    "method": METHOD_FILES,
    "data": sorted((ROOT / "ia3engine" / "data").rglob("*.py")),
    "training": sorted((ROOT / "ia3engine" / "training").rglob("*.py")),
}


def project_imports(path: Path, root: Path = ROOT) -> set[str]:
    """Every dotted name a module imports, relative imports resolved against its package."""
    parts = path.relative_to(root).with_suffix("").parts
    package = parts[:-1]  # a module's package; an __init__'s parts end in "__init__" too
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = list(package[: len(package) - node.level + 1]) if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def inner_violations(path: Path, area: str, root: Path = ROOT) -> list[str]:
    forbidden = INNER_FORBIDDEN[area]
    return sorted(
        name
        for name in project_imports(path, root)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    )


@pytest.mark.parametrize("area", sorted(INNER_FORBIDDEN))
def test_engine_parts_import_only_downwards(area):
    assert INNER_FILES[area], f"no files found for {area}"
    offenders = []
    for path in INNER_FILES[area]:
        bad = inner_violations(path, area)
        if bad:
            offenders.append(f"{path.relative_to(ROOT)} imports {', '.join(bad)}")
    assert not offenders, f"imports against the engine's inner direction ({area}):\n" + "\n".join(
        offenders
    )


def test_inner_checker_sees_forbidden_imports_relative_ones_too(tmp_path):
    sample = tmp_path / "ia3engine" / "data" / "sample.py"
    sample.parent.mkdir(parents=True)
    sample.write_text(
        "import os\nfrom ..training.run import train\nfrom ia3engine import model\n"
        "from .read import Table\n"
    )
    assert inner_violations(sample, "data", root=tmp_path) == [
        "ia3engine.model",
        "ia3engine.training.run",
        "ia3engine.training.run.train",
    ]
    method = tmp_path / "ia3engine" / "model.py"
    method.write_text("from . import serve\nfrom .errors import AdapterError\n")
    assert inner_violations(method, "method", root=tmp_path) == ["ia3engine.serve"]
