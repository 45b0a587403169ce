"""The import direction app -> jobs -> ia3engine holds, and peft is never a runtime import."""

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
