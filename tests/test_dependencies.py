"""docs/dependencies.md, which pyproject.toml cites, gives a reason for every pinned package."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_pinned_package_has_its_reason_and_pin_in_docs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    doc = (ROOT / "docs" / "dependencies.md").read_text()
    pins = [*project["dependencies"], *(p for extra in project["optional-dependencies"].values() for p in extra)]
    assert len(pins) > 10
    for pin in pins:
        name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", pin).groups()
        rows = [line for line in doc.splitlines() if f"`{name}" in line]
        assert rows, f"docs/dependencies.md says nothing of {name}"
        assert any(f"| {version} |" in row for row in rows), f"docs/dependencies.md lacks {name}'s pin {version}"
