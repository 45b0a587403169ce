"""The `ia3` command starts light: building its parser loads no heavy package, and the only
function-local imports of the project's own modules stand in the command-line modules."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "accelerate", "bitsandbytes", "datasets", "pandas", "gradio")
PROBE = (
    "import sys\n"
    "from app.cli import build_parser\n"
    "build_parser().format_help()\n"
    "print(' '.join(sorted(name for name in {heavy} if name in sys.modules)))\n"
)


def loaded_by(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(out.stdout.split())


def test_building_the_parser_loads_no_heavy_package():
    assert loaded_by(PROBE.format(heavy=HEAVY)) == set()


def test_the_probe_sees_a_heavy_package():
    assert loaded_by("import torch\n" + PROBE.format(heavy=HEAVY)) == {"torch"}


def local_import_files(package: str) -> set[str]:
    marked = re.compile(r"^\s+(from|import) \S+.*# noqa: PLC0415")
    return {
        str(path.relative_to(ROOT))
        for path in (ROOT / package).rglob("*.py")
        if any(marked.match(line) for line in path.read_text().splitlines())
    }


def is_command_module(path: str) -> bool:
    name = Path(path).stem
    return name == "cli" or name.startswith("cli_") or name.endswith("_cli")


def test_local_imports_only_in_command_modules():
    files = set().union(*(local_import_files(p) for p in ("ia3engine", "jobs", "app")))
    assert files, "the command handlers' deferred imports are marked with noqa: PLC0415"
    assert [f for f in sorted(files) if not is_command_module(f)] == []
