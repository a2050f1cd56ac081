"""The one configuration object: every size of a Lockstep accelerator and every size derived from it.

Variants come from :func:`dataclasses.replace`, which re-runs every check. The top level takes the
whole configuration; leaf blocks take only the numbers they need.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from golden.errors import InputError, InputTypeError
from golden.numerics import ACC_BITS, max_k_without_overflow

__all__ = ["ACT_TABLE_SIZE", "BOOL_KEYS", "CHIP_EXTRA_KEYS", "DEFAULT", "DESIGN_DIR", "MAX_ACT_TABLES", "MAX_ARRAY",
           "MAX_BUILD_ARRAY", "PRESETS", "STEP_CYCLE_BITS", "UNIT_CYCLE_BITS", "Config", "check_positive_int",
           "checked_constructor", "chip_config", "design_names", "read_design_file", "rtl_refusal",
           "weight_rows_problem"]

#: The largest array the cycle model describes (a TPU v1 is 256 x 256).
MAX_ARRAY = 1024
#: The largest array the RTL is built for: beyond it simulation and synthesis are impractical here.
MAX_BUILD_ARRAY = 64
#: Entries of one activation table (one per int8 input, entry x + 128).
ACT_TABLE_SIZE = 256
#: Width of a whole step's cycle counter (GEMM unit, decode top level, host link): 2**48 cycles are
#: about 33 days at 100 MHz, so a counter never wraps within a run.
STEP_CYCLE_BITS = 48
#: Width of one operation's cycle counter in the vector and attention units (and of a trace entry).
UNIT_CYCLE_BITS = 32
#: The most activation tables the vector unit's table memory may hold (64 K int8 entries).
MAX_ACT_TABLES = 256
#: The :class:`Config` fields that are switches (true or false), not sizes.
BOOL_KEYS = ("layernorm", "fused_swiglu", "fused_rope", "fused_residual", "gemm_product_register",
             "vector_scalar_register", "vector_product_register", "fabric_products", "attention_timing_registers",
             "residual_timing_registers", "embed_register", "program_register", "attention_rescale_register")
#: The most query heads the attention unit runs in parallel (its most heads, hdl.attention.MAX_HEADS_LIMIT).
MAX_HEADS_PER_STEP = 64


def checked_constructor(init):
    """Decorate a component's ``__init__`` whose parameter checks may raise.

    Amaranth warns when a component is created but never elaborated; a component whose
    constructor refused its parameters was never a design, so it is marked silent before the
    error propagates (otherwise the warning surfaces later, at garbage collection).
    """
    import functools

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        try:
            init(self, *args, **kwargs)
        except Exception:
            self._MustUse__silence = True
            raise

    return wrapper


def check_positive_int(name: str, value, *, minimum: int = 1) -> int:
    """Return ``value`` if it is an int >= ``minimum``; TypeError / ValueError naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputTypeError(f"{name} must be an integer, not {value!r}")
    if value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise InputError(f"{name} must be {kind}, not {value}")
    return value


def kv_block_problem(block, max_context: int) -> str | None:
    """What is wrong with a KV block of ``block`` positions for a context of ``max_context``, or None:
    0 (fixed slots) or a power of two up to ``max_context`` (the one rule of :class:`Config` and the
    capacity study's allocator, ``sim.serve.kv_layout``)."""
    if isinstance(block, bool) or not isinstance(block, int) or block < 0 or \
            (block and (block & (block - 1) or block > max_context)):
        return f"kv_block must be 0 (fixed slots) or a power of two up to max_context ({max_context}), not {block!r}"
    return None


def weight_rows_problem(array_rows: int, rows_per_cycle) -> str | None:
    """What is wrong with ``weight_rows_per_cycle`` = ``rows_per_cycle`` on an array of
    ``array_rows`` rows, or None: the one rule of :class:`Config` and the performance model's
    hardware (``sim.perf.model.Hardware``), which prefixes the design's name."""
    g = rows_per_cycle
    if isinstance(g, bool) or not isinstance(g, int) or g < 1 or g > array_rows or array_rows % g:
        return f"weight_rows_per_cycle must divide array_rows ({array_rows}), not {g!r}"
    return None


@dataclass(frozen=True, kw_only=True)
class Config:
    """Sizes of one accelerator design point.

    Attributes
    ----------
    array_rows, array_cols:
        R x C processing elements of the weight-stationary systolic array. R is the reduction (K)
        dimension of one weight tile, C the output (N) dimension.
    weight_words:
        Depth of the weight memory, in words of ``array_cols`` int8 values (one tile row each).
    weight_rows_per_cycle:
        The machine balance: rows of a weight tile the weight path delivers a cycle, G (1, today's
        one-word port, up to ``array_rows``: a whole R x C tile a cycle). The weight memory is G
        banks of ``weight_words / G`` words each (word ``w`` in bank ``w % G`` at ``w // G``), read
        at one address together, so the RTL really reads G * C bytes a cycle; a tile loads in R / G
        cycles. G must divide ``array_rows`` and ``weight_words``.
    act_words:
        Depth of the activation memory, in words of ``array_rows`` int8 values.
    result_words:
        Depth of the result memory, in words of ``array_cols`` int32 values.
    max_m:
        Most activation rows one GEMM may stream per tile (the accumulator depth).
    clock_hz:
        The clock the design is meant to run at; turns cycles into seconds and tokens/s.
    param_words, scratch_bytes, kv_bytes, logits_words, max_context:
        The decode accelerator's other memories: per-op constants (32-bit words), the int8
        activation scratchpad, the int8 KV cache (keys and values), the int32 logits buffer, and
        the longest context the KV cache and the attention unit serve.
    vector_lanes:
        Elements the vector unit processes per cycle.
    program_words:
        Depth of the decode top level's program memory, in instructions.
    act_tables:
        Activation tables (:data:`ACT_TABLE_SIZE` int8 entries each: SiLU or GELU at one layer's
        scales) the vector unit's table memory holds, at most :data:`MAX_ACT_TABLES`. The host
        writes them once per run; an ACTIVATION instruction names one by its index. The default
        (16) serves a model of up to 16 layers with one table per layer (the demo model uses 4).
    attention_finish_lanes:
        Lanes of the attention unit's finish stages (normalisation and output requantization, once
        per head): 0 (the default) for all ``head_dim`` lanes at once; F > 0 passes a head's row F
        lanes a cycle, ceil(head_dim / F) - 1 more cycles per head, for 4 * F multipliers instead of
        4 * head_dim (the ``ulx3s`` preset uses 1 to fit the ECP5's 156 multipliers).
    layernorm:
        The vector unit's LayerNorm (true, the default): its statistics chain's mean, centred sums
        and their products, and each lane's centring subtractor and bias add. False builds RMSNorm
        alone, for a design whose models all use it (the Llama family, the demo model: the
        ``ulx3s`` preset); a model with a LayerNorm (GPT-2) is refused before it runs
        (:func:`sim.runtime.prepare`). No cycle changes for RMSNorm.
    fused_swiglu:
        SwiGLU's gate in one instruction (false, the default: two): the compiler gives an
        ``activation`` whose only reader is the ``multiply`` after it one MULTIPLY instruction with
        the ACTIVATION flag, which the vector unit runs as one SILU_MUL command (the table lookup
        and the multiply in one pass over the gate and up beats, bit-exact with the two).
    fused_rope:
        RoPE of all heads in one vector command (false, the default: one command per head, each
        paying the command cycle and the pipeline). With it the compiler also gives q's and k's
        RoPE one instruction when q and k lie side by side in a merged GEMM's output (the last
        heads at k's scale: the record's second multiplier).
    fused_residual:
        The residual add fused into the GEMM's output stage (false, the default: the decode top level
        runs each residual add as a vector instruction). When true, a GEMM whose int8 output feeds one
        residual add and nothing else is compiled with the add as one instruction
        (:func:`sim.machine.schedule.instruction_groups`): its output stage reads the residual's word
        from the scratchpad's second read port, which a GEMM leaves idle, and writes
        ``residual_add(x, requant(sum))``; one cycle more than the plain GEMM instead of the add's
        vector instruction (3 multipliers a lane more in the output stage).
    attention_heads_per_step:
        Query heads of one KV group the attention unit runs in parallel, P (default 1): P copies of
        the per-position datapath (dot product, logit, running max, rescale-and-accumulate) share
        each K and V row read, so a call takes ``n_kv_heads * ceil(group / P) * kv_len`` steps
        instead of ``n_heads * kv_len`` (a group smaller than P, or not a multiple of it, leaves
        lanes idle); the finish stages stay shared. At most :data:`MAX_HEADS_PER_STEP` (64); the
        decode top level builds min(P, max_heads) lanes. The ``demo`` design uses 2.
    gemm_product_register:
        Two registers in the GEMM's output stage (false, the default): between the requantization's
        multiply and its rounding shift and saturation, and between those (the fused residual add
        included) and the scratchpad's or the logits buffer's write port: every word is written two
        cycles later, two cycles more per GEMM instruction
        (:data:`sim.machine.cycles.GEMM_PRODUCT_REGISTER`). A timing cut for FPGA clocks; no bit changes.
    vector_scalar_register:
        The vector instruction's scalars (multipliers, shifts, epsilon: the parameter words read
        while the instruction is decoded) latched a cycle before its command instead of used from
        the parameter memory's read data in the command's cycle (false, the default): one cycle more
        per vector instruction (:data:`sim.machine.cycles.VECTOR_SCALAR_REGISTER`). A timing cut for
        FPGA clocks; no bit changes.
    vector_product_register:
        Three registers in the vector unit (false, the default): before stage A on the memories'
        read data (the row buffer, the RoPE table, the activation tables); in stage A between each
        lane's products (the norms' ``d * r``, RoPE's, ADD's and MUL's) and their sums, the norms'
        rounding shift and the opcode's choice; in the output stage between the requantization's
        multiply and its rounding shift and saturation; and LayerNorm's statistics chain two cycles
        longer (its mean's and centred sums' products registered). Every beat crosses three more
        pipeline stages and a norm's sums are final a cycle later: three cycles more per vector
        instruction, four per RMSNorm, six per LayerNorm
        (:data:`sim.machine.cycles.VECTOR_PRODUCT_REGISTER`, :data:`sim.machine.cycles.VECTOR_NORM_SETTLE_PR`,
        :data:`sim.machine.cycles.VECTOR_LAYER_STATS`).
        A timing cut for FPGA clocks; no bit changes.
    attention_timing_registers:
        Registers in the attention unit's deepest single-cycle paths, each a pipeline stage of its
        own (false, the default): the dot products' terms before their sum, the logits' products
        before their shift and clamp, the exp
        table's read data before the rescale-and-accumulate stage multiplies by it (a block RAM's
        read data comes late in the cycle), the Newton step's error before its second multiply, the
        normalisation's and the output requantization's products before their shifts. Three position
        stages and three finish stages more: every attention call takes six cycles more
        (:data:`sim.machine.cycles.ATTENTION_TIMING_REGISTERS`). A timing cut for FPGA clocks; no
        bit changes.
    attention_rescale_register:
        The attention unit's rescale-and-accumulate stage in two (false, the default): S4 makes
        each head's rescale products (the denominator's and every weighted sum's, by the exp
        table's value) and registers them, S4r sums them into the head's rotating state. The
        recurrence ``acc -> acc * e -> acc`` through a multiplier then has a register on its way
        (it was the routed ulx3s design's slowest path). Every attention call takes one cycle more
        (:data:`sim.machine.cycles.ATTENTION_RESCALE_REGISTER`), and a call whose group is one
        step a position (``ceil(group / heads_per_step) = 1``, e.g. every head its own KV head)
        a cycle more per step after the first (the step waits a cycle for its head's state). A
        timing cut for FPGA clocks; no bit changes.
    residual_timing_registers:
        Two registers in the fused residual add (with ``fused_residual``; false, the default): the
        sum of its two scaled terms before the requantization, and the requantization's product
        before its rounding shift and saturation. Every GEMM with its residual add fused takes two
        cycles more (:data:`sim.machine.cycles.RESIDUAL_TIMING_REGISTERS`); without
        ``fused_residual`` it changes nothing. A timing cut for FPGA clocks (the residual's word
        comes from a block RAM late in the cycle); no bit changes.
    embed_register:
        EMBED's first row address (``weight + row * count``, a product of the program memory's
        read data) made over two cycles, the product registered in DECODE and the table's address
        added to it in a cycle of its own that reads the first word, instead of driving the
        weight memory's read address in DECODE, and the weight words registered before the
        scratchpad's write port (false, the default): two cycles more per EMBED instruction
        (:data:`sim.machine.cycles.EMBED_REGISTER`). A timing cut for FPGA clocks; no bit changes.
    program_register:
        The instruction DECODE decodes held in a register, loaded from the program memory's read
        data in the last cycle of the instruction before it (the word read a cycle earlier: the
        program memory is read at ``pc + 1`` throughout a step), instead of DECODE decoding the
        block RAM's read data itself (false, the default). A step (a pass) starts with one cycle of
        its own, FETCH, that registers its first instruction: one cycle more per pass, counted in
        the first instruction's cycles (:data:`sim.machine.cycles.PROGRAM_FETCH`). A timing cut for
        FPGA clocks (an ECP5 block RAM's read data arrives ~6 ns into the cycle); no bit changes.
    fabric_products:
        The int8 products built from adders in the logic fabric (:func:`hdl.arith.fabric_product`)
        instead of a synthesis tool's hard multipliers (false, the default): the array's (one per
        processing element), the vector unit's two a lane (shared by its opcodes: MUL and
        SILU_MUL's int8 x int8, the norm's ``x * x``, ADD's two scaled terms, RoPE's ``x * cos``
        and ``x * sin``) and the fused residual add's two scaled terms. The same bits and cycles;
        an FPGA whose multipliers are too few for the design (the ``ulx3s`` preset) trades them
        for logic.
    kv_block:
        The KV memory's layout: 0 (the default) for fixed slots, a sequence's KV in one slot of
        ``max_context`` positions; B > 0 (a power of two up to ``max_context``) for pages of B
        positions, a sequence's KV in the blocks its block table lists (docs/top.md "Paged KV",
        :mod:`sim.machine.passes`). The instruction-level model and the cycle model run it; the
        decode top level does not build it yet (it refuses B > 0 in one line).
    """

    array_rows: int = 4
    array_cols: int = 4
    weight_words: int = 1024
    weight_rows_per_cycle: int = 1
    act_words: int = 256
    result_words: int = 256
    max_m: int = 16
    clock_hz: int = 100_000_000
    param_words: int = 65536
    scratch_bytes: int = 16384
    kv_bytes: int = 262144
    logits_words: int = 4096
    max_context: int = 128
    vector_lanes: int = 4
    program_words: int = 1024
    act_tables: int = 16
    attention_finish_lanes: int = 0
    layernorm: bool = True
    fused_swiglu: bool = False
    fused_rope: bool = False
    fused_residual: bool = False
    attention_heads_per_step: int = 1
    gemm_product_register: bool = False
    vector_scalar_register: bool = False
    vector_product_register: bool = False
    fabric_products: bool = False
    attention_timing_registers: bool = False
    residual_timing_registers: bool = False
    embed_register: bool = False
    program_register: bool = False
    attention_rescale_register: bool = False
    kv_block: int = 0

    def __post_init__(self):
        for f in fields(self):
            if f.name in BOOL_KEYS:
                if not isinstance(getattr(self, f.name), bool):
                    raise InputTypeError(f"{f.name} must be true or false, not {getattr(self, f.name)!r}")
                continue
            check_positive_int(f.name, getattr(self, f.name),
                               minimum=0 if f.name in ("attention_finish_lanes", "kv_block") else 1)
        if self.array_rows > MAX_ARRAY or self.array_cols > MAX_ARRAY:
            raise InputError(f"array of {self.array_rows}x{self.array_cols} is too large: "
                             f"array_rows and array_cols must be at most {MAX_ARRAY}")
        if self.max_m > self.act_words:
            raise InputError(f"max_m must not exceed act_words ({self.act_words}), not {self.max_m}")
        if self.max_m > self.result_words:
            raise InputError(f"max_m must not exceed result_words ({self.result_words}), not {self.max_m}")
        if self.act_tables > MAX_ACT_TABLES:
            raise InputError(f"act_tables must be at most {MAX_ACT_TABLES}, not {self.act_tables}")
        problem = kv_block_problem(self.kv_block, self.max_context)
        if problem:
            raise InputError(problem)
        if self.attention_heads_per_step > MAX_HEADS_PER_STEP:
            raise InputError(f"attention_heads_per_step must be at most {MAX_HEADS_PER_STEP}, "
                             f"not {self.attention_heads_per_step}")
        if self.weight_words < self.array_rows:
            raise InputError(f"weight_words must hold at least one tile of {self.array_rows} rows, "
                             f"not {self.weight_words}")
        problem = weight_rows_problem(self.array_rows, self.weight_rows_per_cycle)
        if problem:
            raise InputError(problem)
        g = self.weight_rows_per_cycle
        if self.weight_words % g:
            raise InputError(f"weight_words must be a multiple of weight_rows_per_cycle ({g}): the weight "
                             f"memory is {g} banks of equal depth, not {self.weight_words}")

    def check_buildable(self) -> None:
        """Raise ValueError if the RTL cannot be built for this configuration (the cycle model can
        still describe it)."""
        for name, value in (("rows", self.array_rows), ("cols", self.array_cols)):
            if value > MAX_BUILD_ARRAY:
                raise InputError(f"array {name} must be at most {MAX_BUILD_ARRAY} to build, not {value}")

    # --- derived sizes -------------------------------------------------------------------------
    @property
    def weight_bank_words(self) -> int:
        """Depth of each of the ``weight_rows_per_cycle`` weight banks, in words of ``array_cols`` int8."""
        return self.weight_words // self.weight_rows_per_cycle

    @property
    def weight_port_bytes(self) -> int:
        """Bytes the weight path delivers a cycle: ``weight_rows_per_cycle * array_cols``."""
        return self.weight_rows_per_cycle * self.array_cols

    @property
    def acc_bits(self) -> int:
        """Width of every accumulator and partial sum."""
        return ACC_BITS

    @property
    def max_k(self) -> int:
        """Longest reduction a GEMM may have: bounded by the activation memory and by int32 overflow."""
        return min(self.act_words * self.array_rows, max_k_without_overflow())

    @property
    def array_latency(self) -> int:
        """Steps from an activation row entering the array to its sums leaving it: R + C.

        R + 1 steps of input skew and PE rows for the first column, C - 1 more for the column
        skew (the de-skew registers line the last column up with the first).
        """
        return self.array_rows + self.array_cols

    @property
    def host_data_bits(self) -> int:
        """Width of the host port's write data: the wider of a weight word and an activation word."""
        return 8 * max(self.array_rows, self.array_cols)

    @property
    def host_addr_bits(self) -> int:
        return max(1, (max(self.weight_words, self.act_words, self.result_words) - 1).bit_length())

    @property
    def act_table_entries(self) -> int:
        """Depth of the vector unit's activation table memory: act_tables x ACT_TABLE_SIZE int8."""
        return self.act_tables * ACT_TABLE_SIZE

    @property
    def cycle_counter_bits(self) -> int:
        """Width of a whole step's cycle counter (the GEMM unit's, the top level's, the link's)."""
        return STEP_CYCLE_BITS

    def describe(self) -> str:
        rows = f", {self.weight_rows_per_cycle} weight rows a cycle" if self.weight_rows_per_cycle > 1 else ""
        return (f"{self.array_rows}x{self.array_cols} array{rows}, {self.weight_words:,} weight words, "
                f"{self.act_words:,} activation words, {self.result_words:,} result words, "
                f"max_m {self.max_m}, {self.clock_hz / 1e6:g} MHz")

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, values: dict, *, source: str = "configuration") -> Config:
        """Build a configuration from a mapping, rejecting unknown keys by name."""
        if not isinstance(values, dict):
            raise InputTypeError(f"{source} must be a table of named sizes, not {type(values).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"{source}: unknown parameter {unknown[0]!r} (known: {', '.join(sorted(known))})")
        return cls(**values)


DEFAULT = Config()

#: The design points: one TOML file each (docs/design.md). Its ``[chip]`` table is this configuration
#: (any :class:`Config` field; the rest keep their defaults) plus :data:`CHIP_EXTRA_KEYS`; its other
#: tables (memory levels, system, links) are the performance model's (:mod:`sim.design`).
DESIGN_DIR = Path(__file__).resolve().parent / "designs"

#: ``[chip]`` keys that are not :class:`Config` fields: ``weight_bytes``, the weights' element size
#: (the RTL computes int8: 1; the performance model also takes 2, bf16/fp16), and
#: ``weight_memory_bytes``, the weight memory's capacity, whose depth in words (``weight_words``)
#: follows the array's width.
CHIP_EXTRA_KEYS = ("weight_bytes", "weight_memory_bytes")


def _integral(value):
    """An integral float (``25e6`` from TOML or ``--set``) as an int; anything else unchanged (the
    :class:`Config` checks name it)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def chip_config(chip: dict, *, source: str = "[chip]") -> Config:
    """The RTL configuration a design's ``[chip]`` table describes; InputError naming the key when
    it is not one (an unknown key, a bad value, weights other than int8)."""
    if not isinstance(chip, dict):
        raise InputTypeError(f"{source} must be a table of named sizes, not {type(chip).__name__}")
    values = {k: _integral(v) for k, v in chip.items()}
    weight_bytes = values.pop("weight_bytes", 1)
    if weight_bytes != 1:
        raise InputError(f"{source}: weight_bytes is {weight_bytes!r}: the RTL computes with int8 weights (1)")
    capacity = values.pop("weight_memory_bytes", None)
    if capacity is not None:
        if "weight_words" in values:
            raise InputError(f"{source}: give weight_words or weight_memory_bytes, not both")
        check_positive_int(f"{source} weight_memory_bytes", capacity)
        cols = check_positive_int(f"{source} array_cols", values.get("array_cols", DEFAULT.array_cols))
        banks = values.get("weight_rows_per_cycle", DEFAULT.weight_rows_per_cycle)
        banks = banks if isinstance(banks, int) and banks > 0 else 1   # Config names a bad value
        values["weight_words"] = max(banks, capacity // cols // banks * banks)
    return Config.from_dict(values, source=source)


def read_design_file(path: Path) -> dict:
    """The tables of one design file (TOML); InputError naming the file when it is not valid TOML."""
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: not valid TOML: {exc}") from None


def design_names() -> list[str]:
    """Every shipped design point, by name (the file's stem)."""
    return sorted(p.stem for p in DESIGN_DIR.glob("*.toml"))


def rtl_refusal(chip: dict, *, source: str = "[chip]") -> str | None:
    """Why the RTL cannot be built for a ``[chip]`` table, in words (weights other than int8, an
    array larger than :data:`MAX_BUILD_ARRAY`, or whatever :class:`Config` refuses in it), or None
    when it can. Never raises: a design the RTL cannot build may still be one the performance model
    evaluates."""
    if chip.get("weight_bytes", 1) != 1:
        return f"its weights are {chip['weight_bytes']}-byte and the RTL computes with int8"
    try:
        chip_config(chip, source=source).check_buildable()
    except (InputError, InputTypeError) as exc:
        return str(exc)
    return None


def _rtl_presets() -> dict[str, Config]:
    """The shipped designs the RTL can build, by name, in :func:`design_names` order."""
    out = {}
    for name in design_names():
        chip = read_design_file(DESIGN_DIR / f"{name}.toml").get("chip", {})
        if rtl_refusal(chip, source=f"{name} [chip]") is None:
            out[name] = chip_config(chip, source=f"{name} [chip]")
    return out


#: The shipped design points the RTL can build (``hdl/designs/*.toml``), by name.
PRESETS: dict[str, Config] = _rtl_presets()
