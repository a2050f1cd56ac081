"""The host flow of the decode top level (:class:`hdl.top.DecodeTop`) and its job's shape (:class:`DecodeJob`),
apart from :mod:`sim.flows.decode` so that a simulator process, which runs only this, starts without
importing Amaranth, NumPy or the compiler (about a second of every run): a job from
:func:`sim.flows.decode.decode_job` carries the memory numbers it needs (``memories``).
"""

from __future__ import annotations

import json
import time
from typing import NotRequired, TypedDict

from golden.greedy import GreedyDecode

from ..engine.bus import WatchdogError

__all__ = ["WATCHDOG_FACTOR", "WATCHDOG_SLACK", "DecodeImages", "DecodeJob", "DecodeMemories", "DecodeReadback",
           "JobModel", "drive_steps", "run_decode_top"]

#: Watchdog budget: the prediction times this, plus :data:`WATCHDOG_SLACK` cycles.
WATCHDOG_FACTOR = 2
WATCHDOG_SLACK = 256


class DecodeImages(TypedDict):
    """The memory images of a compiled model (:func:`sim.flows.decode.images`), each a list of
    ``[address, word]`` pairs (zero words left out), loaded once per run in this order (the order of
    :data:`sim.flows.decode.IMAGE_MEMORIES`)."""

    #: Instruction words.
    program: list[list[int]]
    #: Weight words, int8 lanes.
    weights: list[list[int]]
    #: Parameter words (bias, multiplier|shift, gamma, beta, scalars), int32 lanes.
    params: list[list[int]]
    #: The RoPE cos/sin table's words.
    rope: list[list[int]]
    #: Activation tables, one int8 entry a word.
    act_tables: list[list[int]]


class DecodeMemories(TypedDict):
    """The host port's memory number of each image (:class:`DecodeImages`) and of the memories read back."""

    #: The program memory.
    program: int
    #: The weight memory.
    weights: int
    #: The parameter memory.
    params: int
    #: The vector unit's table memory (RoPE).
    rope: int
    #: The activation-table memory.
    act_tables: int
    #: Per-instruction cycle trace.
    trace: int
    #: Activation scratch.
    scratch: int
    #: int32 logits.
    logits: int


class DecodeReadback(TypedDict):
    """Words read after every step (none when left out)."""

    #: Words of the activation scratch (int8 lanes).
    scratch: NotRequired[int]
    #: Words of the logits memory (int32 lanes).
    logits: NotRequired[int]


class JobModel(TypedDict):
    """One of two models resident in a job (``compile_model(..., beside=...)``): its registers."""

    #: Its first instruction's program address (``DecodeTop.program_base``).
    program_base: int
    #: Its instructions, HALT included (its trace words from ``program_base``).
    program_len: int
    #: Its ``Compiled.row_stride``.
    row_stride: int
    #: Its ``Compiled.logits_stride``.
    logits_stride: int
    #: Its KV heads.
    n_kv_heads: int
    #: Its query heads per KV head.
    group: int


class DecodeJob(TypedDict):
    """A ``decode_top`` job (:func:`sim.flows.decode.decode_job` builds it): load a compiled model once,
    then run decode steps on it, either the given ``steps``, greedy decoding of ``prompt`` +
    ``new_tokens`` (:class:`golden.greedy.GreedyDecode`), or the given multi-row ``passes``; exactly one
    of the three."""

    #: The design's parameters (:func:`sim.flows.decode.top_params`).
    params: dict
    #: The memory images, loaded once.
    images: DecodeImages
    #: Memory numbers of the host port.
    memories: DecodeMemories
    #: The model's KV heads (a register of every step).
    n_kv_heads: int
    #: Query heads per KV head (a register of every step).
    group: int
    #: ``[token, position]`` pairs run one after another.
    steps: NotRequired[list[list[int]]]
    #: Passes run one after another, each a list of rows ``[token, position, kv_base]`` (its KV slot's
    #: first KV row; paged KV: its block table's number in ``tables``), written to the top level's row
    #: table before the pass's ``start``.
    passes: NotRequired[list[list[list[int]]]]
    #: Two models resident: each one's registers, in memory order (without: one model at program
    #: address 0, its registers the job's own keys).
    models: NotRequired[list[JobModel]]
    #: With ``models``: the one the steps (or a prompt) run.
    model: NotRequired[int]
    #: With ``models`` and ``passes``: the model each pass runs (an index of ``models``).
    pass_models: NotRequired[list[int]]
    #: With ``passes``: the one-row program's scratchpad size rounded up to a word, in elements
    #: (``Compiled.row_stride``): row r's scratchpad values live at their address + r * row_stride.
    row_stride: NotRequired[int]
    #: With ``passes``: the one-row logits size rounded up to a word (``Compiled.logits_stride``).
    logits_stride: NotRequired[int]
    #: Paged KV (``Config.kv_block`` > 0): with ``passes``, each pass's block tables (a row's third
    #: number, its ``kv_base``, names one of its pass's), written to the top level's table memory
    #: before the pass; with steps or a prompt, one entry: table 0 of every step.
    tables: NotRequired[list[list[list[int]]]]
    #: Paged KV: the rows of one (layer, KV head) plane (``Compiled.plane_rows``), with ``tables``.
    plane_rows: NotRequired[int]
    #: With ``passes``: each pass's predicted cycles (the watchdog's base), in order.
    pass_predicted: NotRequired[list[int]]
    #: The prompt's tokens, fed one a step; then each step's output is the next step's input.
    prompt: NotRequired[list[int]]
    #: Tokens to generate after the prompt (with ``prompt``).
    new_tokens: NotRequired[int]
    #: The cycle model's count per position (keys are positions as strings): the watchdog's base.
    predicted: NotRequired[dict[str, int]]
    #: Watchdog cycles per position (keys as in ``predicted``), instead of the prediction's.
    budgets: NotRequired[dict[str, int]]
    #: Read every step's per-instruction cycles and start cycles.
    trace: NotRequired[bool]
    #: Width of a trace word's cycles half (its start cycle is the half above): ``hdl.config.UNIT_CYCLE_BITS``.
    trace_bits: NotRequired[int]
    #: Memories read after every step.
    readback: NotRequired[DecodeReadback]
    #: A file to which one JSON line per finished step is appended (the host shows tokens as they come).
    progress: NotRequired[str]
    #: Dump waves only in this window: ``{"steps": [first, last]}`` (positions) or ``{"cycles": [start,
    #: stop]}`` from the first step's start edge (:func:`sim.flows.decode.check_waves_window`; Verilator).
    waves_window: NotRequired[dict[str, list[int]]]


async def _write(bus, mem: int, entries) -> None:
    bus.set("host.mem", mem)
    bus.set("host.we", 1)
    for addr, word in entries:
        bus.set("host.addr", addr)
        bus.set("host.wdata", word)
        await bus.tick()
    bus.set("host.we", 0)


#: The paged top level's block-table ports (``hdl.top.DecodeTop``, ``Config.kv_block`` > 0).
_TABLE_PORTS = ("plane_rows", "table_we", "table_slot", "table_entry", "table_block")


async def _write_tables(bus, tables: list[list[int]], plane_rows: int) -> None:
    """Block tables (table i's entry e = ``tables[i][e]``) into the top level's table memory, an entry a
    cycle, and ``plane_rows``."""
    bus.set("plane_rows", plane_rows)
    bus.set("table_we", 1)
    for slot, blocks in enumerate(tables):
        for entry, block in enumerate(blocks):
            bus.set("table_slot", slot)
            bus.set("table_entry", entry)
            bus.set("table_block", block)
            await bus.tick()
    bus.set("table_we", 0)


async def _read(bus, mem: int, count: int, *, start: int = 0) -> list[int]:
    """Words start .. start + count - 1: the read data lags the address by one cycle."""
    bus.set("host.mem", mem)
    out = []
    for addr in range(count + 1):
        bus.set("host.addr", start + min(addr, count - 1))
        await bus.settle()
        if addr:
            out.append(bus.get("host.rdata"))
        await bus.tick()
    return out


async def run_decode_top(bus, job: DecodeJob) -> dict:
    """Load the images once, then run the job's steps; see :mod:`sim.flows.decode`.

    Returns ``{"steps": [{"position", "token_in", "token_out", "cycles" (the RTL counter), "edges"
    (clock edges from the start edge to done), "seconds" (wall), "cpu_seconds" (the process's CPU
    time), "trace"? (each instruction's cycles), "starts"? (each one's start cycle in the step),
    "scratch"?, "logits"?}],
    "load_seconds", "load_words"}``; a job with ``passes`` returns ``"steps": []`` and ``"passes": [{"rows"
    (as in the job: token, position, kv_base), "tokens" (each row's argmax token), "next_token", "cycles",
    "edges", "seconds", "cpu_seconds", "trace"?, "starts"? (per instruction, over all rows), "scratch"?,
    "logits"?}]``. Raises WatchdogError when ``done`` does not rise within a step's (a pass's) budget.
    """
    mems = job["memories"]
    V = job["params"]["config"]["vector_lanes"]
    for name in ("start", "token", "position", "n_kv_heads", "group", "host.we", "host.addr", "host.wdata", "rows",
                 "row_stride", "logits_stride", "row_we", "row_addr", "row_token", "row_position", "row_kv_base",
                 "program_base", *(_TABLE_PORTS if "tables" in job else ())):
        bus.set(name, 0)
    bus.set("host.mem", 0)
    await bus.reset()
    window = job.get("waves_window")        # {"steps": [first, last]} or {"cycles": [start, stop]}
    if window:
        bus.dump_window(0, 0)                # nothing until the window opens
    t0 = time.perf_counter()
    im = job["images"]
    for name, words in im.items():      # in the order of sim.flows.decode.IMAGE_MEMORIES
        await _write(bus, mems[name], words)
    if "tables" in job and "passes" not in job:       # the steps' one table
        await _write_tables(bus, job["tables"][0], job["plane_rows"])
    load_seconds = time.perf_counter() - t0
    readback = job.get("readback") or {}

    def model(index: int | None = None) -> dict:
        """The registers of the model a step (``index`` None) or a pass runs (:class:`JobModel`)."""
        if "models" not in job:
            return dict(job, program_base=0, program_len=len(im["program"]))
        return job["models"][job["model"] if index is None else job["pass_models"][index]]
    budgets = job.get("budgets") or {}

    opened: list[int] = []                   # the positions started so far (a cycle window opens at the first)

    async def go(budget: int, what: str, predicted) -> tuple[int, float, float]:
        """Pulse ``start`` and run free until ``done`` (a watchdog at ``budget`` cycles); the edges
        counted, the wall and CPU seconds of the free run; settled after ``done``."""
        bus.set("start", 1)
        await bus.tick()
        bus.set("start", 0)
        t, cpu = time.perf_counter(), time.process_time()
        try:
            edges = 1 + await bus.run_until("done", budget)
        except WatchdogError:
            raise WatchdogError(f"{what} did not finish within {budget} cycles (predicted {predicted})") from None
        seconds, cpu_seconds = time.perf_counter() - t, time.process_time() - cpu
        await bus.settle()
        return edges, seconds, cpu_seconds

    async def step(token: int, position: int) -> dict:
        predicted = job.get("predicted", {}).get(str(position))
        budget = budgets.get(str(position)) or (WATCHDOG_FACTOR * predicted + WATCHDOG_SLACK if predicted
                                                else 10_000_000)
        bus.set("token", token)
        bus.set("position", position)
        mdl = model()
        bus.set("program_base", mdl["program_base"])
        bus.set("n_kv_heads", mdl["n_kv_heads"])
        bus.set("group", mdl["group"])
        if window and "steps" in window and position == window["steps"][0]:
            bus.dump_window(None, None)
        elif window and "cycles" in window and not opened:
            bus.dump_window(*window["cycles"])     # counted from the first step's start edge
        opened.append(position)
        edges, seconds, cpu_seconds = await go(budget, f"decode step at position {position}", predicted)
        out = {"position": position, "token_in": token, "token_out": bus.get("next_token"),
               "cycles": bus.get("cycles"), "edges": edges, "seconds": seconds, "cpu_seconds": cpu_seconds}
        await bus.tick()
        if window and "steps" in window and position == window["steps"][1]:
            bus.dump_window(0, 0)
        await read_after(out, mdl)
        return out

    async def read_after(out: dict, mdl: dict) -> None:
        """The trace (of the model ``mdl``'s instructions) and the readback memories of a step or a
        pass, into ``out``."""
        if job.get("trace"):
            words = await _read(bus, mems["trace"], mdl["program_len"] - 1, start=mdl["program_base"])
            bits = job["trace_bits"]
            out["trace"] = [w & ((1 << bits) - 1) for w in words]    # cycles of each instruction
            out["starts"] = [w >> bits for w in words]               # its start cycle in the step
        if readback:
            # Here, not at the top: sim.flows.gemm loads Amaranth and NumPy, which the simulator
            # process otherwise never imports (its start-up); only a readback needs it.
            from .gemm import unpack_lanes
        if readback.get("scratch"):
            words = await _read(bus, mems["scratch"], readback["scratch"])
            out["scratch"] = [v for w in words for v in unpack_lanes(w, 8, V)]
        if readback.get("logits"):
            words = await _read(bus, mems["logits"], readback["logits"])
            out["logits"] = [v for w in words for v in unpack_lanes(w, 32, V)]

    async def run_pass(index: int, rows: list[list[int]]) -> dict:
        """One pass: the row table written (a row a cycle), ``start`` with ``rows`` = M, each row's token
        read back from ``row_next_token``."""
        predicted = (job.get("pass_predicted") or [None] * (index + 1))[index]
        budget = WATCHDOG_FACTOR * predicted + WATCHDOG_SLACK if predicted else 10_000_000
        bus.set("row_we", 1)
        for r, (token, position, kv_base) in enumerate(rows):
            bus.set("row_addr", r)
            bus.set("row_token", token)
            bus.set("row_position", position)
            bus.set("row_kv_base", kv_base)
            await bus.tick()
        bus.set("row_we", 0)
        if "tables" in job:
            await _write_tables(bus, job["tables"][index], job["plane_rows"])
        mdl = model(index)
        bus.set("rows", len(rows))
        bus.set("program_base", mdl["program_base"])
        bus.set("row_stride", mdl["row_stride"])
        bus.set("logits_stride", mdl["logits_stride"])
        bus.set("n_kv_heads", mdl["n_kv_heads"])
        bus.set("group", mdl["group"])
        edges, seconds, cpu_seconds = await go(budget, f"pass {index} of {len(rows)} rows", predicted)
        out = {"rows": rows, "cycles": bus.get("cycles"), "edges": edges, "seconds": seconds,
               "cpu_seconds": cpu_seconds, "next_token": bus.get("next_token")}
        await bus.tick()
        tokens = []
        for r in range(len(rows)):          # a row a cycle (no write in the read-only phase after settle)
            bus.set("row_addr", r)
            await bus.settle()
            tokens.append(bus.get("row_next_token"))
            await bus.tick()
        out["tokens"] = tokens
        await read_after(out, mdl)
        return out

    if "passes" in job:
        passes = [await run_pass(i, rows) for i, rows in enumerate(job["passes"])]
        return {"steps": [], "passes": passes, "load_seconds": load_seconds,
                "load_words": sum(len(v) for v in im.values())}
    return {"steps": await drive_steps(job, step), "load_seconds": load_seconds,
            "load_words": sum(len(v) for v in im.values())}


async def drive_steps(job: DecodeJob, step) -> list[dict]:
    """Run a job's decode steps through ``await step(token, position) -> dict`` (a result with at
    least ``position``, ``token_in``, ``token_out``, ``cycles``): the job's ``steps`` one after
    another, or greedy decoding of ``prompt`` + ``new_tokens``. With ``progress`` in the job, one
    JSON line per finished step is appended to that file, so the host shows tokens as they appear."""
    results = []
    progress = job.get("progress")

    def report(r):
        results.append(r)
        if progress:
            with open(progress, "a") as fh:
                fh.write(json.dumps({k: r.get(k) for k in ("position", "token_in", "token_out", "cycles", "seconds")})
                         + "\n")

    if "steps" in job:
        for token, position in job["steps"]:
            report(await step(token, position))
    else:
        loop = GreedyDecode(job["prompt"], job["new_tokens"])
        for position in range(loop.steps):
            t = time.perf_counter()
            r = await step(loop.token(position), position)
            r.setdefault("seconds", time.perf_counter() - t)
            loop.record(position, r["token_out"])
            report(r)
    return results
