"""The compiler: an integer model + a hardware configuration -> a static program and memory images.

Input: :class:`golden.int_model.IntModel` (its integer program is an ordered list of primitive
ops). Output: :class:`Compiled`: one instruction (:mod:`hdl.isa`) per group of ops of
:func:`sim.machine.schedule.instruction_groups` (one op each, except GEMMs that read the same input,
merged into one GEMM, and with ``Config.fused_residual`` a GEMM with the residual add it alone feeds:
one GEMM instruction with flag RESIDUAL) plus ``HALT``, and the contents of every memory the host loads once per run:

* ``weights``: int8 bytes in words of ``array_cols`` bytes. A GEMM's tiles are laid out in the order
  of :func:`hdl.isa.weight_tiles` (output tile, reduction tile, tile row), a merged GEMM's on its
  members' weights side by side (:attr:`sim.machine.schedule.Group.params`); an embedding table is
  row-major, each row starting on a word.
* ``params``: 32-bit words, one record per op, packed by its :class:`hdl.isa.ParamRecord`
  (:data:`hdl.isa.PARAM_RECORDS`). Every record starts on a word of ``max(array_rows, array_cols)``
  (the top level's parameter word: V x 32 bits), and every per-channel part of a record (bias,
  multipliers, gamma, beta) is padded with zeros to a whole word, so the scalars after it start on a
  word too.
* ``act_tables``: the distinct activation tables (SiLU, GELU: 256 int8 entries each, entry x + 128),
  one row per table; an ACTIVATION instruction (and a fused SwiGLU MULTIPLY, ``Config.fused_swiglu``)
  names its row in ``count``. The host writes them
  into the vector unit's table memory once per run (``Config.act_tables`` rows);
* the activation scratchpad: int8 values, each op's output at its own address (aligned to a
  word of ``max(array_rows, array_cols)`` elements; a merged GEMM's members at its address plus
  their offsets, each on a word too); the int32 logits go to the logits buffer.
* the KV cache: int8, ``[layer][position][kv head][head_dim]``, the order attention streams it.

Two models resident (``compile_model(draft, config, beside=target)``, docs/top.md "Two models
resident"): the second model's program, weights, parameters and activation tables follow the
first's in their memories (:attr:`Compiled.bases`: its instructions hold absolute addresses, its
images only its own words), its KV region is the top ``kv_slots`` slots of the KV memory
(:attr:`Compiled.kv_base`), and the scratchpad and the logits buffer are shared (a pass writes every
value before it reads it). The fit rule counts both models: the first keeps at least one KV slot.

The only runtime inputs of a decode step are the token and its position (the KV length is
position + 1). :class:`Compiled` also says how much of each memory the model needs; the compiler
refuses a model that does not fit, naming the memory and the shortfall.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from golden.errors import InputError, InputTypeError
from golden.int_model import IntModel
from golden.numerics import ceil_div
from golden.tables import rope_tables
from hdl.config import ACT_TABLE_SIZE
from hdl.isa import (
    PARAM_RECORDS,
    EmbedFlags,
    GemmFlags,
    Instruction,
    MultiplyFlags,
    Opcode,
    RopeFlags,
    disassemble,
    encode,
    make,
    pack_mult_shift,
    param_record,
    weight_tiles,
)

from .schedule import instruction_groups

__all__ = ["Compiled", "CompileError", "compile_model"]


class CompileError(InputError):
    """A model that does not fit a configuration, or that the hardware cannot run."""


@dataclass
class Compiled:
    """A compiled decode step."""

    config: object
    model: object
    instructions: list[Instruction]
    ops: list                       # the Group of program ops of each instruction (None for HALT)
    weights: np.ndarray             # int8 bytes
    params: np.ndarray              # int32 words (int64 array)
    act_tables: np.ndarray          # (tables, 256) int8 (int64 array): the activation tables, by index
    scratch_size: int               # elements of the activation scratchpad used
    logits_size: int                # int32 words of the logits buffer used
    kv_shape: tuple[int, int, int, int]
    addresses: dict[str, int] = field(default_factory=dict)   # value -> scratchpad (or logits) address
    logits_value: str = ""
    token_value: str = ""
    # --- two models resident (compile_model(..., beside=first)) ---
    beside: Compiled | None = None  # the model this one was compiled beside (its memories come first)
    bases: dict[str, int] = field(default_factory=dict)   # memory_needs key -> words (tables) of the first below
    kv_base: int = 0                # the first KV row of this model's region

    @property
    def program_base(self) -> int:
        """The program memory address of this model's first instruction (``DecodeTop.program_base``)."""
        return self.bases.get("program_words", 0)

    # --- passes of several token rows (sim.machine.passes) ---

    @property
    def row_stride(self) -> int:
        """Scratchpad elements between two token rows of a pass: row r of every value sits at its
        address + r * row_stride (the one-row scratchpad, rounded up to a scratchpad word)."""
        return _round_up(self.scratch_size, self.config.vector_lanes)

    @property
    def logits_stride(self) -> int:
        """int32 words between two rows' logits in the logits buffer (rounded up to a logits word)."""
        return _round_up(self.logits_size, self.config.vector_lanes)

    @property
    def slot_rows(self) -> int:
        """KV-cache rows (of head_dim int8, for K and for V) of one sequence's slot:
        ``n_layers * n_kv_heads * max_context`` (the design's context: the hardware's row stride)."""
        mc = self.model.config
        return mc.n_layers * mc.n_kv_heads * self.config.max_context

    @property
    def kv_slots(self) -> int:
        """Sequences whose KV cache the design's KV memory holds at once: fixed slots of
        :attr:`slot_rows` rows (slot s starts at KV row :meth:`kv_row` ``(s)``), or with pages
        (``Config.kv_block``) the block tables, one a sequence: as many as there are blocks
        (:attr:`kv_blocks`), since a sequence holds at least one."""
        return self.kv_blocks

    def kv_row(self, slot: int) -> int:
        """Slot ``slot``'s first KV row (a pass row's ``kv_base``): ``kv_base + slot * slot_rows``."""
        return self.kv_base + slot * self.slot_rows

    # --- the KV memory's layout: fixed slots, or pages of Config.kv_block positions ---

    @property
    def block_positions(self) -> int:
        """Positions of a sequence one KV block holds: ``Config.kv_block``, or a whole context
        (``Config.max_context``) in fixed slots (a slot is one block)."""
        return self.config.kv_block or self.config.max_context

    @property
    def kv_blocks(self) -> int:
        """Blocks in this model's KV region (from :attr:`kv_base` to the top of the KV memory), each
        ``n_layers * n_kv_heads * block_positions`` K rows (and as many V rows)."""
        mc = self.model.config
        rows = self.config.kv_bytes // (2 * mc.head_dim) - self.kv_base
        return rows // (mc.n_layers * mc.n_kv_heads * self.block_positions)

    @property
    def table_entries(self) -> int:
        """Entries of one sequence's block table: ``ceil(max_context / block_positions)`` (fixed: 1)."""
        return ceil_div(self.config.max_context, self.block_positions)

    @property
    def plane_rows(self) -> int:
        """Paged KV: the rows of one (layer, KV head) plane, ``kv_blocks * kv_block``."""
        return self.kv_blocks * self.block_positions

    def kv_rows(self, table, layer: int, positions) -> np.ndarray:
        """The KV rows of ``positions`` (an int array) of layer ``layer``, one column a KV head, for a
        sequence whose blocks are ``table`` (fixed slots: ``(slot,)``): the one address rule
        (docs/top.md "Paged KV"). With ``lh = layer * n_kv_heads + h``:

        * fixed slots, the top level's rows: ``kv_row(slot) + lh * max_context + p``;
        * pages of B (``Config.kv_block``): ``kv_base + lh * plane_rows + table[p >> log2 B] * B +
          (p & (B - 1))``: plane-major, so within a (layer, head) plane the row is the block number
          and the offset side by side (no multiplier in the address path)."""
        heads = self.model.config.n_kv_heads
        p = np.asarray(positions, np.int64)
        lh = (layer * heads + np.arange(heads))[None, :]
        if not self.config.kv_block:
            return self.kv_row(table[0]) + lh * self.config.max_context + p[:, None]
        b = self.config.kv_block
        blocks = np.asarray(table, np.int64)[p // b]
        return self.kv_base + lh * self.plane_rows + (blocks * b + p % b)[:, None]

    @property
    def max_rows(self) -> int:
        """The most token rows one pass may carry: ``Config.max_m``, and no more than the scratchpad
        and the logits buffer hold (:meth:`rows_limits` says which binds)."""
        return min(self.rows_limits().values())

    def rows_limits(self) -> dict[str, int]:
        """What bounds a pass's rows: the design's ``max_m`` and the rows the scratchpad and the
        logits buffer hold at this program's strides."""
        c = self.config
        return {"max_m": c.max_m,
                "scratch_bytes": c.scratch_bytes // max(self.row_stride, 1),
                "logits_words": c.logits_words // max(self.logits_stride, 1)}

    @property
    def program(self) -> list:
        """The integer-program ops the instructions run, in order (what the cycle model prices)."""
        return [op for group in self.ops if group is not None for op in group.program_ops]

    @property
    def program_words(self) -> list[int]:
        return [encode(ins) for ins in self.instructions]

    def listing(self) -> str:
        """The program as text: index, disassembly, and the integer-program op it came from."""
        lines = []
        for i, (ins, op) in enumerate(zip(self.instructions, self.ops, strict=True)):
            note = f"  ; {op.output}" if op is not None else ""
            lines.append(f"{i:4d}  {disassemble(ins)}{note}")
        return "\n".join(lines)


def _round_up(n: int, unit: int) -> int:
    return ceil_div(n, unit) * unit


class _Words:
    """A growing word memory with aligned allocation; addresses count from ``base`` (the words of the
    memory below it, another model's: a multiple of every alignment asked for)."""

    def __init__(self, base: int = 0):
        self.chunks: list[np.ndarray] = []
        self.size = 0
        self.base = base

    def add(self, values, *, align: int = 1) -> int:
        pad = -self.size % align
        if pad:
            self.chunks.append(np.zeros(pad, np.int64))
            self.size += pad
        base = self.size
        arr = np.asarray(values, dtype=np.int64).reshape(-1)
        self.chunks.append(arr)
        self.size += arr.size
        return self.base + base

    def add_shared(self, key, make_values, **kw) -> int:
        """Add once per ``key``: later calls return the first copy's address."""
        shared = self.__dict__.setdefault("_shared", {})
        if key not in shared:
            shared[key] = self.add(make_values(), **kw)
        return shared[key]

    def array(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.int64)


def compile_model(model, config, *, beside: Compiled | None = None, kv_slots: int = 1) -> Compiled:
    """Compile ``model`` (an IntModel) for ``config`` (an accelerator Config); with ``beside`` (a model
    compiled alone for the same config), to run resident beside it (see the module's docstring), its
    KV region ``kv_slots`` slots at the top of the KV memory. CompileError (one line, naming the memory
    and the sizes) when the two do not fit together."""
    if not isinstance(model, IntModel):
        raise InputTypeError(f"model must be an IntModel, not {type(model).__name__}")
    R, C = config.array_rows, config.array_cols
    align = max(R, C)
    mc = model.config
    bases = _beside_bases(beside, model, config, kv_slots) if beside is not None else {}
    # in bytes; every allocation starts on a word of C bytes
    weights = _Words(bases.get("weight_words", 0) * C)
    params = _Words(bases.get("param_words", 0))
    act_base = bases.get("act_tables", 0)
    act_tables: dict[tuple[int, ...], int] = {}   # table contents -> index (identical tables shared)
    addresses: dict[str, int] = {"token": 0, "position": 0}
    scratch_top = 0
    logits_top = 0
    instructions, ops = [], []

    def scratch(name: str, width: int) -> int:
        nonlocal scratch_top
        scratch_top += -scratch_top % align
        addresses[name] = scratch_top
        scratch_top += width
        return addresses[name]

    def src(name: str) -> int:
        if name not in addresses:
            raise CompileError(f"value {name!r} is used before it is computed")
        return addresses[name]

    logits_value = token_value = ""
    for op in instruction_groups(model.program, config):
        p = op.params
        kind = op.op
        if kind == "embed":
            table = p.table
            row_words = ceil_div(table.shape[1], C)
            rows = np.zeros((table.shape[0], row_words * C), np.int64)
            rows[:, :table.shape[1]] = table
            base = weights.add(rows, align=C) // C
            flags = EmbedFlags.BY_POSITION if p.index == "position" else EmbedFlags(0)
            ins = make(Opcode.EMBED, dst=scratch(op.output, op.width), length=table.shape[1], weight=base,
                       count=row_words, flags=flags.value)
        elif kind in ("rmsnorm", "layernorm"):
            if kind == "layernorm" and not config.layernorm:
                raise CompileError(f"the model's {op.output!r} is a LayerNorm and the design is built without "
                                   f"LayerNorm (layernorm = false): use a design with layernorm = true")
            opcode = Opcode.RMSNORM if kind == "rmsnorm" else Opcode.LAYERNORM
            base = params.add(PARAM_RECORDS[opcode].pack(align, vars(p)), align=align)
            ins = make(opcode, src0=src(op.inputs[0]), dst=scratch(op.output, op.width), length=op.width, param=base)
        elif kind == "gemm":
            k, n = p.weight.shape
            # a GEMM's tiles start on a bank row: its G-row beats are one address of the G weight banks
            wbase = weights.add(weight_tiles(p.weight, R, C), align=C * config.weight_rows_per_cycle) // C
            flags = GemmFlags(0)
            if p.bias is not None:
                flags |= GemmFlags.BIAS
            residual = 0
            values = {"bias": p.bias, "mult_shift": pack_mult_shift(p.mult, p.shift) if p.requantized else None}
            if op.residual is not None:
                # The add fused into the output stage: a = the residual at src1, b = the GEMM's output (the
                # add is symmetric in (a, a_mult) and (b, b_mult), so the multipliers follow the operands).
                flags |= GemmFlags.REQUANT | GemmFlags.RESIDUAL
                add = op.residual
                other = 1 if add.inputs[0] == op.ops[0].output else 0
                residual = src(add.inputs[other])
                a = vars(add.params)
                values.update(a, a_mult=a["a_mult"] if other == 0 else a["b_mult"],
                              b_mult=a["b_mult"] if other == 0 else a["a_mult"])
                dst = scratch(add.output, add.width)      # the GEMM's own output is never written
            elif p.requantized:
                flags |= GemmFlags.REQUANT
                dst = scratch(op.output, n)
                for member, offset in zip(op.ops, op.offsets, strict=True):
                    addresses[member.output] = dst + offset
            else:
                logits_top += -logits_top % align
                dst = addresses[op.output] = logits_top
                logits_top += n
                logits_value = op.output
            rec = param_record(Opcode.GEMM, flags.value)
            pbase = params.add(rec.pack(align, values, flags.value), align=align) if flags else 0
            ins = make(Opcode.GEMM, src0=src(op.inputs[0]), src1=residual, dst=dst, length=k, count=n, param=pbase,
                       weight=wbase, flags=flags.value)
        elif kind == "rope":
            def tables(p=p):
                cos, sin = rope_tables(p.max_context, p.head_dim, p.base)
                return np.concatenate([cos.reshape(-1), sin.reshape(-1)])

            table = params.add_shared(("rope", p.max_context, p.head_dim, p.base), tables, align=align)
            values = {"mult": p.mult, "shift": p.shift, "table": table}
            flags = RopeFlags(0)
            if op.merged:       # q's and k's heads side by side: k's (the last heads_b) at k's scale
                pk = op.ops[1].params
                flags = RopeFlags.SPLIT
                values.update(mult_b=pk.mult, shift_b=pk.shift, heads_b=pk.heads)
            base = params.add(PARAM_RECORDS[Opcode.ROPE].pack(align, values, flags.value), align=align)
            dst = scratch(op.output, op.width)
            for member, offset in zip(op.ops, op.offsets, strict=True):
                addresses[member.output] = dst + offset
            ins = make(Opcode.ROPE, src0=src(op.inputs[0]), dst=dst, length=op.width,
                       count=sum(member.params.heads for member in op.ops), param=base, flags=flags.value)
        elif kind == "kv_write":
            ins = make(Opcode.KV_WRITE, src0=src(op.inputs[0]), src1=src(op.inputs[1]),
                       length=mc.n_kv_heads * mc.head_dim, count=p.layer)
            addresses[op.output] = 0
        elif kind == "attention":
            a = p.attn
            base = params.add(PARAM_RECORDS[Opcode.ATTENTION].pack(align, vars(a)), align=align)
            ins = make(Opcode.ATTENTION, src0=src(op.inputs[0]), dst=scratch(op.output, op.width),
                       length=op.width, count=p.layer, param=base)
        elif kind == "residual_add":
            base = params.add(PARAM_RECORDS[Opcode.RESIDUAL_ADD].pack(align, vars(p)), align=align)
            ins = make(Opcode.RESIDUAL_ADD, src0=src(op.inputs[0]), src1=src(op.inputs[1]),
                       dst=scratch(op.output, op.width), length=op.width, param=base)
        elif kind == "activation" and op.merged:
            # SwiGLU in one instruction: the multiply reads the activation's input through its table.
            act, mul = op.ops
            index = act_tables.setdefault(tuple(int(v) for v in np.asarray(act.params.table).reshape(-1)),
                                          act_base + len(act_tables))
            other = mul.inputs[1] if mul.inputs[0] == act.output else mul.inputs[0]
            base = params.add(PARAM_RECORDS[Opcode.MULTIPLY].pack(align, vars(mul.params)), align=align)
            ins = make(Opcode.MULTIPLY, src0=src(act.inputs[0]), src1=src(other), dst=scratch(mul.output, op.width),
                       length=op.width, count=index, param=base, flags=MultiplyFlags.ACTIVATION.value)
        elif kind == "activation":
            index = act_tables.setdefault(tuple(int(v) for v in np.asarray(p.table).reshape(-1)),
                                          act_base + len(act_tables))
            ins = make(Opcode.ACTIVATION, src0=src(op.inputs[0]), dst=scratch(op.output, op.width),
                       length=op.width, count=index)
        elif kind == "multiply":
            base = params.add(PARAM_RECORDS[Opcode.MULTIPLY].pack(align, vars(p)), align=align)
            ins = make(Opcode.MULTIPLY, src0=src(op.inputs[0]), src1=src(op.inputs[1]),
                       dst=scratch(op.output, op.width), length=op.width, param=base)
        elif kind == "argmax":
            if op.inputs[0] != logits_value:
                raise CompileError(f"argmax must read the int32 logits, not {op.inputs[0]!r}")
            ins = make(Opcode.ARGMAX, src0=src(op.inputs[0]), length=mc.vocab_size)
            addresses[op.output] = 0
            token_value = op.output
        else:  # pragma: no cover - Op checks its name
            raise CompileError(f"the hardware has no unit for op {kind!r}")
        instructions.append(ins)
        ops.append(op)
    instructions.append(make(Opcode.HALT))
    ops.append(None)

    compiled = Compiled(config=config, model=model, instructions=instructions, ops=ops,
                        weights=weights.array(), params=params.array(),
                        act_tables=np.array(list(act_tables), np.int64).reshape(len(act_tables), ACT_TABLE_SIZE),
                        scratch_size=scratch_top,
                        logits_size=logits_top,
                        kv_shape=(mc.n_layers, model.max_context, mc.n_kv_heads, mc.head_dim),
                        addresses=addresses, logits_value=logits_value, token_value=token_value)
    if beside is not None:
        if config.kv_block:
            raise CompileError(f"the draft model cannot run beside the target with paged KV (kv_block "
                               f"{config.kv_block}): two models resident use fixed slots (kv_block 0)")
        total = config.kv_bytes // (2 * mc.head_dim)
        compiled.beside, compiled.bases = beside, bases
        compiled.kv_base = total - kv_slots * compiled.slot_rows     # below 0: _check_fit refuses
        _check_rope(compiled)
    _check_fit(compiled, config)
    return compiled


def _beside_bases(first: Compiled, model, config, kv_slots: int) -> dict[str, int]:
    """What of each memory the model compiled beside ``first`` finds taken (memory_needs keys; the
    weights rounded up to a bank row, the parameters to a parameter word); CompileError for a pair
    that cannot share one top level."""
    if not isinstance(first, Compiled):
        raise InputTypeError(f"beside must be a Compiled model, not {type(first).__name__}")
    if first.beside is not None:
        raise CompileError("the draft model cannot run beside the target: the target is itself compiled beside "
                           "another model (two models at most)")
    if first.config != config:
        raise CompileError("the draft model cannot run beside the target: they are compiled for different "
                           "configurations")
    if isinstance(kv_slots, bool) or not isinstance(kv_slots, int) or kv_slots < 1:
        raise InputError(f"kv_slots must be a positive integer, not {kv_slots!r}")
    hd, first_hd = model.config.head_dim, first.model.config.head_dim
    if hd != first_hd:
        raise CompileError(f"the draft model cannot run beside the target: its head_dim is {hd}, the target's "
                           f"{first_hd} (one KV row and the attention unit's lanes serve both)")
    C, G = config.array_cols, config.weight_rows_per_cycle
    return {"program_words": len(first.instructions),
            "weight_words": _round_up(ceil_div(first.weights.size, C), G),
            "param_words": _round_up(first.params.size, max(config.array_rows, C)),
            "act_tables": len(first.act_tables),
            "kv_bytes": first.slot_rows * 2 * hd}


def _rope_tables(compiled: Compiled) -> set:
    return {(op.params.max_context, op.params.head_dim, op.params.base)
            for op in compiled.ops if op is not None and op.op == "rope"}


def _check_rope(compiled: Compiled) -> None:
    """Both models' RoPE must read the one table of the vector unit (``TopMem.VTABLE``)."""
    mine, theirs = _rope_tables(compiled), _rope_tables(compiled.beside)
    if mine and theirs and mine != theirs:
        raise CompileError(f"the draft model cannot run beside the target: its RoPE table (max_context, head_dim, "
                           f"base) {sorted(mine)} differs from the target's {sorted(theirs)} (the vector unit "
                           f"holds one)")


def rope_params(compiled: Compiled):
    """The params of the first RoPE op of ``compiled`` or of the model it is compiled beside (the one
    table the vector unit holds); None without RoPE."""
    for c in (compiled, compiled.beside):
        ropes = [op.params for op in (c.ops if c is not None else []) if op is not None and op.op == "rope"]
        if ropes:
            return ropes[0]
    return None


def memory_needs(compiled: Compiled) -> dict[str, tuple[int, int]]:
    """Memory -> (needed, available) in the configuration's units; a model compiled beside another
    needs its own part above the other's (:attr:`Compiled.bases`; its KV region: its slots above one of
    the other's)."""
    c = compiled.config
    C = c.array_cols
    b = compiled.bases
    if compiled.beside is not None:
        hd = compiled.model.config.head_dim
        kv = (c.kv_bytes // (2 * hd) - compiled.kv_base) * 2 * hd + b["kv_bytes"]
    else:
        kv = int(np.prod(compiled.kv_shape)) * 2
    needs = {
        "weight_words": (b.get("weight_words", 0) + ceil_div(compiled.weights.size, C), c.weight_words),
        "param_words": (b.get("param_words", 0) + int(compiled.params.size), c.param_words),
        "scratch_bytes": (compiled.scratch_size, c.scratch_bytes),
        "kv_bytes": (kv, c.kv_bytes),
        "logits_words": (compiled.logits_size, c.logits_words),
        "max_context": (compiled.kv_shape[1], c.max_context),
        "program_words": (b.get("program_words", 0) + len(compiled.instructions), c.program_words),
        "act_tables": (b.get("act_tables", 0) + len(compiled.act_tables), c.act_tables),
    }
    return needs


MEMORIES = {
    "weight_words": "weight memory (words of array_cols bytes)",
    "param_words": "parameter memory (32-bit words)",
    "scratch_bytes": "activation scratchpad (bytes)",
    "kv_bytes": "KV cache (bytes)",
    "logits_words": "logits buffer (32-bit words)",
    "max_context": "context (positions)",
    "program_words": "program memory (instructions)",
    "act_tables": "activation table memory (tables of 256 int8)",
}


def _check_fit(compiled: Compiled, config) -> None:
    for name, (need, have) in memory_needs(compiled).items():
        below = compiled.bases.get(name)
        if need > have and below is not None:
            raise CompileError(f"the draft model cannot run beside the target: its {MEMORIES[name]} needs "
                               f"{need - below:,} beside the target's {below:,} ({need:,} in all), the "
                               f"configuration's {name} is {have:,} ({need - have:,} short)")
        if need > have:
            raise CompileError(f"the model does not fit: its {MEMORIES[name]} needs {need:,}, the configuration's "
                               f"{name} is {have:,} ({need - have:,} short)")
