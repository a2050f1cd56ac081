"""The project's lint rules (pyproject.toml [tool.ruff]) hold over the whole tree."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def test_ruff_is_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        pytest.fail("ruff is not installed: run scripts/setup.sh test")
    out = subprocess.run([ruff, "check", "--output-format", "concise", str(ROOT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_ceiling_division_is_spelled_once():
    # golden.numerics.ceil_div is the one spelling; a second one is a copy that can drift.
    found = [f"{p.relative_to(ROOT)}:{i}" for folder in ("golden", "hdl", "sim", "tests", "scripts")
             for p in sorted((ROOT / folder).rglob("*.py"))
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if "-(-" in line and p not in (ROOT / "golden" / "numerics.py", Path(__file__))]
    assert found == []


def test_every_check_raises_a_project_error():
    """Every ValueError/TypeError the project raises is one of its own (golden.errors.InputError,
    InputTypeError or a subclass), so that the command line can tell a user's bad input (one line,
    exit status 1) from a bug (exit status 3, the traceback under --debug)."""
    import re

    bare = re.compile(r"\braise (ValueError|TypeError)\b")
    found = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for package in ("golden", "hdl", "sim") for path in sorted((ROOT / package).rglob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), 1) if bare.search(line)]
    assert found == [], "\n".join(found)


def test_every_slow_test_resolves_its_fixtures():
    # The fast suite never sets the slow tests up: a fixture they lost (renamed, moved, deleted)
    # would only show in the hours-long slow run. pytest's setup plan resolves every fixture
    # without running one.
    out = subprocess.run([sys.executable, "-m", "pytest", "--setup-plan", "-q", "-p", "no:cacheprovider",
                          "-p", "no:xdist", "-m", "slow", str(ROOT / "tests")],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and " deselected" in out.stdout, out.stdout[-3000:] + out.stderr[-2000:]
