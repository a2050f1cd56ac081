"""The tiled GEMM driver: shapes, memory layouts and the host flows that run a GEMM on the RTL.

Layouts (the contract between this driver and :class:`hdl.gemm.GemmUnit`), with
``KT = ceil(K/R)``, ``NT = ceil(N/C)``, values past K or N zero:

* weight word ``(nt * KT + kt) * R + r`` holds ``W[kt*R + r, nt*C : nt*C + C]`` (lane j in bits 8j..),
* activation word ``row * KT + kt`` holds ``A[row, kt*R : kt*R + R]``,
* result word ``nt * M + row`` holds ``OUT[row, nt*C : nt*C + C]`` as int32 lanes.

The flows are written against :class:`sim.engine.bus.Bus`, so the same code drives Icarus, Verilator
and Amaranth's simulator.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import numpy as np

from golden.errors import InputError, InputTypeError
from golden.numerics import ceil_div, check_int8, is_int, wrap_int32
from hdl.gemm import HostMem
from hdl.isa import weight_tiles

from ..engine.bus import WatchdogError
from ..engine.stream import StreamDriver, StreamMonitor, check_nothing_in_flight
from ..machine.cycles import gemm_cycles

__all__ = [
    "GemmBlock", "GemmPlan", "TiledGemm", "act_words", "pack_lanes", "plan_gemm", "plan_tiled_gemm",
    "run_array_stream", "run_gemm_unit", "unpack_lanes", "unpack_results", "weight_words",
]


def _dim(name: str, value) -> int:
    if not is_int(value):
        raise InputTypeError(f"GEMM size {name} must be an integer, not {value!r}")
    if value < 1:
        raise InputError(f"GEMM size {name} must be a positive integer, not {value}")
    return int(value)


@dataclass(frozen=True)
class GemmPlan:
    """A GEMM shape checked against a configuration, with its tiling."""

    config: object
    m: int
    k: int
    n: int

    @property
    def kt(self) -> int:
        return ceil_div(self.k, self.config.array_rows)

    @property
    def nt(self) -> int:
        return ceil_div(self.n, self.config.array_cols)

    @property
    def tiles(self) -> int:
        return self.kt * self.nt

    @property
    def predicted_cycles(self) -> int:
        return gemm_cycles(self.config, self.m, self.k, self.n).total

    @property
    def watchdog_cycles(self) -> int:
        """Cycle budget after which a run counts as hung: twice the prediction plus slack."""
        return 2 * self.predicted_cycles + 64


def plan_gemm(config, m, k, n) -> GemmPlan:
    """Check an M x K x N GEMM fits ``config``; ValueError names the size and the limit."""
    m, k, n = _dim("M", m), _dim("K", k), _dim("N", n)
    c = config
    if m > c.max_m:
        raise InputError(f"GEMM size M={m} exceeds max_m={c.max_m} of the configuration")
    if k > c.max_k:
        raise InputError(f"GEMM size K={k} exceeds the largest reduction {c.max_k} of the configuration")
    plan = GemmPlan(config, m, k, n)
    need = {"act_words": m * plan.kt, "weight_words": plan.tiles * c.array_rows,
            "result_words": m * plan.nt}
    for name, words in need.items():
        have = getattr(c, name)
        if words > have:
            raise InputError(f"GEMM {m}x{k}x{n} needs {words} {name}, the configuration has {have} "
                             f"({words - have} too few)")
    return plan


@dataclass(frozen=True)
class GemmBlock:
    """One run of the GEMM unit inside a larger GEMM: rows ``m0:m1`` of A, reduction ``k0:k1``,
    output columns ``n0:n1``, with the plan of that run."""

    m0: int
    m1: int
    k0: int
    k1: int
    n0: int
    n1: int
    plan: GemmPlan


@dataclass(frozen=True)
class TiledGemm:
    """An M x K x N GEMM of any size, cut into blocks the configuration's memories hold.

    The unit tiles K and N onto the array itself; what one run cannot hold (more rows than
    ``max_m``, a reduction past ``max_k`` or the activation memory, more output tiles than the
    weight or result memory) the host cuts into blocks, run one after another (each a start ..
    done of the unit). Partial sums of the K blocks are added on the host with the same 32-bit
    wrap-around as the accumulator (``golden.numerics.gemm_int8``'s rule), so the result equals
    the one-run GEMM bit for bit, and the predicted cycles are the blocks' predictions summed
    (host loading between runs is not counted, as for a single run)."""

    config: object
    m: int
    k: int
    n: int
    blocks: tuple[GemmBlock, ...]

    @property
    def predicted_cycles(self) -> int:
        return sum(b.plan.predicted_cycles for b in self.blocks)

    @property
    def tiles(self) -> int:
        return sum(b.plan.tiles for b in self.blocks)

    def cases(self, a, w) -> list[dict]:
        """The ``gemm_unit`` flow's cases (:class:`sim.flows.gemm_jobs.GemmCase`), one per block, in block order."""
        a, w = _operands(self.m, self.k, self.n, a, w)
        return [{"m": b.plan.m, "k": b.plan.k, "n": b.plan.n, "a": a[b.m0:b.m1, b.k0:b.k1].tolist(),
                 "w": w[b.k0:b.k1, b.n0:b.n1].tolist()} for b in self.blocks]

    def assemble(self, outs) -> np.ndarray:
        """The M x N int32 result from the blocks' outputs (in block order)."""
        out = np.zeros((self.m, self.n), dtype=np.int64)
        for b, o in zip(self.blocks, outs, strict=True):
            out[b.m0:b.m1, b.n0:b.n1] += np.asarray(o, dtype=np.int64)
        return wrap_int32(out)


def plan_tiled_gemm(config, m, k, n) -> TiledGemm:
    """Cut an M x K x N GEMM of any size into runs of the unit (see :class:`TiledGemm`): rows in
    blocks of up to ``max_m``, then the longest reduction and the most output tiles a run of that
    many rows holds. A GEMM that fits is one block, the plan of :func:`plan_gemm`."""
    m, k, n = _dim("M", m), _dim("K", k), _dim("N", n)
    c = config
    R, C = c.array_rows, c.array_cols
    # Each bound is at least 1: Config guarantees max_m <= act_words, result_words and
    # weight_words >= R, and max_k >= R.
    rows = min(m, c.max_m)
    kt = min(ceil_div(k, R), c.max_k // R, c.act_words // rows, c.weight_words // R)
    nt = min(ceil_div(n, C), c.weight_words // (kt * R), c.result_words // rows)
    kb, nb = kt * R, nt * C
    blocks = []
    for m0 in range(0, m, rows):
        for n0 in range(0, n, nb):
            for k0 in range(0, k, kb):
                m1, n1, k1 = min(m, m0 + rows), min(n, n0 + nb), min(k, k0 + kb)
                blocks.append(GemmBlock(m0, m1, k0, k1, n0, n1, plan_gemm(c, m1 - m0, k1 - k0, n1 - n0)))
    return TiledGemm(c, m, k, n, tuple(blocks))


def pack_lanes(values, bits: int) -> int:
    """Pack integers into one word, lane 0 in the low bits, two's complement per lane."""
    mask = (1 << bits) - 1
    word = 0
    for i, v in enumerate(values):
        word |= (int(v) & mask) << (i * bits)
    return word


def unpack_lanes(word: int, bits: int, lanes: int) -> list[int]:
    """Inverse of :func:`pack_lanes`: signed lanes."""
    mask = (1 << bits) - 1
    out = []
    for i in range(lanes):
        v = (word >> (i * bits)) & mask
        out.append(v - (1 << bits) if v >> (bits - 1) else v)
    return out


def _padded(x: np.ndarray, rows: int, cols: int) -> np.ndarray:
    out = np.zeros((rows, cols), dtype=np.int64)
    out[: x.shape[0], : x.shape[1]] = x
    return out


def _operands(m: int, k: int, n: int, a, w):
    """A (M x K) and W (K x N) as int64 arrays, checked: int8 values and the shapes."""
    a = check_int8("a", a)
    w = check_int8("w", w)
    if a.shape != (m, k):
        raise InputError(f"a must have shape {m}x{k}, not {'x'.join(map(str, a.shape))}")
    if w.shape != (k, n):
        raise InputError(f"w must have shape {k}x{n}, not {'x'.join(map(str, w.shape))}")
    return a, w


def check_operands(plan: GemmPlan, a, w):
    return _operands(plan.m, plan.k, plan.n, a, w)


def weight_words(plan: GemmPlan, w) -> list[int]:
    """The weight memory's words, in the tile order of :func:`hdl.isa.weight_tiles`."""
    R, C = plan.config.array_rows, plan.config.array_cols
    return [pack_lanes(row, 8) for row in weight_tiles(check_int8("w", w), R, C)]


def act_words(plan: GemmPlan, a) -> list[int]:
    R = plan.config.array_rows
    ap = _padded(check_int8("a", a), plan.m, plan.kt * R)
    return [pack_lanes(ap[row, kt * R:(kt + 1) * R], 8) for row in range(plan.m) for kt in range(plan.kt)]


def unpack_results(plan: GemmPlan, words: list[int]) -> np.ndarray:
    C, bits = plan.config.array_cols, plan.config.acc_bits
    out = np.zeros((plan.m, plan.nt * C), dtype=np.int64)
    for nt in range(plan.nt):
        for row in range(plan.m):
            out[row, nt * C:(nt + 1) * C] = unpack_lanes(words[nt * plan.m + row], bits, C)
    return out[:, : plan.n]


# --- host flows ---------------------------------------------------------------------------------

async def _host_write(bus, mem: int, words: list[int]):
    bus.set("host.mem", mem)
    bus.set("host.we", 1)
    for addr, word in enumerate(words):
        bus.set("host.addr", addr)
        bus.set("host.wdata", word)
        await bus.tick()
    bus.set("host.we", 0)


async def run_gemm_unit(bus, plan: GemmPlan, a, w, *, budget: int | None = None) -> dict:
    """Load A and W through the host port, run the GEMM free, read the results back.

    Returns ``{"out": M x N int32 list, "cycles": the unit's own counter, "edges": clock edges
    the simulator saw between start and done, "run_seconds": wall time of the free run}``.
    Raises WatchdogError if ``done`` does not rise within ``budget`` cycles (default:
    :attr:`GemmPlan.watchdog_cycles`).
    """
    a, w = check_operands(plan, a, w)
    budget = plan.watchdog_cycles if budget is None else budget
    for name in ("start", "host.we", "m", "kt", "nt", "host.addr", "host.wdata"):
        bus.set(name, 0)
    bus.set("host.mem", 0)
    await bus.reset()
    await _host_write(bus, HostMem.WEIGHTS.value, weight_words(plan, w))
    await _host_write(bus, HostMem.ACTS.value, act_words(plan, a))

    bus.set("m", plan.m)
    bus.set("kt", plan.kt)
    bus.set("nt", plan.nt)
    bus.set("start", 1)
    await bus.tick()  # the edge that samples start
    bus.set("start", 0)
    t0 = time.perf_counter()
    edges = 1 + await bus.run_until("done", budget)
    run_seconds = time.perf_counter() - t0
    await bus.settle()
    cycles = bus.get("cycles")
    await bus.tick()

    words = []
    bus.set("host.mem", HostMem.RESULTS.value)
    for addr in range(plan.m * plan.nt):
        bus.set("host.addr", addr)
        await bus.tick()
        await bus.settle()
        words.append(bus.get("host.rdata"))
        await bus.tick()
    return {"out": unpack_results(plan, words).tolist(), "cycles": cycles, "edges": edges,
            "run_seconds": run_seconds}


async def run_array_stream(bus, rows: int, cols: int, a, w, *, rows_per_beat: int = 1, seed: int = 0,
                           gaps: float = 0.0,
                           stall: float = 0.0, max_idle: int | None = None,
                           withhold_weights: bool = False) -> dict:
    """Drive a bare :class:`hdl.array.SystolicArray` through its streams: an M x K x N GEMM,
    tiled by the host, partial sums of each K tile added by the host. A weight beat carries
    ``rows_per_beat`` tile rows (the array's own parameter).

    ``gaps`` is the chance a driver holds its valid low in a cycle, ``stall`` the chance the
    monitor holds ready low: random idle cycles and backpressure. Returns ``{"out": M x N
    list, "tile_sums": the raw per-tile sums, "cycles": cycles taken}``. Raises WatchdogError
    when no beat moves on any stream for ``max_idle`` cycles (default from the array size and
    the randomisation), i.e. the design stopped making progress. ``withhold_weights`` is a
    deliberate misuse for testing that watchdog: no weight is ever offered, so the array must
    refuse every activation.
    """
    a = check_int8("a", a)
    w = check_int8("w", w)
    M, K = a.shape
    N = w.shape[1]
    kt_n, nt_n = ceil_div(K, rows), ceil_div(N, cols)
    ap = _padded(a, M, kt_n * rows)
    wp = _padded(w, kt_n * rows, nt_n * cols)
    rng = random.Random(seed)

    # Driver queues, in tile order (nt outer, kt inner).
    wq, aq, expect_tiles = [], [], []
    for nt in range(nt_n):
        for kt in range(kt_n):
            tile = wp[kt * rows:(kt + 1) * rows, nt * cols:(nt + 1) * cols]
            g = rows_per_beat
            wq += [pack_lanes(tile[r:r + g].reshape(-1), 8) for r in range(0, rows, g)]
            aq += [pack_lanes(ap[row, kt * rows:(kt + 1) * rows], 8) | ((row == M - 1) << (8 * rows))
                   for row in range(M)]
            expect_tiles.append((nt, kt))
    total_beats = len(aq)
    if max_idle is None:
        # Longest legitimate quiet spell: the array's latency plus runs of random idle cycles.
        max_idle = 4 * (rows + cols) + 200
    for name in ("weights.valid", "acts.valid", "sums.ready", "weights.payload", "acts.payload"):
        bus.set(name, 0)
    await bus.reset()
    weights = StreamDriver(bus, "weights", wq, rng=rng, gaps=gaps, withhold=withhold_weights)
    acts = StreamDriver(bus, "acts", aq, rng=rng, gaps=gaps)
    sums = StreamMonitor(bus, "sums", rng=rng, stall=stall)
    got = []
    cycles = idle = 0
    while len(got) < total_beats:
        weights.offer()
        acts.offer()
        sums.offer()
        await bus.settle()
        moved = weights.took()
        moved = acts.took() or moved
        word = sums.take()
        if word is not None:
            got.append((unpack_lanes(word, 32, cols), (word >> (32 * cols)) & 1))
            moved = True
        idle = 0 if moved else idle + 1
        if idle > max_idle:
            raise WatchdogError(f"systolic array made no progress for {max_idle} cycles "
                                f"({weights.sent}/{len(wq)} weight rows, {acts.sent}/{len(aq)} activation rows, "
                                f"{len(got)}/{total_beats} sums)")
        await bus.tick()
        cycles += 1

    # Nothing may be left in flight: the array stays silent for a full latency after the last sum.
    await check_nothing_in_flight(bus, "the systolic array", rows + cols + 2, drivers=(weights, acts),
                                  monitors=(sums,), check_ready=False)

    # Monitor -> host accumulation of the per-tile partial sums.
    out = np.zeros((M, nt_n * cols), dtype=np.int64)
    tile_sums = []
    for t, (nt, _kt) in enumerate(expect_tiles):
        beats = got[t * M:(t + 1) * M]
        lasts = [b[1] for b in beats]
        if lasts != [0] * (M - 1) + [1]:
            raise AssertionError(f"tile {t}: last flags {lasts} do not mark the tile's final row")
        sums = np.array([b[0] for b in beats], dtype=np.int64)
        tile_sums.append(sums.tolist())
        out[:, nt * cols:(nt + 1) * cols] += sums
    # Host-side accumulation is int64; wrap as the 32-bit accumulator would.
    out = wrap_int32(out)
    return {"out": out[:, :N].tolist(), "tile_sums": tile_sums, "cycles": cycles,
            "in_flight": {"weights": len(wq) - weights.sent, "acts": len(aq) - acts.sent}}
