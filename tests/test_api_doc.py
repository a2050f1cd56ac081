"""docs/api.md is a runnable example: its Python blocks run in order, in one namespace, and their
asserts check real results (fast: the isa backend; slow: the same blocks on Verilator, measured)."""

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"
BACKEND_LINE = re.compile(r'^BACKEND = "isa"', re.M)


def blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", DOC.read_text(encoding="utf-8"), re.S | re.M)


def run_doc(backend: str) -> dict:
    code = blocks()
    assert len(BACKEND_LINE.findall(code[0])) == 1, "the first block sets BACKEND = \"isa\""
    code[0] = BACKEND_LINE.sub(f"BACKEND = {backend!r}", code[0])
    namespace: dict = {"__name__": "api_doc"}
    for i, block in enumerate(code):
        exec(compile(block, f"{DOC.name} block {i + 1}", "exec"), namespace)
    return namespace


def test_the_doc_has_its_blocks_and_asserts():
    code = blocks()
    assert len(code) >= 6 and all("assert " in block for block in code)


def test_the_api_doc_runs_on_the_isa_backend(capsys):
    ns = run_doc("isa")
    assert ns["report"].backend == "isa" and ns["report"].cycle_exact is None
    assert "tokens/s" in capsys.readouterr().out       # format_estimate printed


@pytest.mark.slow
def test_the_api_doc_runs_on_verilator():
    ns = run_doc("verilator")
    assert ns["report"].cycle_exact is True and ns["prof"].cycle_exact is True
    assert all(s.measured_cycles == s.predicted_cycles for s in ns["report"].steps)


def test_the_doc_uses_only_public_names():
    """Every name the doc imports is in its module's __all__."""
    import importlib

    text = "\n".join(blocks())
    found = re.findall(r"^from ((?:golden|sim|hdl)[\w.]*) import (.+)$", text, re.M)
    assert found
    for module, names in found:
        public = importlib.import_module(module).__all__
        for name in (n.strip() for n in names.split(",")):
            assert name in public, f"{module}.{name} is not in {module}.__all__"


API_MODULES = ["sim.design", "sim.runtime", "sim.numbers", "sim.machine.profile", "sim.machine.compiler",
               "sim.perf.model", "sim.perf.sweep", "golden.checkpoint", "golden.model", "golden.int_model",
               "golden.quantize", "golden.tokenizer", "golden.errors"]


@pytest.mark.parametrize("module", API_MODULES)
def test_every_public_name_exists(module):
    """Each module the API uses declares its public names, and each one is there."""
    import importlib

    mod = importlib.import_module(module)
    assert mod.__all__ and len(set(mod.__all__)) == len(mod.__all__)
    assert [n for n in mod.__all__ if not hasattr(mod, n)] == []
