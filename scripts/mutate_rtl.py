"""Mutation score of the RTL: inject one fault at a time into the Amaranth source and run the fast tests.

A *site* is one place in ``hdl/*.py`` where a mutation operator applies, inside the code that builds
hardware (``elaborate`` methods, helpers that take the module ``m``, the expression builders of
``hdl/arith.py``). The operators:

===============  ==============================================================================
``arith``        ``+`` <-> ``-``
``logic``        ``&`` <-> ``|``
``compare``      ``==`` <-> ``!=``, ``<`` <-> ``<=``, ``>`` <-> ``>=``
``const``        an integer constant compared against, plus one (off-by-one)
``mux-swap``     ``Mux(s, a, b)`` -> ``Mux(s, b, a)``
``drop-sync``    one ``.eq`` of ``m.d.sync += ...`` removed (the register keeps its value)
``force-high``   the right-hand side of an assignment to a ``ready``/``valid`` signal -> ``1``
===============  ==============================================================================

Each mutant is a text edit of exactly one site, applied to a copy of the project tree in a
temporary directory (put first on ``PYTHONPATH``; the worktree's ``hdl/`` is never written). The copy
is elaborated once (``rtlil.convert`` of the mutated file's block): a mutant that does not elaborate
is *stillborn* and not in the score. Then the fast tests that exercise that block run with ``-x``
(Amaranth simulator parametrisations and the fast formal jobs: no Verilator rebuilds) under a
per-mutant timeout: the mutant is *killed* by the first failing test, *timeout* (counted as killed:
the suite notices a hang by its watchdog or the timeout) or *survived*.

Selection is deterministic: every block's sites are shuffled with ``random.Random(seed)`` and the
blocks taken round-robin, so ``--seed`` and ``--mutants`` name the same mutants on the same source.

    python scripts/mutate_rtl.py --list                       # every site, with its id
    python scripts/mutate_rtl.py --mutants 60 --seed 19 --json mutants.json --report mutants.md
    python scripts/mutate_rtl.py --only gemm-12               # replay one mutant
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from golden.errors import InputError, LockstepError  # noqa: E402

#: Block -> its source file under hdl/.
BLOCK_FILES = {
    "array": "hdl/array.py",
    "weights": "hdl/weights.py",
    "gemm": "hdl/gemm.py",
    "attention": "hdl/attention.py",
    "vector": "hdl/vector.py",
    "arith": "hdl/arith.py",
    "uart": "hdl/uart.py",
    "link": "hdl/link.py",
    "top": "hdl/top.py",
}

_ARRAY = ["tests/sim/test_array_stream.py::test_array_streams_are_bit_exact[4x4-amaranth-backpressure-2]",
          "tests/sim/test_array_stream.py::test_array_streams_are_bit_exact[8x4-amaranth-steady-R]",
          "tests/sim/test_formal.py::test_formal_job[array-streams-2x2]",
          "tests/sim/test_formal.py::test_formal_job[array-mac-2x2]"]
_GEMM = ["tests/sim/test_gemm_rtl.py::test_gemm_unit_is_bit_exact_and_cycle_exact[4x4-amaranth-1]",
         "tests/sim/test_gemm_rtl.py::test_any_size_runs_in_blocks_bit_exact_and_cycle_exact[amaranth-2]",
         "tests/sim/test_gemm_rtl.py::test_a_zero_size_start_is_refused_and_the_unit_stays_idle",
         "tests/sim/test_formal.py::test_formal_job[gemm-control]",
         "tests/sim/test_formal.py::test_formal_job[gemm-cycles]"]
_ATTENTION = ["tests/sim/test_attention_rtl.py::test_attention_unit_is_bit_exact_and_cycle_exact[amaranth]",
              "tests/sim/test_attention_rtl.py::test_narrow_finish_stages_are_bit_exact_and_cycle_exact[amaranth]",
              "tests/sim/test_attention_rtl.py::test_odd_sizes_on_amaranth",
              "tests/sim/test_attention_heads_rtl.py::test_parallel_heads_odd_sizes_on_amaranth",
              "tests/sim/test_formal.py::test_formal_job[attention-control]",
              "tests/sim/test_formal.py::test_formal_job[attention-cycles]"]
_VECTOR = ["tests/sim/test_vector_rtl.py::test_vector_unit_is_bit_exact_and_cycle_exact[amaranth]",
           "tests/sim/test_vector_rtl.py::test_vector_unit_is_exact_under_gaps_and_backpressure[amaranth]",
           "tests/sim/test_vector_rtl.py::test_gelu_with_the_erf_table[amaranth]",
           "tests/sim/test_vector_fused_rtl.py::test_fused_commands_are_bit_exact_and_cycle_exact[amaranth]",
           "tests/sim/test_formal.py::test_formal_job[vector-control]",
           "tests/sim/test_formal.py::test_formal_job[vector-cycles]"]
_UART = ["tests/sim/test_formal.py::test_formal_job[uart-tx-frame]",
         "tests/sim/test_formal.py::test_formal_job[uart-rx-idle]",
         "tests/sim/test_formal.py::test_formal_job[uart-loopback]"]
_LINK = ["tests/sim/test_link_rtl.py::test_gemm_over_the_link_is_bit_exact_and_cycle_exact[amaranth]",
         "tests/sim/test_link_rtl.py::test_corrupted_frames_are_rejected_and_the_next_good_frame_works[amaranth]",
         "tests/sim/test_formal.py::test_formal_job[link-rx-idle]"]
_TOP = ["tests/sim/test_top_rtl.py::test_embed_norm_and_gemm_on_amaranth",
        "tests/sim/test_top_rtl.py::test_whole_program_on_amaranth",
        "tests/sim/test_passes_rtl.py::test_a_prefill_and_batched_pass_on_amaranth",
        "tests/sim/test_passes_rtl.py::test_paged_passes_on_amaranth"]

#: Block -> the fast tests that exercise it, cheapest first (pytest node ids, run with -x).
BLOCK_TESTS = {
    "array": _ARRAY + _GEMM[:1],
    # The top level reads single words of the weight memory (embedding rows, rsel from the word address).
    "weights": ["tests/sim/test_formal.py::test_formal_job[weights-rw]"] + _GEMM[:2] + _TOP[:1],
    "gemm": _GEMM + _LINK[:1],
    "attention": _ATTENTION + _TOP[1:2],
    "vector": _VECTOR,
    "arith": ["tests/hdl/test_arith.py"] + _VECTOR + _ATTENTION[:1],
    "uart": _UART + _LINK[:2],
    "link": _LINK,
    # The fused residual add (GEMM flag RESIDUAL) and the fused SwiGLU / RoPE commands run only in
    # designs with them on: their own Amaranth tests.
    "top": ["tests/sim/test_top_rtl.py::test_start_ok_is_exactly_the_runnable_heads"] + _TOP
           + ["tests/sim/test_top_rtl.py::test_three_heads_through_two_attentions_on_amaranth"]
           + ["tests/sim/test_fused_residual.py::test_a_partial_program_with_a_fused_gemm_on_amaranth",
              "tests/sim/test_top_fused_rtl.py::test_whole_program_with_the_fusions_on_amaranth"],
}

#: Block -> fast tests on a Verilog simulator, run only when a mutant survives the first list: what the
#: Amaranth-simulator tests cannot reach (the decode target's link commands are tested on Verilator).
#: A Verilator rebuild costs minutes, so a timeout here counts as survived, not killed.
SECOND_TIER = {
    "link": ["tests/sim/test_link_decode.py::test_read_logits_and_decode_only_errors"],
}

#: Block -> a statement that elaborates it in the mutant's copy (stillborn check), with small sizes.
_CONVERT = "from amaranth.back import rtlil; from hdl.config import PRESETS; "
BLOCK_ELABORATE = {
    "array": _CONVERT + "from hdl.array import SystolicArray as S, ProcessingElement as P; "
                        "[rtlil.convert(d) for d in (P(), S(rows=4, cols=4), S(rows=4, cols=2, rows_per_beat=2))]",
    "weights": _CONVERT + "from hdl.weights import WeightMemory as W; rtlil.convert(W(width=16, depth=8, banks=2))",
    "gemm": _CONVERT + "from hdl.gemm import GemmUnit; rtlil.convert(GemmUnit(PRESETS['4x4']))",
    "attention": _CONVERT + "from hdl.attention import AttentionUnit as A; "
                            "[rtlil.convert(A(head_dim=8, max_context=16, max_heads=4, finish_lanes=f)) "
                            "for f in (None, 3)]",
    "vector": _CONVERT + "from hdl.vector import VectorUnit as V; rtlil.convert(V(lanes=4, max_length=64, "
                         "max_norm_length=64, max_head_dim=16, max_context=8, act_tables=2))",
    "uart": _CONVERT + ("from amaranth.hdl import Module; from hdl.uart import UartTx, UartRx; m = Module(); "
                       "m.submodules.tx = UartTx(clocks_per_bit=4); m.submodules.rx = UartRx(clocks_per_bit=4); "
                       "rtlil.convert(m, ports=[])"),
    "link": _CONVERT + "from hdl.link import LinkedGemm; rtlil.convert(LinkedGemm(PRESETS['4x4'], clocks_per_bit=4))",
}
BLOCK_ELABORATE["arith"] = BLOCK_ELABORATE["vector"]
BLOCK_ELABORATE["top"] = (_CONVERT + "from dataclasses import replace; from hdl.top import DecodeTop; "
                          "[rtlil.convert(DecodeTop(c, head_dim=8, max_heads=2, max_norm_length=64)) "
                          "for c in (PRESETS['4x4'], replace(PRESETS['4x4'], kv_block=4))]")

OPERATORS = ("arith", "logic", "compare", "const", "mux-swap", "drop-sync", "force-high")
_FLIP = {ast.Add: ("+", "-"), ast.Sub: ("-", "+"), ast.BitAnd: ("&", "|"), ast.BitOr: ("|", "&"),
         ast.Eq: ("==", "!="), ast.NotEq: ("!=", "=="), ast.Lt: ("<", "<="), ast.LtE: ("<=", "<"),
         ast.Gt: (">", ">="), ast.GtE: (">=", ">")}


class MutateError(InputError):
    """A bad option of the mutation script: one line ``mutate_rtl: error: ...``, exit status 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):       # argparse's own errors: one line and exit 1, like every other bad input
        raise MutateError(message)


@dataclass(frozen=True)
class Site:
    id: str           # "<block>-<n>", n counting the block's sites in source order
    block: str
    file: str
    line: int
    op: str
    start: int        # byte offsets of the replaced text in the file
    end: int
    replacement: str
    original: str     # the source line(s) before and after, stripped, for the report
    mutated: str


def _line_starts(src: bytes) -> list[int]:
    starts = [0]
    for i, b in enumerate(src):
        if b == 0x0A:
            starts.append(i + 1)
    return starts


def _in_hardware(func: ast.FunctionDef, block: str) -> bool:
    """Code that builds hardware: elaborate methods, helpers taking the module ``m``, arith's builders."""
    names = {a.arg for a in func.args.args + func.args.kwonlyargs}
    return block == "arith" or func.name == "elaborate" or "m" in names


def _is_sync_add(node: ast.AST) -> bool:
    """``m.d.sync += ...``"""
    t = node.target if isinstance(node, ast.AugAssign) else None
    return (isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Add) and isinstance(t, ast.Attribute)
            and t.attr == "sync" and isinstance(t.value, ast.Attribute) and t.value.attr == "d")


def _eq_calls(value: ast.AST) -> list[ast.Call]:
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) and value.func.attr == "eq":
        return [value]
    if isinstance(value, (ast.List, ast.Tuple)):
        return [c for e in value.elts for c in _eq_calls(e)]
    return []


def _handshake_target(call: ast.Call) -> bool:
    t = call.func.value
    name = t.attr if isinstance(t, ast.Attribute) else t.id if isinstance(t, ast.Name) else ""
    return bool(re.fullmatch(r"(\w+_)?(ready|valid)", name))


def sites(blocks=None) -> list[Site]:
    """Every mutation site of the chosen blocks (all by default), in block order then source order."""
    return [s for block in blocks or BLOCK_FILES for s in _block_sites(block)]


def _block_sites(block: str) -> list[Site]:
    out = []
    path = ROOT / BLOCK_FILES[block]
    src = path.read_bytes()
    starts = _line_starts(src)
    off = lambda line, col: starts[line - 1] + col  # noqa: E731 (ast columns are byte offsets)
    found = []

    def add(line, op, start, end, new):
        first = src.rfind(b"\n", 0, start) + 1
        last = src.find(b"\n", end)
        last = len(src) if last < 0 else last
        before = src[first:last].decode()
        after = (src[first:start] + new.encode() + src[end:last]).decode()
        squash = lambda s: re.sub(r"\s+", " ", s).strip()  # noqa: E731
        found.append((start, op, line, end, new, squash(before), squash(after)))

    def gap_op(node, left, right, old, new, op):
        a, b = off(left.end_lineno, left.end_col_offset), off(right.lineno, right.col_offset)
        gap = src[a:b]
        hits = [mt.start() for mt in re.finditer(re.escape(old.encode()) + (b"(?!=)" if old in "<>" else b""), gap)]
        if len(hits) == 1:
            s = a + hits[0]
            add(node.lineno, op, s, s + len(old), new)

    tree = ast.parse(src)
    funcs = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and _in_hardware(f, block)]
    seen = set()
    for func in funcs:
        for node in ast.walk(func):
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, ast.BinOp) and type(node.op) in _FLIP:
                old, new = _FLIP[type(node.op)]
                gap_op(node, node.left, node.right, old, new, "arith" if old in "+-" else "logic")
            elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _FLIP:
                old, new = _FLIP[type(node.ops[0])]
                gap_op(node, node.left, node.comparators[0], old, new, "compare")
                c = node.comparators[0]
                if isinstance(c, ast.Constant) and type(c.value) is int:
                    add(node.lineno, "const", off(c.lineno, c.col_offset), off(c.end_lineno, c.end_col_offset),
                        str(c.value + 1))
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "Mux"
                  and len(node.args) == 3 and not node.keywords):
                x, y = node.args[1], node.args[2]
                xs, xe = off(x.lineno, x.col_offset), off(x.end_lineno, x.end_col_offset)
                ys, ye = off(y.lineno, y.col_offset), off(y.end_lineno, y.end_col_offset)
                add(node.lineno, "mux-swap", xs, ye, (src[ys:ye] + src[xe:ys] + src[xs:xe]).decode())
            elif _is_sync_add(node):
                for call in _eq_calls(node.value):
                    add(call.lineno, "drop-sync", off(call.lineno, call.col_offset),
                        off(call.end_lineno, call.end_col_offset), "[]")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "eq"
                    and len(node.args) == 1 and _handshake_target(node)):
                a = node.args[0]
                if not (isinstance(a, ast.Constant) and a.value == 1):
                    add(a.lineno, "force-high", off(a.lineno, a.col_offset),
                        off(a.end_lineno, a.end_col_offset), "1")
    for n, (start, op, line, end, new, before, after) in enumerate(sorted(set(found))):
        out.append(Site(f"{block}-{n}", block, BLOCK_FILES[block], line, op, start, end, new, before, after))
    return out


def select(all_sites: list[Site], count: int, seed: int) -> list[Site]:
    """``count`` sites, the blocks taken round-robin, each block's sites in a seeded shuffle."""
    rng = random.Random(seed)
    queues = {}
    for s in all_sites:
        queues.setdefault(s.block, []).append(s)
    for q in queues.values():
        rng.shuffle(q)
    chosen = []
    while len(chosen) < count and any(queues.values()):
        for q in queues.values():
            if q and len(chosen) < count:
                chosen.append(q.pop(0))
    return chosen


def copy_tree(dest: Path) -> Path:
    """A copy of the project (no .git, no caches) under ``dest``."""
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(".git", "__pycache__", ".venv", "*.pyc", "build",
                                                            ".pytest_cache", ".ruff_cache", ".hypothesis"))
    return dest


def apply(site: Site, tree: Path) -> None:
    """Write the mutant into the copy ``tree`` (its file must still be the original)."""
    path = tree / site.file
    src = path.read_bytes()
    path.write_bytes(src[:site.start] + site.replacement.encode() + src[site.end:])


def _run(cmd, cwd, env, timeout):
    """(returncode or None on timeout, output); a timeout kills the whole process group."""
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         start_new_session=True, text=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        return p.returncode, out
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        return None, out
    except BaseException:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        raise


def run_mutant(site: Site, timeout: float, second_timeout: float = 900) -> dict:
    """Apply ``site`` in a fresh copy, elaborate it, run its block's tests (then, if it survived, its
    SECOND_TIER tests); the outcome as a dict."""
    return {**asdict(site), **_trial(site.block, site, timeout, second_timeout)}


def baseline(block: str, timeout: float, second_timeout: float = 900) -> dict:
    """The same trial with no mutation: the block's tests must pass on the copy (else a kill means nothing)."""
    return {"block": block, **_trial(block, None, timeout, second_timeout)}


def _trial(block: str, site: Site | None, timeout: float, second_timeout: float) -> dict:
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="lockstep-mutant-"))
    try:
        tree = copy_tree(tmp / "tree")
        if site is not None:
            apply(site, tree)
        env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
        rc, out = _run([sys.executable, "-c", BLOCK_ELABORATE[block]], tree, env, timeout)
        if rc != 0:
            last = (out.strip().splitlines() or ["timeout"])[-1]
            outcome, by = "stillborn", last[:160]
        else:
            cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-m", "not slow", "-rf",
                   *BLOCK_TESTS[block]]
            rc, out = _run(cmd, tree, env, max(1.0, timeout - (time.monotonic() - t0)))
            if rc == 0 and block in SECOND_TIER:
                cmd = [*cmd[:cmd.index("-rf") + 1], *SECOND_TIER[block]]
                rc, out = _run(cmd, tree, env, second_timeout)
                if rc is None:          # a slow rebuild is no kill: the mutant was not fully tried
                    rc, out = -1, "untested: the second tier timed out"
            if rc is None:
                outcome, by = "timeout", "timeout"
            elif rc == -1:
                outcome, by = "untested", out
            elif rc == 0:
                outcome, by = "survived", ""
            elif rc == 1:
                failed = re.findall(r"^FAILED (\S+)", out, re.M)
                outcome, by = "killed", failed[0] if failed else "?"
            else:
                outcome, by = "error", (out.strip().splitlines() or [""])[-1][:160]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"outcome": outcome, "by": by, "seconds": round(time.monotonic() - t0, 1)}


def summary(results: list[dict]) -> dict:
    count = lambda o: sum(r["outcome"] == o for r in results)  # noqa: E731
    killed = count("killed") + count("timeout")
    scored = killed + count("survived")
    return {"tried": len(results), "stillborn": count("stillborn"), "killed": count("killed"),
            "timeout": count("timeout"), "survived": count("survived"), "untested": count("untested"),
            "error": count("error"),
            "score": round(100 * killed / scored, 1) if scored else None}


def markdown(results: list[dict], seed: int) -> str:
    """The run as a markdown page: the summary, then one table row a mutant."""
    s = summary(results)
    lines = [f"# Mutation run: {len(results)} mutants, seed {seed}", "",
             'Written by `scripts/mutate_rtl.py --report` (see docs/verification.md, "Mutation score").', "",
             f"{s['tried']} mutants: {s['killed']} killed, {s['timeout']} timeout, {s['survived']} survived, "
             f"{s['stillborn']} stillborn, {s['untested']} untested (second tier timed out), "
             f"{s['error']} error; score {s['score']} % (killed + timeout over "
             "killed + timeout + survived)", "",
             "| id | file:line | operator | original | mutated | outcome | by | s |",
             "|---|---|---|---|---|---|---|---|"]
    cell = lambda t: "`" + t.replace("|", "\\|").replace("`", "'")[:90] + "`"  # noqa: E731
    for r in results:
        by = r["by"].split("::")[-1] if r["outcome"] == "killed" else r["by"]
        lines.append(f"| {r['id']} | {r['file']}:{r['line']} | {r['op']} | {cell(r['original'])} | "
                     f"{cell(r['mutated'])} | {r['outcome']} | {by.replace('|', '/')} | {r['seconds']} |")
    return "\n".join(lines) + "\n"


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _write(args, results):
    if args.json:
        Path(args.json).write_text(json.dumps({"seed": args.seed, "summary": summary(results), "mutants": results},
                                              indent=1) + "\n")
    if args.report:
        Path(args.report).write_text(markdown(results, args.seed))


def parse_args(argv):
    p = _Parser(prog="mutate_rtl", description=__doc__.split("\n\n")[0])
    p.add_argument("--mutants", default="50", help="how many mutants (default 50)")
    p.add_argument("--seed", default="19", help="seed of the site selection (default 19)")
    p.add_argument("--block", action="append", help=f"only this block (repeatable): {', '.join(BLOCK_FILES)}")
    p.add_argument("--list", action="store_true", help="list the sites and exit")
    p.add_argument("--only", action="append", help="run this mutant id only (repeatable), e.g. gemm-12")
    p.add_argument("--baseline", action="store_true",
                   help="run each block's tests on an unmutated copy (they must pass) and exit")
    p.add_argument("--timeout", default="300", help="seconds per mutant (default 300)")
    p.add_argument("--json", help="write the results as JSON to this file")
    p.add_argument("--report", help="write the results as a markdown table to this file")
    args = p.parse_args(argv)
    for name in ("mutants", "seed", "timeout"):
        value = getattr(args, name)
        if not re.fullmatch(r"\d+", value) or (name != "seed" and int(value) < 1):
            raise MutateError(f"--{name} must be a {'non-negative' if name == 'seed' else 'positive'} integer, "
                              f"not {value!r}")
        setattr(args, name, int(value))
    for name in ("json", "report"):     # refused now, not minutes into the run
        value = getattr(args, name)
        if value is not None and not Path(value).resolve().parent.is_dir():
            raise MutateError(f"--{name}: the directory of {value!r} does not exist")
    for b in args.block or []:
        if b not in BLOCK_FILES:
            raise MutateError(f"--block must be one of {', '.join(BLOCK_FILES)}, not {b!r}")
    return args


def main(argv=None) -> int:
    # A TERM (a background job's stop, a restart) cleans up like an interrupt: the temporary copy and
    # the test processes go; from the start, so that a baseline run is covered too.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        args = parse_args(argv)
        every = sites(args.block)
        if args.only:
            by_id = {s.id: s for s in every}
            for i in args.only:
                if i not in by_id:
                    raise MutateError(f"--only must name a site of --list, not {i!r}")
            chosen = [by_id[i] for i in args.only]
        else:
            chosen = select(every, args.mutants, args.seed)
        if args.baseline:
            ok = True
            for block in args.block or BLOCK_FILES:
                r = baseline(block, args.timeout)
                ok &= r["outcome"] == "survived"
                print(f"baseline {block}: {'pass' if r['outcome'] == 'survived' else r['outcome'] + ' ' + r['by']} "
                      f"({r['seconds']} s)", flush=True)
            return 0 if ok else 1
        if args.list:
            for s in every:
                print(f"{s.id:14} {s.file}:{s.line:<5} {s.op:10} {s.original}  ->  {s.mutated}")
            return 0
    except LockstepError as e:
        print(f"mutate_rtl: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mutate_rtl: error: interrupted", file=sys.stderr)
        return 130
    results = []
    interrupted = False
    try:
        for k, s in enumerate(chosen, 1):
            r = run_mutant(s, args.timeout)
            results.append(r)
            print(f"[{k}/{len(chosen)}] {s.id} {s.file}:{s.line} {s.op}: {r['outcome']} {r['by']} "
                  f"({r['seconds']} s)", flush=True)
            _write(args, results)    # after every mutant: a long run that is stopped keeps what it found
    except KeyboardInterrupt:
        print(f"interrupted after {len(results)} mutants", file=sys.stderr)
        interrupted = True
    _write(args, results)
    print(json.dumps(summary(results)))
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
