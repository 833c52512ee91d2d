"""The package layout: the library never imports the study layer, and the README lists every module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ibs_study"
README = PACKAGE.parent / "README.md"
# the study layer and the commands (which serve both layers); every other module is the library
ABOVE_THE_LIBRARY = ("study", "cli.py", "__main__.py")


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports (``import a.b`` and ``from a.b import c`` give ``a.b``; a
    ``from a import b`` also gives ``a.b``), at any depth of the file (lazy imports included)."""
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def library_files() -> list[Path]:
    return sorted(
        p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in ABOVE_THE_LIBRARY
    )


def test_imported_modules_sees_lazy_and_from_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "import os\n\ndef f():\n    from ibs_study import study\n    from ibs_study.study.runs import x\n"
    )
    assert imported_modules(source) == {
        "os",
        "ibs_study",
        "ibs_study.study",
        "ibs_study.study.runs",
        "ibs_study.study.runs.x",
    }


@pytest.mark.parametrize("path", library_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_library_does_not_import_the_study(path):
    study = sorted(
        m for m in imported_modules(path) if m == "ibs_study.study" or m.startswith("ibs_study.study.")
    )
    assert not study, f"{path.relative_to(PACKAGE.parent)} imports the study layer: {study}"


def test_readme_architecture_lists_every_top_level_module_and_package():
    """The README's architecture block names each entry of ``ls ibs_study`` (and nothing that is gone)."""
    block = README.read_text().split("## Architecture", 1)[1].split("```", 2)[1]
    listed = set(re.findall(r"^  ([a-z_]+(?:\.py|/))", block, flags=re.M))
    present = {p.name + ("/" if p.is_dir() else "") for p in PACKAGE.iterdir() if not p.name.startswith("__")}
    assert listed == present
