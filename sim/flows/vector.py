"""Host side of the vector unit: its designs and host flows, registered by name.

DESIGNS maps a design name to ``factory(params) -> Component`` (see :mod:`sim.engine.registry`);
FLOWS maps a flow name to ``async def flow(bus, job) -> dict`` (see :mod:`sim.engine.registry`).

A job is JSON, shaped as :class:`VectorJob`. Each op is a dict named by ``"op"`` (a key of
:data:`OPS`) with its operands (:func:`check_op` lists them). Tables are given by what golden builds
them from (:class:`VectorTables`); the flow builds them with :mod:`golden.tables` and writes them
through the unit's table port (SiLU as activation table ``ACT_TABLE_INDEX["silu"]``, GELU as
``ACT_TABLE_INDEX["gelu"]``; a silu or gelu command names its table). :func:`vector_job` checks a
whole job on the host before any simulator starts; the flow checks it again.

Beat layouts (the contract with :class:`hdl.vector.VectorUnit`): per lane ``a`` (int32, or an
int8 operand), ``b`` (int8 operand or u15 multiplier), ``shift``:

=========  ==========================  =====================================================
op         beats (W = ceil(N/lanes))   lane fields
=========  ==========================  =====================================================
requant    W                           a = acc (int32), b = multiplier, shift = shift
add, mul   W                           a = a, b = b
silu_mul   W                           a = gate (looked up in the SiLU table), b = up
silu/gelu  W                           a = x
argmax     W                           a = logit (int32)
rmsnorm    W, then W                   a = x; then b = gamma
layernorm  W, then W                   a = x; then a = beta (int32), b = gamma
rope       heads x W, W = head_dim/lanes   a = x (``heads`` heads, default 1, N = heads x head_dim)
=========  ==========================  =====================================================
"""

from __future__ import annotations

import random
from typing import NotRequired, TypedDict

import numpy as np

import golden.vector as gv
from golden.errors import InputError, InputTypeError
from golden.numerics import MULT_MAX, SHIFT_MAX, check_int8, check_int_array, is_int, quantize_multiplier, requantize
from golden.tables import activation_table, rope_tables
from hdl.vector import (
    VECTOR_OP_NAMES,
    VectorOp,
    VectorTable,
    VectorUnit,
    cmd_layout,
    lane_layout,
    out_layout,
    rope_word_layout,
)

from ..engine.bus import WatchdogError
from ..engine.jobs import check_keys
from ..engine.stream import StreamDriver, StreamMonitor, check_nothing_in_flight
from ..machine.cycles import vector_cycles
from .gemm import pack_lanes, unpack_lanes

__all__ = ["ACT_TABLE_INDEX", "CHECKS", "DESIGNS", "FLOWS", "JOBS", "OPS", "PRESETS", "VectorJob", "VectorTables",
           "check_op", "check_params", "golden_op", "run_vector_ops", "vector_job"]

#: Op names of a job, in the order of :class:`hdl.vector.VectorOp`.
OPS = VECTOR_OP_NAMES

#: Design points: the demo model's sizes (d_model 64, head_dim 16, max_context 128, d_ff 192) and a
#: small one for the slow simulators (odd lanes, so lengths rarely fill the last beat). Two
#: activation tables: a job's SiLU and GELU.
PRESETS = {
    "demo": {"lanes": 4, "max_length": 256, "max_norm_length": 64, "max_head_dim": 16, "max_context": 128,
             "act_tables": 2},
    "small": {"lanes": 3, "max_length": 40, "max_norm_length": 24, "max_head_dim": 12, "max_context": 8,
              "act_tables": 2},
}
#: The activation table a job's SiLU and GELU tables are loaded into (and their commands name).
ACT_TABLE_INDEX = {"silu": 0, "gelu": 1}

_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1


def _vector_unit(params):
    return VectorUnit(**params)


DESIGNS = {"vector_unit": _vector_unit}


# --- host-side checks ------------------------------------------------------------------------------

def check_params(params) -> dict:
    """Check design parameters by building the component (its constructor names the bad one)."""
    if not isinstance(params, dict):
        raise InputTypeError(f"vector unit params must be a dict, not {type(params).__name__}")
    unit = _vector_unit(params)
    unit._MustUse__silence = True  # built only to check the parameters, never elaborated
    return params


def _int(what: str, value, low: int, high: int) -> int:
    if not is_int(value):
        raise InputTypeError(f"{what} must be an integer, not {value!r}")
    if not low <= value <= high:
        raise InputError(f"{what} must be in [{low}, {high}], not {value}")
    return int(value)


def _ints(what: str, values, low: int, high: int, length: int | None = None) -> list[int]:
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu":
        raise InputTypeError(f"{what} must hold integers, not {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] == 0:
        raise InputError(f"{what} must be a non-empty vector, not shape {arr.shape}")
    if length is not None and arr.shape[0] != length:
        raise InputError(f"{what} must have {length} values, not {arr.shape[0]}")
    return [int(v) for v in check_int_array(what, arr, low, high)]


def _per_element(what: str, value, low: int, high: int, length: int) -> list[int]:
    if is_int(value):
        return [_int(what, value, low, high)] * length
    return _ints(what, value, low, high, length)


def check_op(params: dict, op: dict, *, rope_head_dim: int | None = None) -> dict:
    """Check one op against the design and return it normalised (plain ints and lists).

    Raises TypeError / ValueError naming the op, the field and the bad value: an unknown op, a
    length of 0 or past ``max_length`` (``max_norm_length`` for norms, the loaded head_dim for
    RoPE), operands outside int8 / int32, multipliers outside [0, 32767], shifts outside [0, 46],
    a RoPE position outside [0, max_context), LayerNorm constants that are not 1/N. A rope op may
    give ``heads`` (its x holds that many heads, one after another; default 1) and ``heads_b``,
    ``mult_b``, ``shift_b`` (the last heads_b heads at that scale; default 0).
    """
    if not isinstance(op, dict) or "op" not in op:
        raise InputTypeError(f"a vector op must be a dict with an 'op' name, not {op!r}")
    name = op["op"]
    if name not in OPS:
        raise InputError(f"vector op must be one of {', '.join(OPS)}, not {name!r}")
    if name == "layernorm" and not params.get("layernorm", True):
        raise InputError("vector op layernorm needs a vector unit with layernorm = true; this one has none")
    first = {"requant": "acc", "argmax": "x", "add": "a", "mul": "a", "silu_mul": "a"}.get(name, "x")
    if first not in op:
        raise InputError(f"vector op {name} needs operand {first!r}")
    n = len(np.asarray(op[first]).reshape(-1)) if np.ndim(op[first]) == 1 else 0
    limit = params["max_norm_length"] if name in ("rmsnorm", "layernorm") else params["max_length"]
    if not 1 <= n <= limit:
        what = "max_norm_length" if name in ("rmsnorm", "layernorm") else "max_length"
        raise InputError(f"vector op {name} length must be in [1, {limit}] ({what}), not {n}")
    out = {"op": name, "length": n}
    lanes = params["lanes"]
    if name == "requant":
        out["acc"] = _ints("requant acc", op["acc"], _INT32_MIN, _INT32_MAX)
        out["mult"] = _per_element("requant multiplier", op["mult"], 0, MULT_MAX, n)
        out["shift"] = _per_element("requant shift", op["shift"], 0, SHIFT_MAX, n)
    elif name in ("add", "mul", "silu_mul"):
        out["a"] = check_int8(f"{name} a", op["a"]).tolist()
        out["b"] = _ints(f"{name} b", op["b"], -128, 127, n)
        keys = ("a_mult", "b_mult", "mult", "shift") if name == "add" else ("mult", "shift")
        for key in keys:
            out[key] = _int(f"{name} {key}", op[key], 0, SHIFT_MAX if key == "shift" else MULT_MAX)
    elif name in ("silu", "gelu"):
        out["x"] = check_int8(f"{name} x", op["x"]).tolist()
    elif name == "argmax":
        out["x"] = _ints("argmax x", op["x"], _INT32_MIN, _INT32_MAX)
    elif name in ("rmsnorm", "layernorm"):
        out["x"] = check_int8(f"{name} x", op["x"]).tolist()
        out["gamma"] = _ints(f"{name} gamma", op["gamma"], -128, 127, n)
        sq_max = 128 * 128 if name == "rmsnorm" else 255 * 255
        out["eps"] = _int(f"{name} eps", op["eps"], 0, (1 << 31) - 1 - n * sq_max)
        out["out_mult"] = _int(f"{name} out_mult", op["out_mult"], 0, MULT_MAX)
        out["out_shift"] = _int(f"{name} out_shift", op["out_shift"], 0, SHIFT_MAX)
        if name == "layernorm":
            out["beta"] = _ints("layernorm beta", op["beta"], -(1 << 30), 1 << 30, n)
            inv = (op.get("inv_mult"), op.get("inv_shift"))
            # The unit's widths hold the mean of an int8 row: the constants must be 1/N.
            if inv != quantize_multiplier(1.0 / n):
                raise InputError(f"layernorm inv_mult/inv_shift must represent 1/{n} "
                                 f"{quantize_multiplier(1.0 / n)}, not {inv}")
            out["inv_mult"], out["inv_shift"] = inv
    elif name == "rope":
        out["x"] = check_int8("rope x", op["x"]).tolist()
        heads = _int("rope heads", op.get("heads", 1), 1, n)
        if n % heads:
            raise InputError(f"rope x must hold heads ({heads}) x head_dim values, not {n}")
        n //= heads
        out["heads"] = heads
        out["heads_b"] = _int("rope heads_b", op.get("heads_b", 0), 0, heads)
        out["mult_b"] = _int("rope mult_b", op.get("mult_b", 0), 0, MULT_MAX)
        out["shift_b"] = _int("rope shift_b", op.get("shift_b", 0), 0, SHIFT_MAX)
        if n % (2 * lanes) or n > params["max_head_dim"]:
            raise InputError(f"rope length (head_dim) must be a multiple of 2 * lanes ({2 * lanes}) "
                             f"and at most max_head_dim ({params['max_head_dim']}), not {n}")
        if rope_head_dim is None:
            raise InputError("rope needs a loaded RoPE table: give tables['rope'] with its head_dim")
        if n != rope_head_dim:
            raise InputError(f"rope length must equal the loaded table's head_dim ({rope_head_dim}), not {n}")
        out["position"] = _int("rope position", op["position"], 0, params["max_context"] - 1)
        out["mult"] = _int("rope mult", op["mult"], 0, MULT_MAX)
        out["shift"] = _int("rope shift", op["shift"], 0, SHIFT_MAX)
    return out


def _check_tables(params: dict, tables) -> dict:
    check_keys(tables, VectorTables, "tables")
    if "rope" in tables:
        hd = tables["rope"].get("head_dim")
        lanes = params["lanes"]
        if isinstance(hd, bool) or not isinstance(hd, int) or hd < 1 or hd % (2 * lanes) \
                or hd > params["max_head_dim"]:
            raise InputError(f"rope table head_dim must be a positive multiple of 2 * lanes ({2 * lanes}) "
                             f"and at most max_head_dim ({params['max_head_dim']}), not {hd!r}")
    return tables


class VectorTables(TypedDict):
    """The tables of a ``vector_ops`` job, by what :mod:`golden.tables` builds them from."""

    #: The SiLU table: ``{"x_scale", "out_scale"}``.
    silu: NotRequired[dict]
    #: The GELU table: ``{"x_scale", "out_scale", "approximate"}``.
    gelu: NotRequired[dict]
    #: The RoPE table: ``{"head_dim", "base"}``.
    rope: NotRequired[dict]


class VectorJob(TypedDict):
    """A ``vector_ops`` job: ops run one after another on the same simulator (:func:`run_vector_ops`)."""

    #: The unit's design parameters (:func:`check_params`).
    params: dict
    #: The ops, each a dict named by ``"op"`` with its operands (:func:`check_op`).
    ops: list[dict]
    #: The tables the ops need (:class:`VectorTables`), written before the first op.
    tables: NotRequired[VectorTables]
    #: Seed of the random stream gaps and stalls (default 0).
    seed: NotRequired[int]
    #: Probability a driver holds its valid low in a cycle, in [0, 1) (default 0).
    gaps: NotRequired[float]
    #: Probability of backpressure on an output cycle, in [0, 1) (default 0).
    stall: NotRequired[float]
    #: Watchdog cycles of every op (default from the cycle model's prediction).
    budget: NotRequired[int | None]


def vector_job(params: dict, ops: list, *, tables: VectorTables | None = None, seed: int = 0, gaps: float = 0.0,
               stall: float = 0.0, budget: int | None = None) -> VectorJob:
    """Check a whole job on the host and return it, normalised, ready for :func:`sim.engine.runner.run`."""
    check_params(params)
    tables = _check_tables(params, tables or {})
    for name in ("silu", "gelu"):
        users = ("silu", "silu_mul") if name == "silu" else (name,)
        if any(isinstance(o, dict) and o.get("op") in users for o in ops) and name not in tables:
            raise InputError(f"vector op {name} needs its table: give tables[{name!r}]")
        if name in tables and ACT_TABLE_INDEX[name] >= params["act_tables"]:
            raise InputError(f"the {name} table goes to activation table {ACT_TABLE_INDEX[name]}: the design needs "
                             f"act_tables >= {ACT_TABLE_INDEX[name] + 1}, not {params['act_tables']}")
    hd = tables["rope"]["head_dim"] if "rope" in tables else None
    for what, value in (("gaps", gaps), ("stall", stall)):
        if not 0.0 <= value < 1.0:
            raise InputError(f"{what} must be in [0, 1), not {value}")
    checked = [check_op(params, op, rope_head_dim=hd) for op in ops]
    return {"params": params, "tables": tables, "ops": checked, "seed": seed, "gaps": gaps, "stall": stall,
            "budget": budget}


def golden_op(params: dict, op: dict, tables: VectorTables) -> np.ndarray:
    """Golden's answer to one op checked by :func:`check_op` with the job's ``tables``: the int8
    output (every head of a RoPE op, the last ``heads_b`` at the second scale), or argmax's index."""
    name = op["op"]
    if name == "requant":
        return requantize(op["acc"], op["mult"], op["shift"])
    if name == "add":
        p = gv.AddParams(a_mult=op["a_mult"], b_mult=op["b_mult"], mult=op["mult"], shift=op["shift"])
        return gv.residual_add(op["a"], op["b"], p)
    if name in ("mul", "silu_mul"):
        a = op["a"]
        if name == "silu_mul":
            a = gv.activation(a, activation_table("silu", tables["silu"]["x_scale"], tables["silu"]["out_scale"]))
        return gv.multiply(a, op["b"], mult=op["mult"], shift=op["shift"])
    if name == "silu":
        return gv.silu(op["x"], **tables["silu"])
    if name == "gelu":
        return gv.gelu(op["x"], **tables["gelu"])
    if name == "argmax":
        return gv.argmax(np.array(op["x"]))
    if name in ("rmsnorm", "layernorm"):
        inv = quantize_multiplier(1.0 / len(op["x"]))
        p = gv.NormParams(kind="rms" if name == "rmsnorm" else "layer", gamma=np.array(op["gamma"]),
                          beta=np.array(op["beta"]) if "beta" in op else None, eps=op["eps"],
                          out_mult=op["out_mult"], out_shift=op["out_shift"], inv_mult=inv[0], inv_shift=inv[1])
        return (gv.rmsnorm if name == "rmsnorm" else gv.layernorm)(op["x"], p)
    heads, rope = op["heads"], tables["rope"]
    x = np.array(op["x"]).reshape(heads, rope["head_dim"])
    out = []
    for h in range(heads):
        second = h >= heads - op["heads_b"]
        mult, shift = (op["mult_b"], op["shift_b"]) if second else (op["mult"], op["shift"])
        out.append(gv.rope(x[h], op["position"], mult=mult, shift=shift, max_context=params["max_context"],
                           base=rope.get("base", 10000.0)))
    return np.concatenate(out)


# --- packing -------------------------------------------------------------------------------------

def _fields(layout) -> dict:
    return {name: (f.offset, f.width) for name, f in layout}


def _pack(fields: dict, values: dict) -> int:
    word = 0
    for name, value in values.items():
        offset, width = fields[name]
        word |= (int(value) & ((1 << width) - 1)) << offset
    return word


class _Packer:
    def __init__(self, params):
        self.lanes = params["lanes"]
        self.lane = _fields(lane_layout())
        self.lane_bits = lane_layout().size
        self.cmd = _fields(cmd_layout(params["max_length"], params["max_context"], params["act_tables"]))
        self.out = _fields(out_layout(self.lanes, params["max_length"]))

    def beats(self, length: int, lanes_of) -> list[int]:
        """``lanes_of(i)`` gives the field dict of element i; padding lanes are 0."""
        words = []
        for start in range(0, length, self.lanes):
            word = 0
            for j in range(self.lanes):
                if start + j < length:
                    word |= _pack(self.lane, lanes_of(start + j)) << (j * self.lane_bits)
            words.append(word)
        return words

    def unpack_out(self, word: int) -> tuple[list[int], int, int]:
        off, width = self.out["data"]
        data = unpack_lanes((word >> off) & ((1 << width) - 1), 8, self.lanes)
        ioff, iwidth = self.out["index"]
        loff, _ = self.out["last"]
        return data, (word >> ioff) & ((1 << iwidth) - 1), (word >> loff) & 1


def _encode(p: _Packer, op: dict) -> tuple[dict, list[int]]:
    """The command fields and the input beats of one checked op."""
    name, n = op["op"], op["length"]
    cmd = {"op": VectorOp[name.upper()].value, "length": n}
    if name == "requant":
        beats = p.beats(n, lambda i: {"a": op["acc"][i], "b": op["mult"][i], "shift": op["shift"][i]})
    elif name in ("add", "mul", "silu_mul"):
        cmd.update({k: op[k] for k in ("a_mult", "b_mult", "mult", "shift") if k in op})
        if name == "silu_mul":
            cmd["table"] = ACT_TABLE_INDEX["silu"]
        beats = p.beats(n, lambda i: {"a": op["a"][i], "b": op["b"][i]})
    elif name in ("silu", "gelu", "argmax"):
        if name != "argmax":
            cmd["table"] = ACT_TABLE_INDEX[name]
        beats = p.beats(n, lambda i: {"a": op["x"][i]})
    elif name in ("rmsnorm", "layernorm"):
        cmd.update({"mult": op["out_mult"], "shift": op["out_shift"], "eps": op["eps"]})
        if name == "layernorm":
            cmd.update({"inv_mult": op["inv_mult"], "inv_shift": op["inv_shift"]})
        beta = op.get("beta") or [0] * n
        beats = p.beats(n, lambda i: {"a": op["x"][i]}) + \
            p.beats(n, lambda i: {"a": beta[i], "b": op["gamma"][i]})
    else:  # rope: length is the head_dim, the beats are every head's, one head after another
        heads = op["heads"]
        cmd.update({"position": op["position"], "mult": op["mult"], "shift": op["shift"], "length": n // heads,
                    "heads": heads, "heads_b": op["heads_b"], "mult_b": op["mult_b"], "shift_b": op["shift_b"]})
        hd = n // heads
        beats = [b for h in range(heads) for b in p.beats(hd, lambda i, h=h: {"a": op["x"][h * hd + i]})]
    return cmd, beats


# --- host flows ----------------------------------------------------------------------------------

async def _load_tables(bus, params: dict, tables: dict) -> int:
    """Write the model-dependent tables through the table port; returns the cycles it took."""
    lanes = params["lanes"]
    writes = []
    for name in ("silu", "gelu"):
        if name in tables:
            spec = tables[name]
            kind = "silu" if name == "silu" else \
                ("gelu_tanh" if spec.get("approximate", "tanh") == "tanh" else "gelu_erf")
            table = activation_table(kind, spec["x_scale"], spec["out_scale"])
            base = ACT_TABLE_INDEX[name] * len(table)
            writes += [(VectorTable.ACT.value, base + i, int(v) & 0xFF) for i, v in enumerate(table)]
    if "rope" in tables:
        spec = tables["rope"]
        hd = spec["head_dim"]
        cos, sin = rope_tables(params["max_context"], hd, spec.get("base", 10000.0))
        fields = _fields(rope_word_layout(lanes))
        stride = params["max_head_dim"] // (2 * lanes)

        for pos in range(params["max_context"]):
            for word in range(hd // (2 * lanes)):
                cols = slice(word * lanes, (word + 1) * lanes)
                value = (pack_lanes(cos[pos, cols], 16) << fields["cos"][0]) | \
                    (pack_lanes(sin[pos, cols], 16) << fields["sin"][0])
                writes.append((VectorTable.ROPE.value, pos * stride + word, value))
    bus.set("tbl_we", 1)
    for sel, addr, value in writes:
        bus.set("tbl_sel", sel)
        bus.set("tbl_addr", addr)
        bus.set("tbl_data", value)
        await bus.tick()
    bus.set("tbl_we", 0)
    return len(writes)


class _Writes:
    """Pass only changed input values to the simulator: each write is a costly simulator call."""

    def __init__(self, bus):
        self._bus = bus
        self._last = {}

    def set(self, name: str, value: int) -> None:
        value = int(value)
        if self._last.get(name) != value:
            self._last[name] = value
            self._bus.set(name, value)


async def run_vector_ops(bus, job: VectorJob) -> dict:
    """Run every op of a (checked) job one after another on the same simulator.

    Drivers offer the command and then the op's input beats in order (with random idle cycles,
    ``gaps``); the monitor takes output beats (with random backpressure, ``stall``). Returns
    ``{"ops": [{"op", "out" (N int8) or "index", "cycles" (the unit's counter), "edges" (cycles
    counted here, the same span), "predicted"}], "table_writes"}``. Raises WatchdogError when an op
    does not finish within its budget (``job["budget"]``, default from the cycle model).
    """
    job = _check_vector_job(job)
    params = job["params"]
    p = _Packer(params)
    rng = random.Random(job["seed"])
    gaps, stall = job["gaps"], job["stall"]
    drive = _Writes(bus)
    for name in ("cmd.valid", "cmd.payload", "inp.valid", "inp.payload", "out.ready", "tbl_we", "tbl_sel",
                 "tbl_addr", "tbl_data"):
        drive.set(name, 0)
    await bus.reset()
    table_writes = await _load_tables(bus, params, job["tables"])
    out = StreamMonitor(bus, "out", rng=rng, stall=stall, draw_at_zero=False)

    results = []
    for number, op in enumerate(job["ops"]):
        cmd, beats = _encode(p, op)
        heads = op.get("heads", 1)
        predicted = vector_cycles(op["op"], op["length"] // heads, params["lanes"], heads=heads,
                                  product_register=params.get("product_register", False)).total
        budget = job["budget"] or ((2 * predicted + 64) * (1 if gaps == stall == 0 else 16))
        drive.set("cmd.payload", _pack(p.cmd, cmd))
        drive.set("cmd.valid", 1)
        cmd_pending = True
        inp = StreamDriver(bus, "inp", beats, rng=rng, gaps=gaps, draw_at_zero=False)
        cycle = 0
        taken_at = None
        data, index = [], None
        while True:
            inp.offer()
            out.offer()
            await bus.settle()
            if cmd_pending and bus.get("cmd.ready"):
                cmd_pending = False
                taken_at = cycle
            inp.took()
            last = False
            word = out.take()
            if word is not None:
                lanes, idx, last = p.unpack_out(word)
                data += lanes
                index = idx
            await bus.tick()
            if not cmd_pending:
                drive.set("cmd.valid", 0)
            if last:
                break
            cycle += 1
            if cycle >= budget:
                raise WatchdogError(f"vector op {number} ({op['op']}, length {op['length']}) did not finish "
                                    f"within {budget} cycles")
        await bus.settle()
        if bus.get("busy"):
            raise AssertionError(f"vector op {number} ({op['op']}): busy still high after its last beat")
        if not inp.done:
            raise AssertionError(f"vector op {number} ({op['op']}): {len(beats) - inp.sent} input beats not taken")
        result = {"op": op["op"], "cycles": bus.get("cycles"), "edges": cycle - taken_at + 1,
                  "predicted": predicted}
        await bus.tick()
        if op["op"] == "argmax":
            result["index"] = index
        else:
            n = op["length"]
            result["out"] = data[:n]
            result["padding"] = data[n:]
        results.append(result)

    # Nothing may be left in flight: no beat comes out and no input is asked for.
    inp = StreamDriver(bus, "inp", [])
    await check_nothing_in_flight(bus, "the vector unit", 8, drivers=(inp,), monitors=(out,), busy=("busy",))
    return {"ops": results, "table_writes": table_writes}


def _check_vector_job(job: VectorJob) -> VectorJob:
    """Check a ``vector_ops`` job in the host process before any simulator starts."""
    return vector_job(job["params"], job["ops"], tables=job.get("tables"), seed=job.get("seed", 0),
                      gaps=job.get("gaps", 0.0), stall=job.get("stall", 0.0), budget=job.get("budget"))


FLOWS = {"vector_ops": run_vector_ops}
#: Run by :func:`sim.engine.runner.run` before a simulator starts (see :mod:`sim.engine.registry`).
CHECKS = {"vector_ops": _check_vector_job}
JOBS = {"vector_ops": VectorJob}
