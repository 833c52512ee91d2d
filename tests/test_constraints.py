"""constraints.txt (`make lock`) pins every dependency that pyproject.toml names, at a version its
specifier allows, and `make setup` / environment.yml install with it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"


def read_lock(text: str) -> dict[str, Version]:
    """`name==version` lines of a pip-compile output (annotations and comments skipped) by
    canonical name; any other requirement line, or a name pinned twice, is an error."""
    pins: dict[str, Version] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;#]+)", line.strip())
        assert match, f"constraints.txt: not an exact pin: {line!r}"
        name = canonicalize_name(match[1])
        assert name not in pins, f"constraints.txt: {name} pinned twice"
        pins[name] = Version(match[2])
    return pins


def unpinned(pyproject: dict, pins: dict[str, Version]) -> list[str]:
    """The direct dependencies of `pyproject` (runtime and every extra) that `pins` lacks or pins
    at a version outside their specifier."""
    project = pyproject["project"]
    declared = [
        *project["dependencies"],
        *(d for ds in project["optional-dependencies"].values() for d in ds),
    ]
    wrong = []
    for line in declared:
        requirement = Requirement(line)
        version = pins.get(canonicalize_name(requirement.name))
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            wrong.append(f"{line} (constraints.txt: {version or 'missing'})")
    return wrong


def test_every_direct_dependency_is_pinned_within_its_specifier():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = read_lock(LOCK.read_text())
    assert unpinned(pyproject, pins) == []
    assert pins[canonicalize_name("torch")] == Version("2.14.1")
    assert "pip" in pins  # `make setup` upgrades pip to the locked version too


def test_unpinned_reports_a_missing_pin_and_a_version_outside_the_specifier():
    pyproject = {
        "project": {
            "dependencies": ["numpy>=1.26", "torch==2.14.1"],
            "optional-dependencies": {"dev": ["pytest>=8"], "hf": ["transformers>=4.45"]},
        }
    }
    pins = read_lock("numpy==1.26.4\n    # via foo\ntorch==2.13.0\npytest==8.3.0\n")
    assert unpinned(pyproject, pins) == [
        "torch==2.14.1 (constraints.txt: 2.13.0)",
        "transformers>=4.45 (constraints.txt: missing)",
    ]


def test_setup_and_environment_install_with_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^LOCK := constraints\.txt$", makefile, re.M)
    stamp_prerequisites = re.search(r"^\$\(STAMP\):(.*)$", makefile, re.M)[1].split()
    assert {"pyproject.toml", "$(LOCK)"} <= set(stamp_prerequisites)
    installs = re.findall(r"^\t\$\(BIN\)/python -m pip install (.*)$", makefile, re.M)
    assert installs and all("-c $(LOCK)" in line for line in installs)
    assert "- -c constraints.txt" in (ROOT / "environment.yml").read_text()
