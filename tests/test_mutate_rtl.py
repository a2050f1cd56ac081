"""scripts/mutate_rtl.py (issue 19, mutation score): the site listing and the selection are
deterministic, a mutant changes exactly one site in a copy and never the worktree's hdl/, bad options
are one line. No simulation here: the measured run is recorded in docs/verification.md."""

from __future__ import annotations

import ast
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "mutate_rtl.py"

mutate_rtl = load_script("mutate_rtl")


def _hdl_digest() -> str:
    h = hashlib.sha256()
    for p in sorted((ROOT / "hdl").rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(ROOT)).encode() + p.read_bytes())
    return h.hexdigest()


def test_the_site_listing_and_the_selection_are_deterministic():
    first, second = mutate_rtl.sites(), mutate_rtl.sites()
    assert first == second
    assert len({s.id for s in first}) == len(first)
    assert {s.block for s in first} == set(mutate_rtl.BLOCK_FILES)
    assert {s.op for s in first} == set(mutate_rtl.OPERATORS)
    chosen = mutate_rtl.select(first, 30, 19)
    assert chosen == mutate_rtl.select(mutate_rtl.sites(), 30, 19)
    assert chosen != mutate_rtl.select(first, 30, 20)
    # Round-robin over the blocks: the first mutants come one from each block.
    n = len(mutate_rtl.BLOCK_FILES)
    assert {s.block for s in chosen[:n]} == set(mutate_rtl.BLOCK_FILES)
    # A shorter run is a prefix of a longer one with the same seed.
    assert mutate_rtl.select(first, 10, 19) == chosen[:10]
    assert [s.block for s in mutate_rtl.sites(["uart", "gemm"])] == sorted(
        (s.block for s in first if s.block in ("uart", "gemm")), key=["uart", "gemm"].index)


def test_a_mutant_changes_one_site_in_the_copy_and_leaves_hdl_untouched(tmp_path):
    before = _hdl_digest()
    every = mutate_rtl.sites()
    one_per_op = {}
    for s in mutate_rtl.select(every, len(every), 3):
        one_per_op.setdefault(s.op, s)
    assert set(one_per_op) == set(mutate_rtl.OPERATORS)
    for site in one_per_op.values():
        tree = tmp_path / site.id
        shutil.copytree(ROOT / "hdl", tree / "hdl", ignore=shutil.ignore_patterns("__pycache__"))
        mutate_rtl.apply(site, tree)
        original = (ROOT / site.file).read_bytes()
        mutated = (tree / site.file).read_bytes()
        new = site.replacement.encode()
        assert mutated == original[:site.start] + new + original[site.end:]
        assert original[site.start:site.end] != new
        assert ast.dump(ast.parse(mutated)) != ast.dump(ast.parse(original)), site.id
        changed = [p.name for p in (tree / "hdl").glob("*.py")
                   if p.read_bytes() != (ROOT / "hdl" / p.name).read_bytes()]
        assert changed == [Path(site.file).name]
    assert _hdl_digest() == before


def test_operators_edit_the_text_they_name():
    by_op = {}
    for s in mutate_rtl.sites(["gemm", "array"]):
        by_op.setdefault(s.op, []).append(s)
    src = {f: (ROOT / f).read_bytes() for f in ("hdl/gemm.py", "hdl/array.py")}
    text = lambda s: src[s.file][s.start:s.end].decode()  # noqa: E731
    assert all(text(s) in ("+", "-") and s.replacement == {"+": "-", "-": "+"}[text(s)] for s in by_op["arith"])
    assert all(text(s) in ("&", "|") for s in by_op["logic"])
    assert all(int(s.replacement) == int(text(s)) + 1 for s in by_op["const"])
    assert all(text(s).endswith(".eq", 0, text(s).index("(")) and s.replacement == "[]" for s in by_op["drop-sync"])
    assert all(s.replacement == "1" for s in by_op["force-high"])


@pytest.mark.parametrize(("args", "message"), [
    (["--mutants", "0"], "--mutants must be a positive integer, not '0'"),
    (["--seed", "x"], "--seed must be a non-negative integer, not 'x'"),
    (["--timeout", "-5"], "--timeout must be a positive integer, not '-5'"),
    (["--block", "fpu", "--list"], "--block must be one of array, weights, gemm, attention, vector, arith, uart, "
                                   "link, top, not 'fpu'"),
    (["--only", "gemm-100000"], "--only must name a site of --list, not 'gemm-100000'"),
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--json", "/nonexistent-dir/m.json"], "--json: the directory of '/nonexistent-dir/m.json' does not exist"),
    (["--report", "/nonexistent-dir/m.md"], "--report: the directory of '/nonexistent-dir/m.md' does not exist"),
])
def test_bad_options_are_one_line(args, message):
    out = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr == f"mutate_rtl: error: {message}\n"
    assert out.stdout == ""
