"""The hardware reads like the Amaranth library: no function in hdl/ runs over MAX_FUNCTION_LINES lines.

A long ``elaborate()`` is split into sub-components with their own signatures (or into named
helper methods where a sub-component would be artificial), the way ``amaranth.lib`` is written.
"""

import ast
from pathlib import Path

import pytest

HDL = Path(__file__).parents[2] / "hdl"
#: Longest function (its ``def`` line to its last line, decorators excluded) any module of hdl/ may hold.
MAX_FUNCTION_LINES = 120


def long_functions(source: str, limit: int = MAX_FUNCTION_LINES) -> list[tuple[str, int]]:
    """(qualified name, lines) of every function of ``source`` longer than ``limit`` lines."""
    found = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                lines = child.end_lineno - child.lineno + 1
                if lines > limit:
                    found.append((name, lines))
                visit(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def test_the_rule_sees_a_long_method_and_names_it():
    body = "\n".join(f"        x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    source = f"class Unit:\n    def elaborate(self, platform):\n{body}\n\n    def short(self):\n        return 1\n"
    assert long_functions(source) == [("Unit.elaborate", MAX_FUNCTION_LINES + 1)]
    assert long_functions(source, limit=MAX_FUNCTION_LINES + 1) == []


@pytest.mark.parametrize("module", sorted(p.name for p in HDL.glob("*.py")))
def test_no_function_in_hdl_is_over_the_limit(module):
    found = long_functions((HDL / module).read_text())
    assert not found, f"hdl/{module}: " + ", ".join(f"{name} is {n} lines (at most {MAX_FUNCTION_LINES})"
                                                   for name, n in found)
