"""Host side of the decode top level (:class:`hdl.top.DecodeTop`): design parameters, memory
images, and the host flow that loads a compiled model once and runs decode steps on it (the flow
itself is in :mod:`sim.flows.decode_steps`, which a simulator process imports alone).

DESIGNS maps a design name to ``factory(params) -> Component`` (see :mod:`sim.engine.registry`);
FLOWS maps a flow name to ``async def flow(bus, job) -> dict`` (see :mod:`sim.engine.registry`), JOBS
to the job's shape: a ``decode_top`` job is a :class:`sim.flows.decode_steps.DecodeJob` (each key
documented there), built by :func:`decode_job`.
"""

from __future__ import annotations

import numpy as np

from golden.errors import InputError
from golden.greedy import GreedyDecode, check_prompt
from golden.numerics import ceil_div
from golden.tables import rope_tables
from hdl.config import UNIT_CYCLE_BITS, Config
from hdl.top import DecodeTop, TopMem, check_top_config
from hdl.vector import rope_word_layout

from ..machine.compiler import Compiled, CompileError, rope_params
from ..machine.cycles import decode_step_cycles, pass_cycles
from ..machine.passes import check_pass, check_table, lone_table
from ..machine.resident import Resident
from .decode_steps import DecodeImages, DecodeJob, DecodeReadback, drive_steps, run_decode_top
from .gemm import pack_lanes

__all__ = ["CHECKS", "DESIGNS", "FLOWS", "IMAGE_MEMORIES", "JOBS", "check_fits", "check_job", "decode_job",
           "drive_steps", "images", "paged_pass", "resident_models", "top_params"]

#: Image name (a key of :func:`images`) -> the host-port memory it is written to, in loading order.
#: Every host that loads a compiled model (the simulator flow below, the serial link) iterates this
#: one table.
IMAGE_MEMORIES = {
    "program": TopMem.PROGRAM,
    "weights": TopMem.WEIGHTS,
    "params": TopMem.PARAMS,
    "rope": TopMem.VTABLE,
    "act_tables": TopMem.ACT_TABLES,
}


def _decode_top(params):
    return DecodeTop(Config.from_dict(params["config"]), head_dim=params["head_dim"], max_heads=params["max_heads"],
                     max_norm_length=params["max_norm_length"])


def resident_models(compiled: Compiled) -> list[Compiled]:
    """The models whose memories a run of ``compiled`` loads: the model it was compiled beside (if any),
    then itself (:func:`sim.machine.compiler.compile_model`'s ``beside``)."""
    return [compiled] if compiled.beside is None else [compiled.beside, compiled]


def top_params(compiled: Compiled, *, max_heads: int | None = None, max_norm_length: int | None = None) -> dict:
    """Design parameters of a top level that runs ``compiled`` (and the model it was compiled beside:
    the larger of their heads and norm lengths), optionally larger, to share a build."""
    models = [c.model.config for c in resident_models(compiled)]
    params = {"config": compiled.config.as_dict(), "head_dim": models[-1].head_dim,
              "max_heads": max_heads or max(mc.n_heads for mc in models),
              "max_norm_length": max_norm_length or max(mc.d_model for mc in models)}
    check_fits(compiled, params)
    return params


def check_fits(compiled: Compiled, params: dict) -> None:
    """Raise CompileError (naming the size) if ``compiled`` cannot run on the top level ``params``;
    ValueError / TypeError from the top level's own checks for a bad design."""
    config = Config.from_dict(params["config"])
    V = check_top_config(config)
    if compiled.config != config:
        raise CompileError("the model was compiled for another configuration than the top level's")
    if compiled.beside is not None:
        check_fits(compiled.beside, params)
    mc = compiled.model.config
    needs = [("head_dim", mc.head_dim, params["head_dim"], "=="),
             ("query heads", mc.n_heads, params["max_heads"], "<="),
             ("norm length (d_model)", mc.d_model, params["max_norm_length"], "<=")]
    for what, need, have, rel in needs:
        if (need != have) if rel == "==" else (need > have):
            word = "must equal" if rel == "==" else "must be at most"
            raise CompileError(f"the model does not fit the top level: its {what} is {need}, which {word} the "
                               f"design's {have}")
    rows = mc.n_layers * mc.n_kv_heads * (config.kv_block or config.max_context)
    if rows > config.kv_bytes // (2 * mc.head_dim):
        raise CompileError(f"the model does not fit the top level: its KV cache needs {rows} rows of "
                           f"{mc.head_dim} bytes for K and for V, kv_bytes={config.kv_bytes} holds "
                           f"{config.kv_bytes // (2 * mc.head_dim)}")
    if mc.head_dim % (2 * V):
        raise CompileError(f"the model does not fit the top level: head_dim {mc.head_dim} must be a multiple "
                           f"of 2 * vector_lanes ({2 * V})")


def images(compiled: Compiled) -> DecodeImages:
    """The memory images the host loads once per run, as JSON-able ``[address, word]`` lists
    (zero words left out: every memory starts at zero), keyed as :data:`IMAGE_MEMORIES`; for a model
    compiled beside another, both models' words (:func:`resident_models`), each at its addresses.

    ``act_tables``: one int8 entry a word (two's complement in 8 bits), entry ``x + 128`` of table
    ``t`` at address ``t * 256 + x + 128``."""
    out = _own_images(compiled)
    if compiled.beside is not None:
        below = _own_images(compiled.beside)
        out = {name: (below[name] if name != "rope" else []) + words for name, words in out.items()}
    return out


def _own_images(compiled: Compiled) -> DecodeImages:
    """:func:`images` of ``compiled``'s own words (at its :attr:`Compiled.bases`), and the RoPE table."""
    V = compiled.config.vector_lanes
    b = compiled.bases
    w = np.zeros(ceil_div(compiled.weights.size, V) * V, np.int64)
    w[:compiled.weights.size] = compiled.weights
    p = np.zeros(ceil_div(compiled.params.size, V) * V, np.int64)
    p[:compiled.params.size] = compiled.params

    def words(arr, bits, base):
        out = []
        for i, chunk in enumerate(arr.reshape(-1, V)):
            if chunk.any():
                out.append([base + i, pack_lanes(chunk, bits)])
        return out

    rope = []
    r = rope_params(compiled)
    if r is not None:
        cos, sin = rope_tables(r.max_context, r.head_dim, r.base)
        layout = rope_word_layout(V)
        cos_off, sin_off = layout["cos"].offset, layout["sin"].offset
        stride = r.head_dim // (2 * V)
        for pos in range(r.max_context):
            for word in range(stride):
                cols = slice(word * V, (word + 1) * V)
                rope.append([pos * stride + word,
                             (pack_lanes(cos[pos, cols], 16) << cos_off) | (pack_lanes(sin[pos, cols], 16) << sin_off)])
    acts = compiled.act_tables.reshape(-1)
    act_base = b.get("act_tables", 0) * compiled.act_tables.shape[1]
    act_tables = [[act_base + i, int(v) & 0xFF] for i, v in enumerate(acts) if v]
    return {"program": [[compiled.program_base + i, wd] for i, wd in enumerate(compiled.program_words)],
            "weights": words(w, 8, b.get("weight_words", 0) * compiled.config.array_cols // V),
            "params": words(p, 32, b.get("param_words", 0) // V), "rope": rope, "act_tables": act_tables}


def predicted_cycles(compiled: Compiled, position: int) -> int:
    """The cycle model's count for the compiled program's instructions (all but HALT)."""
    return decode_step_cycles(compiled.program, compiled.model.config, compiled.config, position=position).total


def check_waves_window(window: dict | None, n_steps: int) -> None:
    """A waveform window: ``{"steps": [first, last]}`` (positions, both dumped) within the run's
    ``n_steps`` steps, or ``{"cycles": [start, stop]}`` (cycles from the first step's start edge,
    ``start`` dumped, ``stop`` not); InputError naming the bad value."""
    if window is None:
        return
    if not isinstance(window, dict) or len(window) != 1 or set(window) - {"steps", "cycles"}:
        raise InputError(f"waves window must be {{'steps': [first, last]}} or {{'cycles': [start, stop]}}, "
                         f"not {window!r}")
    (kind, pair), = window.items()
    if (not isinstance(pair, list | tuple) or len(pair) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in pair)):
        raise InputError(f"waves window {kind} must be two non-negative integers, not {pair!r}")
    first, last = pair
    if kind == "steps" and not first <= last < n_steps:
        raise InputError(f"--waves-steps {first}-{last}: the run has steps 0..{n_steps - 1}")
    if kind == "cycles" and not first < last:
        raise InputError(f"--waves-cycles {first}-{last}: the window is empty")


def decode_job(compiled: Compiled, params: dict, *, prompt=None, new_tokens: int = 0, steps=None, passes=None,
               tables=None, trace: bool = False, readback: DecodeReadback | None = None,
               waves_window: dict | None = None) -> DecodeJob:
    """A checked ``decode_top`` job for ``compiled`` on the top level ``params``: the ``steps``
    (``(token, position)`` pairs), greedy decoding of ``prompt`` + ``new_tokens``, or the ``passes``
    (each a sequence of rows ``(token, position, slot)``, checked by
    :func:`sim.machine.passes.check_pass`, or a pair ``(model, rows)``: a pass of ``model``, one of
    :func:`resident_models` ``(compiled)``, when ``compiled`` was compiled beside another), exactly one;
    ``waves_window`` narrows a waveform to some steps or cycles (:func:`check_waves_window`; not with
    ``passes``). Paged KV (``Config.kv_block`` > 0): ``tables``, one a pass, each ``{slot: blocks}``
    (:func:`sim.machine.passes.check_table`) for at least the pass's slots (:func:`paged_pass`); steps
    and a prompt run in one sequence whose table is blocks 0, 1, ...."""
    check_fits(compiled, params)
    mc = compiled.model.config
    memories = {name: mem.value for name, mem in IMAGE_MEMORIES.items()}
    memories.update(trace=TopMem.TRACE.value, scratch=TopMem.SCRATCH.value, logits=TopMem.LOGITS.value)
    job: DecodeJob = {"params": params, "images": images(compiled), "memories": memories,
                      "n_kv_heads": mc.n_kv_heads, "group": mc.n_heads // mc.n_kv_heads, "trace": trace,
                      "trace_bits": UNIT_CYCLE_BITS, "readback": readback or {}}
    resident = resident_models(compiled)
    if compiled.beside is not None:
        job["models"] = [_job_model(c) for c in resident]
        job["model"] = len(resident) - 1
    if passes is not None:
        if steps is not None or prompt is not None:
            raise InputError("a decode_top job runs steps, a prompt or passes, not more than one")
        if waves_window is not None:
            raise InputError("a waveform window goes with steps or a prompt, not with passes")

        job["passes"], job["pass_predicted"], pass_models = [], [], []
        for i, entry in enumerate(passes):
            index, rows = len(resident) - 1, entry           # compiled's own pass
            if isinstance(entry, tuple | list) and len(entry) == 2 and isinstance(entry[0], Compiled):
                index = next((k for k, c in enumerate(resident) if c is entry[0]), None)
                if index is None:
                    raise InputError(f"pass {i} names a model that is not resident in this job (compile it "
                                     f"beside the other: compile_model(..., beside=...))")
                rows = entry[1]
            model = resident[index]
            rows = [tuple(int(v) for v in row) for row in rows]
            if compiled.config.kv_block:
                hw_rows, hw_tables = paged_pass(model, rows, tables, i)
                job.setdefault("tables", []).append(hw_tables)
                job["passes"].append(hw_rows)
            elif compiled.beside is None:
                check_pass(model, rows)
            else:       # and no target row in the draft's KV region
                Resident(*resident).check_pass(index, rows)
            pass_models.append(index)
            if not compiled.config.kv_block:
                job["passes"].append([[token, position, model.kv_row(slot)] for token, position, slot in rows])
            job["pass_predicted"].append(pass_cycles(model.program, model.model.config, model.config,
                                                     positions=[position for _, position, _ in rows]).total)
        job["row_stride"], job["logits_stride"] = compiled.row_stride, compiled.logits_stride
        if compiled.config.kv_block:
            job["plane_rows"] = compiled.plane_rows
        if compiled.beside is not None:
            job["pass_models"] = pass_models
        return job
    if tables is not None:
        raise InputError("block tables go with passes, not with steps or a prompt")
    if steps is not None:
        job["steps"] = [[int(t), int(p)] for t, p in steps]
        positions = [p for _, p in job["steps"]]
    else:
        prompt = check_prompt(prompt, new_tokens, compiled.model.max_context, mc.vocab_size)
        job["prompt"], job["new_tokens"] = prompt, new_tokens
        positions = list(range(GreedyDecode(prompt, new_tokens).steps))
    job["predicted"] = {str(p): predicted_cycles(compiled, p) for p in sorted(set(positions))}
    if compiled.config.kv_block:        # one sequence (table 0: kv_base 0)
        check_pass(compiled, [(0, max(positions), 0)], {0: lone_table(compiled)})
        job["tables"] = [[list(lone_table(compiled))]]
        job["plane_rows"] = compiled.plane_rows
    if waves_window is not None:
        check_waves_window(waves_window, len(positions))
        job["waves_window"] = {k: list(v) for k, v in waves_window.items()}
    return job


def paged_pass(compiled: Compiled, rows, tables, index: int) -> tuple[list[list[int]], list[list[int]]]:
    """Pass ``index``'s rows on a paged top level: ``[token, position, table]`` (``table``: the row's
    sequence's number among the pass's, in order of first row, which the top level's row table carries
    as the row's ``kv_base``) and the block tables of those sequences in that order, each checked
    (:func:`sim.machine.passes.check_table`, :func:`sim.machine.passes.check_pass`: a position past
    its table is refused); InputError in one line without a table for the pass."""
    if tables is None or isinstance(tables, (str, bytes, dict)) or not 0 <= index < len(tables):
        raise InputError(f"paged KV (kv_block {compiled.config.kv_block}): pass {index} needs its block "
                         f"tables (tables=[{{slot: blocks}}, ...], one a pass)")
    given = tables[index]
    if not isinstance(given, dict):
        raise InputError(f"pass {index}'s block tables must be a dict {{slot: blocks}}, not {given!r}")
    order: dict[int, int] = {}
    for _, _, slot in rows:
        order.setdefault(slot, len(order))
    checked = {s: check_table(compiled, s, given[s]) for s in order if s in given}
    check_pass(compiled, rows, checked)
    return ([[token, position, order[slot]] for token, position, slot in rows],
            [list(checked[s]) for s in order])


def _job_model(compiled: Compiled) -> dict:
    """A resident model's registers in a job (:class:`sim.flows.decode_steps.JobModel`)."""
    mc = compiled.model.config
    return {"program_base": compiled.program_base, "program_len": len(compiled.instructions),
            "row_stride": compiled.row_stride, "logits_stride": compiled.logits_stride,
            "n_kv_heads": mc.n_kv_heads, "group": mc.n_heads // mc.n_kv_heads}


def check_job(job: DecodeJob) -> DecodeJob:
    """What the keys alone do not say (:data:`JOBS` says which keys there are): ``steps``, ``prompt`` or
    ``passes``, exactly one, ``new_tokens`` with ``prompt``, ``row_stride`` and ``logits_stride``
    with ``passes``, ``tables`` (one a pass, or one for the steps) with ``plane_rows``."""
    if sum(k in job for k in ("steps", "prompt", "passes")) != 1:
        raise InputError("decode_top job needs exactly one of 'steps', 'prompt' and 'passes'")
    if ("prompt" in job) != ("new_tokens" in job):
        raise InputError("decode_top job needs 'new_tokens' with 'prompt', and only with it")
    for key in ("row_stride", "logits_stride"):
        if ("passes" in job) != (key in job):
            raise InputError(f"decode_top job needs {key!r} with 'passes', and only with it")
    if ("tables" in job) != ("plane_rows" in job):
        raise InputError("decode_top job needs 'plane_rows' with 'tables', and only with it")
    if "tables" in job and len(job["tables"]) != len(job.get("passes", [None])):
        raise InputError(f"decode_top job needs one entry of 'tables' a pass (one for steps), "
                         f"not {len(job['tables'])}")
    return job


DESIGNS = {"decode_top": _decode_top}
FLOWS = {"decode_top": run_decode_top}
JOBS = {"decode_top": DecodeJob}
CHECKS = {"decode_top": check_job}
