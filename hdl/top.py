"""The decode accelerator's top level: memories, a sequencer, the GEMM path, the vector and
attention units, and a host port.

The host loads the program, the weights, the parameters, the RoPE table and the activation
tables once per run through the host port, then runs one decode step per ``start``: the
sequencer decodes and runs one instruction at a time (:mod:`hdl.isa`; each fetched one ahead, in
no cycle of its own) until ``HALT``,
with the semantics of :class:`sim.machine.isa_sim.IsaMachine` bit for bit, and raises ``done`` with the
argmax token in ``next_token`` and the step's cycles in ``cycles``. docs/top.md describes every
micro-sequence and its cycle count; :func:`sim.machine.cycles.op_cycles` predicts them exactly.

Requires a square array whose size equals the vector lanes: ``V = array_rows = array_cols =
vector_lanes``, a power of two >= 4. Then one scratchpad word (V int8) is one array beat and one
vector beat; a parameter word is V x 32 bits; a logits word V x int32.

Memories (word = what one address holds):

========  ==========================  ===========================================================
memory    word                        depth
========  ==========================  ===========================================================
program   one instruction (136 bits)  ``program_words``
weights   V int8                      ``weight_words``, in G = ``weight_rows_per_cycle`` banks
                                      (:class:`hdl.weights.WeightMemory`)
params    V x 32 bits                 ``ceil(param_words / V)``
scratch   V int8                      ``scratch_bytes / V``
logits    V x int32                   ``ceil(logits_words / V)``
K, V      ``head_dim`` int8 (one row) ``kv_bytes / (2 * head_dim)``; row ``(layer * n_kv_heads
                                      + kv head) * max_context + position``
trace     2 x 32 bits                 ``program_words``: each instruction of the last step's
                                      start cycle in the step (high half) and cycles (low),
                                      at its program address
act       int8 (one table entry)      ``act_tables * 256`` (in the vector unit): entry ``table *
                                      256 + x + 128``
========  ==========================  ===========================================================

Control: ``token``, ``position``, ``n_kv_heads``, ``group`` (query heads per KV head) and
``program_base`` (the program's first instruction: 0, or a second model's program resident beside
the first, docs/top.md "Two models resident") are sampled when ``start`` is high and the top level
is idle. ``start_ok`` (from ``n_kv_heads``, ``group`` and ``rows`` in the same cycle) is high when the
step can run: ``n_kv_heads`` and ``group`` at least 1, ``n_kv_heads * group`` at most ``max_heads``,
``rows`` at most ``max_m``; a start while it is low is ignored (the top level stays idle, ``done``
and ``cycles`` keep their values: zero heads would leave the attention unit waiting forever).
``busy`` is high from the next cycle
until ``done`` rises; ``done`` stays high until the next ``start``. ``cycles`` is the sum of the
cycles of every instruction of the step except ``HALT``; instruction ``i`` took ``trace[i]``
cycles, counted from its decode to its last cycle, both included, and started in cycle
``start[i]`` of the step (the sum of the instructions' cycles before it).

Passes: with ``rows`` = M >= 1 at ``start`` the program runs over rows 0 .. M - 1 of the row table
(``row_we`` writes ``row_token``, ``row_position``, ``row_kv_base`` to row ``row_addr`` while idle;
``row_next_token`` shows row ``row_addr``'s argmax token): GEMM streams the M rows through each weight
tile in one instruction, every other instruction runs once per row, row r's scratchpad addresses
offset by ``r * row_stride``, its logits by ``r * logits_stride`` (elements, sampled with ``start``),
its KV rows by its ``kv_base``. ``rows`` = 0 is one row from the ``token`` and ``position`` ports at
kv_base 0, the single step above. ``next_token`` is the last row's token; ``trace[i]`` and
``cycles`` count all rows (docs/top.md, "Passes").

Paged KV (``Config.kv_block`` = B > 0; docs/top.md "Paged KV"): a block-table memory of ``table_slots``
(``max_m``) tables of ``table_entries`` (``ceil(max_context / B)``) entries of ``block_bits``, written
while idle (``table_we`` writes ``table_block`` to entry ``table_entry`` of table ``table_slot``); a
row's ``kv_base`` is then its table's number, and ``plane_rows`` (sampled with ``start``) the rows of
a (layer, KV head) plane: K/V row ``(layer * n_kv_heads + kv head) * plane_rows + (table[position >>
log2 B] << log2 B | position & (B - 1))`` (``sim.machine.compiler.Compiled.kv_rows``), the table read
combinationally in the cycle that registers the address, so every count above holds unchanged. These
ports and the memory exist only with B > 0.

Host port: ``host`` (a flipped :class:`hdl.host.HostBus`, ``DecodeTop.host_bus``): ``host.we``
writes ``host.wdata`` (low bits) to word ``host.addr`` of memory ``host.mem`` (a :class:`TopMem`:
PROGRAM, WEIGHTS, PARAMS, SCRATCH, VTABLE: the vector unit's RoPE table, or ACT_TABLES: its
activation tables, one int8 entry a word at ``table * 256 + x + 128``); ``host.rdata`` shows word
``host.addr`` of SCRATCH, LOGITS, TRACE or PARAMS one cycle after the address. Meant for idle time
(the reads share the units' read ports, which are the host's only while the sequencer is idle; the
link refuses READ_MEM while busy).
"""

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.attention import HEAD_DIM_MAX, MAX_CONTEXT_LIMIT
from golden.errors import InputError, InputTypeError
from golden.numerics import MULT_BITS, SHIFT_BITS, ceil_div
from golden.vector import NORM_MAX_LEN

from .arith import fabric_product, product, requantize, round_saturate8
from .array import SystolicArray, act_layout, sum_layout, weight_layout
from .attention import MAX_HEADS_LIMIT, AttentionUnit
from .config import UNIT_CYCLE_BITS, Config, check_positive_int, checked_constructor
from .fanout import ring_copies
from .host import HostBus
from .isa import (
    INSTRUCTION_BITS,
    MULT_SHIFT,
    PARAM_RECORDS,
    RESIDUAL_GEMM_RECORD,
    EmbedFlags,
    GemmFlags,
    MultiplyFlags,
    Opcode,
    RopeFlags,
    instruction_layout,
    scalar_index,
)
from .vector import VectorOp, VectorTable, VectorUnit, cmd_layout, in_layout, out_layout
from .weights import WeightMemory

__all__ = ["DecodeTop", "GemmPath", "SequencerState", "TopMem", "VectorPath", "check_top_config"]

#: The most scalars of any parameter record (LayerNorm's five).
_MAX_SCALARS = max(len(r.scalars) for r in PARAM_RECORDS.values())
#: Parameter words the sequencer reads for an instruction's scalar constants: enough for the
#: longest record's scalars at the smallest V (4).
SCALAR_WORDS = ceil_div(_MAX_SCALARS, 4)
#: Config.embed_register: EMBED's leading cycles, no write in either: the row's first word read (its
#: offset registered in DECODE), then that word registered before the scratchpad's write port.
EMBED_LEAD = 2
_RMS, _LN, _GEMM = PARAM_RECORDS[Opcode.RMSNORM], PARAM_RECORDS[Opcode.LAYERNORM], PARAM_RECORDS[Opcode.GEMM]


def _walk(m, rows, r, offsets, k, kt, n, k_steps=()):
    """Step a GEMM's (output tile ``n``, reduction tile ``k`` of ``kt``, row ``r`` of ``rows``) walk, rows
    innermost (the order its activations enter and its sums leave); each ``(offset, step)`` of ``offsets``
    follows the row (``r * step``), and the statements ``k_steps`` run where ``k`` steps. Returns "this is
    an output tile's last (row, reduction tile)"."""
    with m.If(r != rows - 1):
        m.d.sync += [r.eq(r + 1), *(o.eq(o + step) for o, step in offsets)]
    with m.Else():
        m.d.sync += [r.eq(0), *(o.eq(0) for o, _ in offsets), *k_steps]
        with m.If(k != kt - 1):
            m.d.sync += k.eq(k + 1)
        with m.Else():
            m.d.sync += [k.eq(0), n.eq(n + 1)]
    return (r == rows - 1) & (k == kt - 1)


def _first_tile_copies(m, count, start, walk_end, k, final):
    """``count`` registers equal to "the first reduction tile" (``k == 0``) at every cycle, a copy a
    lane (:mod:`hdl.fanout`: the flag selects every bit of each lane's running sum). Each takes the
    value ``k == 0`` will have whenever ``k`` changes: ``start`` (DECODE) clears ``k``; ``walk_end``
    (:func:`_walk`'s last row) steps it, winning over ``start`` as it does for ``k``. ``final`` is
    ``k == kt - 1`` (a register: the subtraction and the comparison are not on the copies' path)."""
    return ring_copies(m, count, start | walk_end,
                       Mux(walk_end, Mux(~final, (k + 1)[:len(k)] == 0, 1), 1), shape=1, name="first", init=1)


def _planes_before(raw, n_kv):
    """The KV planes before an instruction's layer, ``count * n_kv`` (KV_WRITE's and ATTENTION's
    ``count`` is the layer), from adders: ``n_kv`` is a few bits, and a hard multiplier on this
    path from the program memory's read data to the KV address sits wherever one is free."""
    return fabric_product(raw.count, n_kv)


def _plus(base, offset):
    """``base + offset``, or ``base`` itself for a zero offset (no adder for the first record part)."""
    return base if isinstance(offset, int) and offset == 0 else base + offset


#: The GEMM path's write ports (the scratchpad's, the logits buffer's) and its ``fin``.
_GEMM_WRITES = ("s_we", "s_addr", "s_data", "l_we", "l_addr", "l_data", "fin")


class TopMem(enum.Enum, shape=unsigned(3)):
    """Which memory the host port addresses."""
    PROGRAM = 0
    WEIGHTS = 1
    PARAMS = 2
    SCRATCH = 3
    LOGITS = 4
    VTABLE = 5
    TRACE = 6
    ACT_TABLES = 7


class _S(enum.Enum, shape=unsigned(4)):
    IDLE = 0
    DECODE = 1
    EMBED = 2
    GEMM = 3
    VCMD = 4
    VRUN = 5
    KVW = 6
    AQ = 7
    ASTART = 8
    ARUN = 9
    AOUT = 10
    VLATCH = 11
    FETCH = 12


#: The sequencer's states, by name (for waveform readers and the formal harness, sim/formal/top.py).
SequencerState = _S


class _Bundle:
    """Named signals and memory ports that the parts of one elaboration share."""

    def __init__(self, **members):
        self.__dict__.update(members)


def check_top_config(config) -> int:
    """Return V if ``config`` can be built as a decode top level; TypeError / ValueError otherwise."""
    if not isinstance(config, Config):
        raise InputTypeError(f"config must be a Config, not {type(config).__name__}")
    config.check_buildable()
    R, C, V = config.array_rows, config.array_cols, config.vector_lanes
    if not R == C == V:
        raise InputError(f"the decode top level needs array_rows == array_cols == vector_lanes, not "
                         f"array_rows={R}, array_cols={C}, vector_lanes={V}")
    if V < 4 or V & (V - 1):
        raise InputError(f"the decode top level needs vector_lanes to be a power of two >= 4, not {V}")
    if config.max_context > MAX_CONTEXT_LIMIT:
        raise InputError(f"max_context must be at most {MAX_CONTEXT_LIMIT} for the attention unit, "
                         f"not {config.max_context}")
    return V




class DecodeTop(wiring.Component):
    """The decode accelerator (see the module docstring).

    Parameters: ``config`` (a :class:`Config`, checked by :func:`check_top_config`), and
    keyword-only ``head_dim`` (lanes of the attention unit and of one KV row: a multiple of
    2 * V), ``max_heads`` (query heads of one attention call) and ``max_norm_length`` (the longest
    norm row, the vector unit's row buffer). TypeError / ValueError name the bad parameter.
    """

    @checked_constructor
    def __init__(self, config: Config, *, head_dim: int, max_heads: int, max_norm_length: int):
        V = check_top_config(config)
        self.config = config
        self.lanes = V
        self.head_dim = check_positive_int("head_dim", head_dim)
        if head_dim % (2 * V) or head_dim > HEAD_DIM_MAX:
            raise InputError(f"head_dim must be a multiple of 2 * vector_lanes ({2 * V}) and at most "
                             f"{HEAD_DIM_MAX}, not {head_dim}")
        self.max_heads = check_positive_int("max_heads", max_heads)
        if max_heads > MAX_HEADS_LIMIT:
            raise InputError(f"max_heads must be at most {MAX_HEADS_LIMIT}, not {max_heads}")
        self.max_norm_length = check_positive_int("max_norm_length", max_norm_length)
        if max_norm_length > min(NORM_MAX_LEN, self.max_length):
            raise InputError(f"max_norm_length must be at most {min(NORM_MAX_LEN, self.max_length)}, "
                             f"not {max_norm_length}")
        if self.kv_rows < 1:
            raise InputError(f"kv_bytes ({config.kv_bytes}) must hold at least one K and one V row of "
                             f"head_dim {head_dim}")
        c = config
        # Paged KV: the host writes the pass's block tables (table_*) and the model's plane_rows.
        pages = {"plane_rows": In(range(self.kv_rows + 1)), "table_we": In(1),
                 "table_slot": In(range(max(2, self.table_slots))),
                 "table_entry": In(range(max(2, self.table_entries))),
                 "table_block": In(self.block_bits)} if c.kv_block else {}
        super().__init__({
            "start": In(1),
            "start_ok": Out(1),
            "token": In(16),
            "position": In(range(c.max_context)),
            "n_kv_heads": In(range(max_heads + 1)),
            "group": In(range(max_heads + 1)),
            "rows": In(range(c.max_m + 1)),
            "program_base": In(range(c.program_words)),
            "row_stride": In(range(c.scratch_bytes + 1)),
            "logits_stride": In(range(c.logits_words + 1)),
            "row_we": In(1),
            "row_addr": In(range(max(2, c.max_m))),
            "row_token": In(16),
            "row_position": In(range(c.max_context)),
            "row_kv_base": In(range(self.kv_rows + 1)),
            "row_next_token": Out(16),
            "busy": Out(1),
            "done": Out(1),
            "next_token": Out(16),
            "cycles": Out(c.cycle_counter_bits),
            "host": In(self.host_bus),
            **pages,
        })

    # --- derived sizes ------------------------------------------------------------------------

    @property
    def max_length(self) -> int:
        """Longest vector of any vector-unit command: a scratchpad's or a logits buffer's worth."""
        return max(self.config.scratch_bytes, self.config.logits_words)

    @property
    def _bank_bits(self) -> int:
        """log2 of the weight banks (G, a power of two: it divides V)."""
        return self.config.weight_rows_per_cycle.bit_length() - 1

    @property
    def addr_bits(self) -> int:
        """Width of a scratchpad or logits word address inside the top level: wide enough for row
        ``max_m - 1``'s offsets (the instruction fields stay 16-bit element addresses of row 0)."""
        return max(16, max(self.scratch_depth, self.logits_depth).bit_length() + 1)

    @property
    def param_depth(self) -> int:
        return ceil_div(self.config.param_words, self.lanes)

    @property
    def scratch_depth(self) -> int:
        return ceil_div(self.config.scratch_bytes, self.lanes)

    @property
    def logits_depth(self) -> int:
        return ceil_div(self.config.logits_words, self.lanes)

    @property
    def kv_rows(self) -> int:
        return self.config.kv_bytes // (2 * self.head_dim)

    # --- paged KV (Config.kv_block = B > 0) --------------------------------------------------

    @property
    def table_slots(self) -> int:
        """Block tables the table memory holds: one per sequence of a pass, so ``max_m``."""
        return self.config.max_m

    @property
    def table_entries(self) -> int:
        """Entries of one block table: ``ceil(max_context / B)`` (``Compiled.table_entries``)."""
        return ceil_div(self.config.max_context, self.config.kv_block or self.config.max_context)

    @property
    def block_bits(self) -> int:
        """Bits of a table entry: enough for every block of the KV memory when a (layer, KV head)
        plane is one block row, ``kv_rows / B`` blocks (the most any model has)."""
        return max(1, (self.kv_rows // (self.config.kv_block or self.config.max_context) - 1).bit_length())

    @property
    def host_addr_bits(self) -> int:
        c = self.config
        deepest = max(c.program_words, c.weight_words, self.param_depth, self.scratch_depth, self.logits_depth,
                      c.max_context * self.head_dim, c.act_table_entries)
        return max(1, (deepest - 1).bit_length())

    @property
    def host_data_bits(self) -> int:
        return max(INSTRUCTION_BITS, 32 * self.lanes)

    @property
    def host_bus(self) -> HostBus:
        """The memory window the host reaches this top level through (its ``host`` member, flipped)."""
        return HostBus(mem_count=len(TopMem), addr_bits=self.host_addr_bits, wdata_bits=self.host_data_bits,
                       rdata_bits=32 * self.lanes)

    @property
    def params(self) -> dict:
        return {"config": self.config.as_dict(), "head_dim": self.head_dim, "max_heads": self.max_heads,
                "max_norm_length": self.max_norm_length}

    # --- hardware -----------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        c = self.config
        V = self.lanes
        lg = V.bit_length() - 1
        HD = self.head_dim
        CTX = c.max_context

        mp = self._memories(m)
        prog_r, wm, p1, p2, sa, sb = mp.prog_r, mp.wm, mp.p1, mp.p2, mp.sa, mp.sb
        l_r, k_r, v_r, q_r, o_r = mp.l_r, mp.k_r, mp.v_r, mp.q_r, mp.o_r

        # --- units ---------------------------------------------------------------------------
        m.submodules.array = array = SystolicArray(rows=V, cols=V, rows_per_beat=c.weight_rows_per_cycle,
                                                   fabric_products=c.fabric_products)
        m.submodules.vec = vec = VectorUnit(lanes=V, max_length=self.max_length,
                                            max_norm_length=self.max_norm_length, max_head_dim=HD,
                                            max_context=CTX, act_tables=c.act_tables,
                                            fabric_products=c.fabric_products,
                                            product_register=c.vector_product_register,
                                            layernorm=c.layernorm)
        finish = min(c.attention_finish_lanes, HD) or None
        m.submodules.att = att = AttentionUnit(head_dim=HD, max_context=CTX, max_heads=self.max_heads,
                                               timing_registers=c.attention_timing_registers,
                                               rescale_register=c.attention_rescale_register,
                                               finish_lanes=finish,
                                               heads_per_step=min(c.attention_heads_per_step, self.max_heads))

        # --- sequencer state ---------------------------------------------------------------------
        state = Signal(_S)
        pc = Signal(range(c.program_words + 1))
        ins = Signal(instruction_layout())
        # program_register: the instruction DECODE decodes, in a register loaded from the program
        # memory's read data (FETCH, and an instruction's last cycle of its last row): no path from
        # the block RAM's read data through DECODE's logic.
        raw_q = Signal(INSTRUCTION_BITS, name="raw_q") if c.program_register else None
        raw = data.View(instruction_layout(), prog_r.data if raw_q is None else raw_q)
        tok = Signal(16)
        pos = Signal(range(CTX))
        AB = self.addr_bits
        MM = max(2, c.max_m)
        kvb = Signal(range(self.kv_rows + 1))   # the row's kv_base
        n_rows = Signal(range(c.max_m + 1))     # rows of the pass (M)
        cur = Signal(range(MM))                 # the row the running instruction runs for
        stride = Signal(AB)                     # row_stride in scratchpad words
        lstride = Signal(AB)                    # logits_stride in logits words
        r_off = Signal(AB)                      # row * stride
        l_off = Signal(AB)                      # row * lstride
        # The row table (token, position, kv_base of each row), written by the host while idle, and
        # each row's argmax token.
        tbl_tok = Array(Signal(16, name=f"row_tok{i}") for i in range(c.max_m))
        tbl_pos = Array(Signal(range(CTX), name=f"row_pos{i}") for i in range(c.max_m))
        tbl_kvb = Array(Signal(range(self.kv_rows + 1), name=f"row_kvb{i}") for i in range(c.max_m))
        next_toks = Array(Signal(16, name=f"row_next{i}") for i in range(c.max_m))
        n_kv = Signal.like(self.n_kv_heads)
        group = Signal.like(self.group)
        n_heads = Signal(range(self.max_heads * self.max_heads + 1))
        ins_cyc = Signal(32)
        step_cyc = Signal(c.cycle_counter_bits)
        fin = Signal()                   # the running instruction's (row's) last cycle
        done_ins = Signal()              # ... and of its last row: the next instruction follows
        running = Signal()
        m.d.comb += [running.eq(state != _S.IDLE), self.busy.eq(running), self.cycles.eq(step_cyc)]

        def words(x):
            return (x + (V - 1)) >> lg

        # --- default port settings ---------------------------------------------------------------
        # The program memory is read one instruction ahead (issue is pipelined): program_base while idle,
        # pc + 1 in an instruction's last cycle (of its last row: before, pc again, its next row's DECODE),
        # so the next instruction is decoded in the cycle after it. With ``program_register``, pc + 1 in
        # every cycle of a step (the word is registered in the instruction's last cycle, so it must be
        # read in the cycle before; a later row's DECODE keeps the register). ``rows`` above max_m is
        # the host's to refuse (sim.machine.passes.check_pass).
        ahead = done_ins | (1 if c.program_register else 0)
        m.d.comb += [prog_r.addr.eq(Mux(state == _S.IDLE, self.program_base, Mux(ahead, pc + 1, pc))),
                     prog_r.en.eq(1), wm.ren.eq(1), p1.en.eq(1), p2.en.eq(1),
                     sa.en.eq(1), sb.en.eq(1), l_r.en.eq(1), k_r.en.eq(1), v_r.en.eq(1), q_r.en.eq(1),
                     o_r.en.eq(1), att.out.ready.eq(1)]

        self._host_port(m, mp, vec, running)

        # Registers the micro-sequences share.
        s_addr = Signal(AB)              # scratchpad read address, port A (src0)
        b_addr = Signal(AB)              # scratchpad read address, port B (src1)
        d_addr = Signal(AB)              # scratchpad / logits write address
        left = Signal(32)                # words (beats, rows) left
        idx = Signal(16)                 # position in a row / table
        row = Signal(8 * HD)             # gathered row (K or q)
        row_b = Signal(8 * HD)           # gathered V row
        # Paged: a plane base plus a row inside the plane; one plane past the last (the feeder's step
        # after the last head) stays below 2 * kv_rows.
        kv_row = Signal(range(2 * self.kv_rows + 1) if c.kv_block else range(self.kv_rows + CTX * self.max_heads + 1))
        e_addr = Signal(range(c.weight_words + 1))
        e_lead = Signal(2)               # embed_register: EMBED's leading cycles left (no write)

        # The raw instruction's word addresses for the running row: scratchpad ones plus row * row_stride,
        # ARGMAX's logits source plus row * logits_stride.
        src0_w, src1_w, dst_w = Signal(AB), Signal(AB), Signal(AB)
        m.d.comb += [src0_w.eq((raw.src0 >> lg) + Mux(raw.opcode == Opcode.ARGMAX, l_off, r_off)),
                     src1_w.eq((raw.src1 >> lg) + r_off), dst_w.eq((raw.dst >> lg) + r_off)]
        seq = _Bundle(state=state, pc=pc, ins=ins, raw=raw, tok=tok, pos=pos, n_kv=n_kv, group=group, n_heads=n_heads,
                      fin=fin, running=running, s_addr=s_addr, b_addr=b_addr, d_addr=d_addr, left=left, idx=idx,
                      row=row, row_b=row_b, kv_row=kv_row, e_addr=e_addr, e_lead=e_lead, kvb=kvb, n_rows=n_rows,
                      stride=stride, lstride=lstride, src0_w=src0_w, src1_w=src1_w, dst_w=dst_w, cur=cur,
                      next_toks=next_toks,
                      tbl_tok=tbl_tok, tbl_pos=tbl_pos, tbl_kvb=tbl_kvb, ins_cyc=ins_cyc, step_cyc=step_cyc,
                      done_ins=done_ins, r_off=r_off, l_off=l_off, raw_q=raw_q, prog_r=prog_r)
        seq.pg = self._pages(m, seq) if c.kv_block else None
        self._rows(m, seq, mp, lg)
        self._decode(m, seq, mp, words, lg)

        self._embed(m, seq, mp)
        self._gemm(m, seq, mp, array)
        self._vector(m, seq, mp, vec)
        self._kv_write(m, seq, mp)
        self._attention(m, seq, mp, att)
        return m

    def _rows(self, m, seq, mp, lg):
        """The row table, and the sequencer's start, trace and advance: to the next row of the running
        instruction, or to the next instruction."""
        state, pc, ins, tok, pos, kvb, fin, running = (seq.state, seq.pc, seq.ins, seq.tok, seq.pos, seq.kvb,
                                                        seq.fin, seq.running)
        n_rows, cur, stride, lstride, r_off, l_off = seq.n_rows, seq.cur, seq.stride, seq.lstride, seq.r_off, seq.l_off
        tbl_tok, tbl_pos, tbl_kvb, next_toks = seq.tbl_tok, seq.tbl_pos, seq.tbl_kvb, seq.next_toks
        ins_cyc, step_cyc, done_ins, t_w = seq.ins_cyc, seq.step_cyc, seq.done_ins, mp.t_w
        n_kv, group, n_heads = seq.n_kv, seq.group, seq.n_heads
        # --- the row table -------------------------------------------------------------------
        with m.If(self.row_we & ~running):
            m.d.sync += [tbl_tok[self.row_addr].eq(self.row_token), tbl_pos[self.row_addr].eq(self.row_position),
                         tbl_kvb[self.row_addr].eq(self.row_kv_base)]
        m.d.comb += self.row_next_token.eq(next_toks[self.row_addr])

        # --- start, fetch, decode, halt --------------------------------------------------------
        # rows = 0: one row from the token and position ports at kv_base 0 (the single-step
        # interface); rows = M >= 1: M rows from the row table.
        # n_kv_heads * group <= max_heads, without a multiplier between the host's registers and
        # the link's reply (a hard multiplier there was the board design's deepest path): for each
        # n_kv_heads, the largest group that fits is a constant.
        heads_fit = Cat(*[(self.n_kv_heads == n) & (self.group <= self.max_heads // n)
                          for n in range(1, self.max_heads + 1)]).any()
        m.d.comb += self.start_ok.eq(heads_fit & (self.group != 0) & (self.rows <= self.config.max_m))
        with m.If((state == _S.IDLE) & self.start & self.start_ok):
            table = self.rows != 0
            # program_register: FETCH registers the first instruction (read at program_base in this
            # cycle), one cycle the first instruction's count includes.
            first = _S.FETCH if self.config.program_register else _S.DECODE
            m.d.sync += [state.eq(first), pc.eq(self.program_base), step_cyc.eq(0), ins_cyc.eq(0), self.done.eq(0),
                         tok.eq(Mux(table, tbl_tok[0], self.token)), pos.eq(Mux(table, tbl_pos[0], self.position)),
                         kvb.eq(Mux(table, tbl_kvb[0], 0)), n_rows.eq(Mux(table, self.rows, 1)), cur.eq(0),
                         stride.eq(self.row_stride >> lg), lstride.eq(self.logits_stride >> lg), r_off.eq(0),
                         l_off.eq(0), n_kv.eq(self.n_kv_heads),
                         group.eq(self.group),
                         n_heads.eq(fabric_product(self.n_kv_heads, self.group))]
            if seq.pg is not None:
                m.d.sync += seq.pg.plane.eq(self.plane_rows)
        with m.If(running):
            m.d.sync += ins_cyc.eq(ins_cyc + 1)
        # An instruction other than GEMM runs once per row: its last row's last cycle ends it; before,
        # its last cycle re-issues it (DECODE again) for the next row. GEMM runs every row at once.
        m.d.comb += done_ins.eq(fin & ((cur == n_rows - 1) | (ins.opcode == Opcode.GEMM)))
        # The trace word of an instruction: its start cycle in the step (high half) and its cycles
        # over all rows.
        m.d.comb += [t_w.addr.eq(pc), t_w.data.eq(Cat((ins_cyc + 1)[:UNIT_CYCLE_BITS], step_cyc[:UNIT_CYCLE_BITS])),
                     t_w.en.eq(done_ins)]
        if seq.raw_q is not None:
            with m.If((state == _S.FETCH) | done_ins):
                m.d.sync += seq.raw_q.eq(seq.prog_r.data)
            with m.If(state == _S.FETCH):
                m.d.sync += state.eq(_S.DECODE)
        with m.If(fin):
            m.d.sync += state.eq(_S.DECODE)
            with m.If(done_ins):
                m.d.sync += [pc.eq(pc + 1), ins_cyc.eq(0), step_cyc.eq(step_cyc + ins_cyc + 1), cur.eq(0),
                             r_off.eq(0), l_off.eq(0)]
                with m.If(n_rows != 1):
                    m.d.sync += [tok.eq(tbl_tok[0]), pos.eq(tbl_pos[0]), kvb.eq(tbl_kvb[0])]
            with m.Else():
                m.d.sync += [cur.eq(cur + 1), r_off.eq(r_off + stride), l_off.eq(l_off + lstride),
                             tok.eq(tbl_tok[cur + 1]), pos.eq(tbl_pos[cur + 1]), kvb.eq(tbl_kvb[cur + 1])]

    def _pages(self, m, seq):
        """Paged KV (docs/top.md "Paged KV"): the block-table memory, ``table_slots`` tables of
        ``table_entries`` entries, written by the host while idle (``table_we`` writes ``table_block`` to
        entry ``table_entry`` of table ``table_slot``) and read asynchronously at ``look`` (a position)
        of the running row's table (its ``kv_base``); ``page`` is ``table[look >> log2 B] << log2 B |
        look & (B - 1)``, the row of position ``look`` inside a (layer, KV head) plane, in the cycle
        the address is asked: the lookup costs no cycle. ``plane`` is ``plane_rows``, sampled with
        ``start``."""
        TE = self.table_entries
        b = self.config.kv_block.bit_length() - 1
        m.submodules.ktable = tab = memory.Memory(shape=unsigned(self.block_bits), depth=self.table_slots * TE,
                                                  init=[])
        w, r = tab.write_port(), tab.read_port(domain="comb")
        m.d.comb += [w.addr.eq(self.table_slot * TE + self.table_entry), w.data.eq(self.table_block),
                     w.en.eq(self.table_we & ~seq.running)]
        look = Signal(range(self.config.max_context))
        plane = Signal(range(self.kv_rows + 1))
        m.d.comb += r.addr.eq(seq.kvb * TE + (look >> b))
        return _Bundle(look=look, page=Cat(look[:b], r.data), plane=plane)

    def _memories(self, m):
        """The top level's memories; returns their ports (see the module docstring's table)."""
        c = self.config
        V = self.lanes
        HD = self.head_dim
        # --- memories -----------------------------------------------------------------------
        m.submodules.prog = prog = memory.Memory(shape=unsigned(INSTRUCTION_BITS), depth=c.program_words, init=[])
        m.submodules.wmem = wm = WeightMemory(width=8 * V, depth=c.weight_bank_words, banks=c.weight_rows_per_cycle)
        m.submodules.pmem = pmem = memory.Memory(shape=unsigned(32 * V), depth=self.param_depth, init=[])
        m.submodules.smem = smem = memory.Memory(shape=unsigned(8 * V), depth=self.scratch_depth, init=[])
        m.submodules.lmem = lmem = memory.Memory(shape=unsigned(32 * V), depth=self.logits_depth, init=[])
        m.submodules.kmem = kmem = memory.Memory(shape=unsigned(8 * HD), depth=self.kv_rows, init=[])
        m.submodules.vmem = vmem = memory.Memory(shape=unsigned(8 * HD), depth=self.kv_rows, init=[])
        m.submodules.qbuf = qbuf = memory.Memory(shape=unsigned(8 * HD), depth=self.max_heads, init=[])
        m.submodules.obuf = obuf = memory.Memory(shape=unsigned(8 * HD), depth=self.max_heads, init=[])
        m.submodules.trace = trace = memory.Memory(shape=unsigned(2 * UNIT_CYCLE_BITS), depth=c.program_words, init=[])

        prog_w, prog_r = prog.write_port(), prog.read_port()
        # The host reads through the sequencer's first read ports while idle (no port of its own: on an
        # FPGA every read port beyond one is another copy of the memory's block RAMs).
        p_w, p1, p2 = pmem.write_port(), pmem.read_port(), pmem.read_port()
        s_w, sa, sb = smem.write_port(), smem.read_port(), smem.read_port()
        l_w, l_r = lmem.write_port(), lmem.read_port()
        k_w, k_r = kmem.write_port(), kmem.read_port()
        v_w, v_r = vmem.write_port(), vmem.read_port()
        q_w, q_r = qbuf.write_port(), qbuf.read_port()
        o_w, o_r = obuf.write_port(), obuf.read_port()
        t_w, t_h = trace.write_port(), trace.read_port()

        return _Bundle(prog_w=prog_w, prog_r=prog_r, wm=wm, p_w=p_w, p1=p1, p2=p2, s_w=s_w, sa=sa, sb=sb, l_w=l_w,
                       l_r=l_r, k_w=k_w, k_r=k_r, v_w=v_w, v_r=v_r, q_w=q_w, q_r=q_r, o_w=o_w, o_r=o_r, t_w=t_w,
                       t_h=t_h)

    def _host_port(self, m, mp, vec, running):
        """Host writes to the memories and the vector unit's tables (idle only); host reads (idle only:
        through the scratchpad's, the logits buffer's and the parameter memory's first read ports)."""
        prog_w, wm, p_w, s_w, t_h = mp.prog_w, mp.wm, mp.p_w, mp.s_w, mp.t_h
        s_h, l_h, p_h = mp.sa, mp.l_r, mp.p1
        h = self.host
        hw = h.we & ~running
        hm = h.mem
        m.d.comb += [
            prog_w.addr.eq(h.addr), prog_w.data.eq(h.wdata), prog_w.en.eq(hw & (hm == TopMem.PROGRAM)),
            wm.waddr.eq(h.addr), wm.wdata.eq(h.wdata), wm.we.eq(hw & (hm == TopMem.WEIGHTS)),
            p_w.addr.eq(h.addr), p_w.data.eq(h.wdata), p_w.en.eq(hw & (hm == TopMem.PARAMS)),
            t_h.addr.eq(h.addr),
            h.rdata.eq(Mux(hm == TopMem.SCRATCH, s_h.data,
                       Mux(hm == TopMem.LOGITS, l_h.data,
                       Mux(hm == TopMem.TRACE, t_h.data, p_h.data)))),
        ]
        with m.If(~running):
            m.d.comb += [s_h.addr.eq(h.addr), l_h.addr.eq(h.addr), p_h.addr.eq(h.addr),
                         s_w.addr.eq(h.addr), s_w.data.eq(h.wdata), s_w.en.eq(hw & (hm == TopMem.SCRATCH)),
                         vec.tbl_we.eq(hw & ((hm == TopMem.VTABLE) | (hm == TopMem.ACT_TABLES))),
                         vec.tbl_sel.eq(Mux(hm == TopMem.ACT_TABLES, VectorTable.ACT, VectorTable.ROPE)),
                         vec.tbl_addr.eq(h.addr), vec.tbl_data.eq(h.wdata)]

    def _decode(self, m, seq, mp, words, lg):
        """DECODE: latch the instruction, address its first operands, go to its micro-sequence."""
        V = self.lanes
        HW = self.head_dim // V
        CTX = self.config.max_context
        state, raw, ins, tok, pos, n_kv, n_heads = seq.state, seq.raw, seq.ins, seq.tok, seq.pos, seq.n_kv, seq.n_heads
        s_addr, b_addr, d_addr, idx, left = seq.s_addr, seq.b_addr, seq.d_addr, seq.idx, seq.left
        e_addr, kv_row, kvb, pg = seq.e_addr, seq.kv_row, seq.kvb, seq.pg
        src0_w, src1_w, dst_w = seq.src0_w, seq.src1_w, seq.dst_w
        sa, sb, p1, p2, wm = mp.sa, mp.sb, mp.p1, mp.p2, mp.wm
        rop = raw.opcode
        # Decoded fields of the raw instruction (valid in DECODE).
        r_nw = words(raw.length)
        r_pw = raw.param >> lg
        r_scal = Mux(rop == Opcode.RMSNORM, _plus(r_pw, _RMS.scalar_word(r_nw)),
                     Mux(rop == Opcode.LAYERNORM, _plus(r_pw, _LN.scalar_word(r_nw)), r_pw))
        embed_row = Mux(raw.flags & EmbedFlags.BY_POSITION.value, pos, tok)
        embed_word = Signal(range(self.config.weight_words + 1))
        m.d.comb += embed_word.eq(raw.weight + embed_row * raw.count)
        with m.If(state == _S.DECODE):
            if pg is not None:      # KV_WRITE's position; the attention feeder's first, 0
                m.d.comb += pg.look.eq(Mux(rop == Opcode.KV_WRITE, pos, 0))
            m.d.comb += [sa.addr.eq(src0_w), sb.addr.eq(src1_w), p1.addr.eq(r_scal),
                         p2.addr.eq(r_scal + 1 if V < _MAX_SCALARS else r_scal)]
            if not self.config.embed_register:    # EMBED's first word read in DECODE
                m.d.comb += [wm.raddr.eq(embed_word >> self._bank_bits), wm.rsel.eq(embed_word)]
            m.d.sync += [ins.eq(raw), s_addr.eq(src0_w + 1), b_addr.eq(src1_w + 1), d_addr.eq(dst_w), idx.eq(0)]
            with m.Switch(rop):
                with m.Case(Opcode.HALT):
                    m.d.sync += [state.eq(_S.IDLE), self.done.eq(1)]
                with m.Case(Opcode.EMBED):
                    m.d.sync += [state.eq(_S.EMBED), left.eq(raw.count)]
                    if self.config.embed_register:   # the first word read in EMBED's first cycle
                        # e_addr holds the row's offset (row * count) until then; the instruction's
                        # weight address is added in that cycle (no adder after the multiplier here)
                        m.d.sync += [e_addr.eq(embed_row * raw.count), seq.e_lead.eq(EMBED_LEAD)]
                    else:
                        m.d.sync += e_addr.eq(embed_word + 1)
                with m.Case(Opcode.GEMM):
                    m.d.sync += state.eq(_S.GEMM)
                with m.Case(Opcode.KV_WRITE):
                    planes = _planes_before(raw, n_kv)
                    first = (planes * CTX + pos + kvb) if pg is None else (planes * pg.plane + pg.page)
                    m.d.sync += [state.eq(_S.KVW), left.eq(n_kv * HW), kv_row.eq(first)]
                with m.Case(Opcode.ATTENTION):
                    m.d.sync += [state.eq(_S.AQ), left.eq(n_heads * HW)]
                with m.Default():
                    # vector_scalar_register: the scalars are latched (VLATCH) before the command.
                    m.d.sync += state.eq(_S.VLATCH if self.config.vector_scalar_register else _S.VCMD)

    def _kv_write(self, m, seq, mp):
        """KV_WRITE: gather n_kv K and V rows of HW words each, write them at the position."""
        V = self.lanes
        HW = self.head_dim // V
        CTX = self.config.max_context
        fin, left, idx, row, row_b, kv_row = seq.fin, seq.left, seq.idx, seq.row, seq.row_b, seq.kv_row
        state, s_addr, b_addr = seq.state, seq.s_addr, seq.b_addr
        sa, sb, k_w, v_w = mp.sa, mp.sb, mp.k_w, mp.v_w
        with m.If(state == _S.KVW):
            new_k = Cat(row[8 * V:], sa.data)
            new_v = Cat(row_b[8 * V:], sb.data)
            m.d.comb += [sa.addr.eq(s_addr), sb.addr.eq(b_addr), fin.eq(left == 1),
                         k_w.addr.eq(kv_row), k_w.data.eq(new_k), v_w.addr.eq(kv_row), v_w.data.eq(new_v)]
            m.d.sync += [row.eq(new_k), row_b.eq(new_v), s_addr.eq(s_addr + 1), b_addr.eq(b_addr + 1),
                         left.eq(left - 1), idx.eq(Mux(idx == HW - 1, 0, idx + 1))]
            with m.If(idx == HW - 1):
                m.d.comb += [k_w.en.eq(1), v_w.en.eq(1)]
                m.d.sync += kv_row.eq(kv_row + (CTX if seq.pg is None else seq.pg.plane))


    def _attention(self, m, seq, mp, att):
        """ATTENTION: gather the query rows, run the attention unit on the KV memories, scatter its output."""
        V = self.lanes
        HW = self.head_dim // V
        CTX = self.config.max_context
        state, raw, pos, n_kv, group, n_heads, fin = (seq.state, seq.raw, seq.pos, seq.n_kv, seq.group, seq.n_heads,
                                                      seq.fin)
        kvb, pg = seq.kvb, seq.pg
        s_addr, d_addr, left, idx, row, kv_row = seq.s_addr, seq.d_addr, seq.left, seq.idx, seq.row, seq.kv_row
        sa, p1, s_w, q_w, q_r, k_r, v_r, o_w, o_r = mp.sa, mp.p1, mp.s_w, mp.q_w, mp.q_r, mp.k_r, mp.v_r, mp.o_w, mp.o_r
        # --- ATTENTION ------------------------------------------------------------------------
        # AQ: gather the n_heads query rows into qbuf; latch the scalars.
        sc = Signal(32 * V)
        q_row = Signal(range(self.max_heads + 1))
        with m.If(state == _S.AQ):
            new_q = Cat(row[8 * V:], sa.data)
            m.d.comb += [sa.addr.eq(s_addr), q_w.addr.eq(q_row), q_w.data.eq(new_q)]
            m.d.sync += [row.eq(new_q), s_addr.eq(s_addr + 1), left.eq(left - 1),
                         idx.eq(Mux(idx == HW - 1, 0, idx + 1))]
            with m.If(idx == HW - 1):
                m.d.comb += q_w.en.eq(1)
                m.d.sync += q_row.eq(q_row + 1)
            with m.If((q_row == 0) & (idx == 0)):
                m.d.sync += sc.eq(p1.data)     # read in DECODE
            with m.If(left == 1):
                m.d.sync += state.eq(_S.ASTART)
        with m.Elif(state == _S.DECODE):
            m.d.sync += q_row.eq(0)

        # ASTART / ARUN: the unit runs; q rows from qbuf, K/V rows from the KV memories.
        scal = data.View(data.ArrayLayout(unsigned(32), V), sc)

        def ix(name):
            return scalar_index(name, Opcode.ATTENTION)

        m.d.comb += [att.kv_len.eq(pos + 1), att.n_kv_heads.eq(n_kv), att.group.eq(group),
                     att.score_mult.eq(scal[ix("score_mult")][:MULT_BITS]),
                     att.score_shift.eq(scal[ix("score_shift")][:SHIFT_BITS]),
                     att.out_mult.eq(scal[ix("out_mult")][:MULT_BITS]),
                     att.out_shift.eq(scal[ix("out_shift")][:SHIFT_BITS]),
                     att.start.eq(state == _S.ASTART)]
        qf_valid = Signal()
        qf_addr = Signal(range(self.max_heads + 1))
        qf_left = Signal(range(self.max_heads * self.max_heads + 1))
        kf_valid = Signal()
        kf_more = Signal()
        kf_t = Signal(range(CTX + 1))
        kf_g = Signal(range(self.max_heads + 1))
        kf_addr = Signal.like(kv_row)
        kf_gbase = Signal.like(kv_row)
        o_count = Signal(range(self.max_heads * self.max_heads + 1))
        o_row = Signal(range(self.max_heads + 1))
        o_word = Signal(range(HW + 1))
        in_att = (state == _S.ASTART) | (state == _S.ARUN)
        q_adv = ~qf_valid | att.q.ready
        kv_adv = ~kf_valid | att.k.ready
        m.d.comb += [
            q_r.addr.eq(qf_addr), att.q.valid.eq(qf_valid), att.q.payload.eq(q_r.data),
            k_r.addr.eq(kf_addr), v_r.addr.eq(kf_addr), att.k.valid.eq(kf_valid), att.v.valid.eq(kf_valid),
            att.k.payload.eq(k_r.data), att.v.payload.eq(v_r.data),
            o_w.addr.eq(o_count), o_w.data.eq(att.out.payload), o_w.en.eq(att.out.valid),
        ]
        if pg is None:
            first_base = first_addr = _planes_before(raw, n_kv) * CTX + kvb
        else:       # the layer's first plane; position 0's row in it (pg.look is 0 in DECODE)
            first_base = _planes_before(raw, n_kv) * pg.plane
            first_addr = first_base + pg.page
        with m.If(state == _S.DECODE):
            m.d.sync += [qf_valid.eq(0), qf_addr.eq(0), qf_left.eq(n_heads), kf_valid.eq(0), kf_more.eq(1),
                         kf_t.eq(0), kf_g.eq(0), kf_addr.eq(first_addr),
                         kf_gbase.eq(first_base), o_count.eq(0), o_row.eq(0), o_word.eq(0)]
        with m.If(in_att):
            m.d.comb += [q_r.en.eq(q_adv), k_r.en.eq(kv_adv), v_r.en.eq(kv_adv)]
            with m.If(q_adv):
                m.d.sync += qf_valid.eq(qf_left != 0)
                with m.If(qf_left != 0):
                    m.d.sync += [qf_addr.eq(qf_addr + 1), qf_left.eq(qf_left - 1)]
            if pg is not None:
                # The next position's row through the table, looked up in the cycle that registers it.
                m.d.comb += pg.look.eq(Mux(kf_t == pos, 0, kf_t + 1))
            with m.If(kv_adv):
                m.d.sync += kf_valid.eq(kf_more)
                with m.If(kf_more):
                    with m.If(kf_t == pos):
                        if pg is None:
                            m.d.sync += [kf_t.eq(0), kf_g.eq(kf_g + 1), kf_gbase.eq(kf_gbase + CTX),
                                         kf_addr.eq(kf_gbase + CTX)]
                        else:
                            m.d.sync += [kf_t.eq(0), kf_g.eq(kf_g + 1), kf_gbase.eq(kf_gbase + pg.plane),
                                         kf_addr.eq(kf_gbase + pg.plane + pg.page)]
                        with m.If(kf_g == n_kv - 1):
                            m.d.sync += kf_more.eq(0)
                    with m.Else():
                        m.d.sync += [kf_t.eq(kf_t + 1), kf_addr.eq(kf_addr + 1 if pg is None else kf_gbase + pg.page)]
            with m.If(att.out.valid):
                m.d.sync += o_count.eq(o_count + 1)
        with m.If(state == _S.ASTART):
            m.d.sync += state.eq(_S.ARUN)
        with m.If((state == _S.ARUN) & att.done):
            m.d.sync += [state.eq(_S.AOUT), left.eq(n_heads * HW)]

        # AOUT: scatter the output rows to the scratchpad, one word a cycle.
        o_next = Mux(o_word == HW - 1, o_row + 1, o_row)
        m.d.comb += o_r.addr.eq(o_row)
        with m.If(state == _S.AOUT):
            m.d.comb += [o_r.addr.eq(o_next), s_w.addr.eq(d_addr), s_w.data.eq(o_r.data.word_select(o_word, 8 * V)),
                         s_w.en.eq(1), fin.eq(left == 1)]
            m.d.sync += [d_addr.eq(d_addr + 1), left.eq(left - 1), o_row.eq(o_next),
                         o_word.eq(Mux(o_word == HW - 1, 0, o_word + 1))]

    # --- GEMM: the array fed from the weight memory and the scratchpad (GemmPath); bias; requantization

    def _embed(self, m, seq, mp):
        """EMBED: copy ``count`` weight words to the scratchpad, one a cycle. With ``embed_register``
        the first EMBED cycle only reads the row's first word (the row's offset, ``row * count``,
        made and registered in DECODE; the table's address added in this cycle), and the weight
        memory's words are registered before the scratchpad's write port (the bank select and the
        write were the routed board design's slowest paths into the scratchpad): the second cycle
        registers the first word, and the copy writes from the third (``EMBED_REGISTER`` = 2
        leading cycles)."""
        wm, s_w = mp.wm, mp.s_w
        e_addr, d_addr, left = seq.e_addr, seq.d_addr, seq.left
        with m.If(seq.state == _S.EMBED):
            reg = self.config.embed_register
            copying = (seq.e_lead == 0) if reg else 1
            # embed_register: in EMBED's first cycle e_addr is the row's offset in the table
            at = Signal.like(e_addr)
            m.d.comb += at.eq(Mux(seq.e_lead == EMBED_LEAD, seq.ins.weight + e_addr, e_addr) if reg else e_addr)
            word = wm.word
            if reg:
                word = Signal.like(wm.word, name="e_word")
                m.d.sync += word.eq(wm.word)
            m.d.comb += [wm.raddr.eq(at >> self._bank_bits), wm.rsel.eq(at), s_w.addr.eq(d_addr),
                         s_w.data.eq(word), s_w.en.eq(copying),
                         seq.fin.eq(copying & (left == 1))]
            m.d.sync += e_addr.eq(at + 1)
            with m.If(copying):
                m.d.sync += [d_addr.eq(d_addr + 1), left.eq(left - 1)]
            if reg:
                with m.If(~copying):
                    m.d.sync += seq.e_lead.eq(seq.e_lead - 1)

    def _gemm(self, m, seq, mp, array):
        state, fin = seq.state, seq.fin
        wm, sa, p1, p2, s_w, l_w = mp.wm, mp.sa, mp.p1, mp.p2, mp.s_w, mp.l_w
        c = self.config
        m.submodules.gemm = g = GemmPath(lanes=self.lanes, weight_words=c.weight_words,
                                         rows_per_beat=c.weight_rows_per_cycle, residual=c.fused_residual,
                                         max_m=c.max_m, addr_bits=self.addr_bits,
                                         product_register=c.gemm_product_register,
                                         residual_registers=c.residual_timing_registers,
                                         fabric_products=c.fabric_products)
        wiring.connect(m, g.weights, array.weights)
        wiring.connect(m, g.acts, array.acts)
        wiring.connect(m, array.sums, g.sums)
        m.d.comb += [g.rows.eq(seq.n_rows), g.row_stride.eq(seq.stride), g.logits_stride.eq(seq.lstride),
                     g.decode.eq(state == _S.DECODE), g.run.eq(state == _S.GEMM), g.raw.eq(seq.raw), g.ins.eq(seq.ins),
                     g.w_data.eq(wm.row), g.a_data.eq(sa.data), g.bias_data.eq(p1.data), g.ms_data.eq(p2.data)]
        with m.If(state == _S.GEMM):
            m.d.comb += [wm.raddr.eq(g.w_addr), wm.ren.eq(g.w_en), sa.addr.eq(g.a_addr), sa.en.eq(g.a_en),
                         p1.addr.eq(g.bias_addr), p2.addr.eq(g.ms_addr)]
        if c.fused_residual:
            # The residual's words come through the scratchpad's second read port (idle in a GEMM).
            m.d.comb += g.r_data.eq(mp.sb.data)
            with m.If(state == _S.GEMM):
                m.d.comb += [mp.sb.addr.eq(g.r_addr), mp.sb.en.eq(g.r_en)]
        with m.If(g.s_we):
            m.d.comb += [s_w.addr.eq(g.s_addr), s_w.data.eq(g.s_data), s_w.en.eq(1)]
        m.d.comb += [l_w.addr.eq(g.l_addr), l_w.data.eq(g.l_data), l_w.en.eq(g.l_we)]
        with m.If(g.fin):
            m.d.comb += fin.eq(1)

    # --- vector instructions through the vector unit -------------------------------------------

    def _vector(self, m, seq, mp, vec):
        """Vector instructions through the vector unit, by :class:`VectorPath`: the sequencer's part is
        its states (VCMD: a command; VRUN: its beats), the memory ports and the argmax token."""
        state = seq.state
        c = self.config
        m.submodules.vpath = vp = VectorPath(lanes=self.lanes, head_dim=self.head_dim, max_length=self.max_length,
                                             max_context=c.max_context, act_tables=c.act_tables,
                                             fused_rope=c.fused_rope, fused_swiglu=c.fused_swiglu,
                                             scalar_register=c.vector_scalar_register, addr_bits=self.addr_bits)
        wiring.connect(m, vp.cmd, vec.cmd)
        wiring.connect(m, vp.inp, vec.inp)
        wiring.connect(m, vec.out, vp.out)
        sa, sb, p1, p2, l_r, s_w = mp.sa, mp.sb, mp.p1, mp.p2, mp.l_r, mp.s_w
        m.d.comb += [vp.decode.eq(state == _S.DECODE), vp.issue.eq(state == _S.VCMD), vp.run.eq(state == _S.VRUN),
                     vp.raw.eq(seq.raw), vp.ins.eq(seq.ins), vp.position.eq(seq.pos),
                     vp.src0.eq(seq.src0_w), vp.src1.eq(seq.src1_w), vp.dst.eq(seq.dst_w),
                     vp.p1_data.eq(p1.data), vp.p2_data.eq(p2.data), vp.a_data.eq(sa.data), vp.b_data.eq(sb.data),
                     vp.l_data.eq(l_r.data)]
        with m.If((state == _S.VCMD) | (state == _S.VRUN)):
            m.d.comb += [sa.addr.eq(vp.a_addr), sb.addr.eq(vp.b_addr), l_r.addr.eq(vp.a_addr), p1.addr.eq(vp.g_addr),
                         p2.addr.eq(vp.be_addr), sa.en.eq(vp.rd_en), sb.en.eq(vp.rd_en), l_r.en.eq(vp.rd_en),
                         p1.en.eq(vp.rd_en), p2.en.eq(vp.rd_en)]
        if c.vector_scalar_register:
            m.d.comb += vp.latch.eq(state == _S.VLATCH)
            with m.If(state == _S.VLATCH):
                m.d.sync += state.eq(_S.VCMD)
        with m.If(state == _S.VCMD):
            m.d.sync += state.eq(_S.VRUN)
        with m.If(vp.again):
            m.d.sync += state.eq(_S.VCMD)
        with m.If(vp.s_we):
            m.d.comb += [s_w.addr.eq(vp.s_addr), s_w.data.eq(vp.s_data), s_w.en.eq(1)]
        with m.If(vp.token_valid):
            m.d.sync += [self.next_token.eq(vp.token), seq.next_toks[seq.cur].eq(vp.token)]
        with m.If(vp.fin):
            m.d.comb += seq.fin.eq(1)


class GemmPath(wiring.Component):
    """The decode top level's GEMM instruction (M = 1): the array's feeders, the accumulator over
    reduction tiles, the bias and the requantizing write-back (docs/top.md, "GEMM").

    Parameters (keyword-only): ``lanes`` (V: the array is V x V, a word is V lanes), ``weight_words``
    (the weight memory's depth in words), ``rows_per_beat`` (G: the weight memory's banks; a beat
    is one bank row, G tile rows).

    Ports
    -----
    ``decode`` (the sequencer decodes ``raw`` this cycle: a GEMM instruction latches its tile counts
    and addresses), ``run`` (the sequencer is in its GEMM state), ``raw`` (the instruction being
    decoded), ``ins`` (the running instruction: its flags). ``weights``, ``acts`` (out) and ``sums``
    (in): the streams of :class:`hdl.array.SystolicArray`. Memory reads, each data one cycle after its
    address: ``w_addr``/``w_en``/``w_data`` (a bank row of the weights: G words),
    ``a_addr``/``a_en``/``a_data`` (the scratchpad),
    ``bias_addr``/``bias_data`` and ``ms_addr``/``ms_data`` (the parameter memory's two ports); the
    addresses count only while ``run`` is high. Writes: ``s_we``/``s_addr``/``s_data`` (a requantized
    word to the scratchpad), ``l_we``/``l_addr``/``l_data`` (an int32 word to the logits buffer).
    ``fin`` marks the instruction's last cycle.

    ``residual`` (``Config.fused_residual``) adds the fused residual add (a GEMM with flag RESIDUAL):
    ports ``r_addr``/``r_en``/``r_data`` read the residual's words (the scratchpad's second read port);
    the add's scalars are read through ``bias_addr`` in the instruction's first cycle (the parameter
    port is idle until the first sum) and latched in its second; each output word's requantized value
    waits in a second output register for its residual word, and ``residual_add(x, y)`` is written the
    cycle after (one cycle more than the plain GEMM).

    ``product_register`` (``Config.gemm_product_register``) registers the requantization's product
    (and the word's destination) between the multiply and the rounding shift and saturation, and
    the writes (scratchpad, logits, ``fin``) after them: every output word is written two cycles
    later (two cycles more per GEMM, ``sim.machine.cycles.GEMM_PRODUCT_REGISTER``). ``fabric_products``
    (``Config.fabric_products``): the residual add's two scaled terms built from adders.
    ``residual_registers`` (``Config.residual_timing_registers``, with ``residual``): the residual
    add's sum of its scaled terms is registered before its requantization, and the
    requantization's product before its rounding shift and saturation: each fused output word is
    written two cycles later (two cycles more per GEMM with flag RESIDUAL).
    """

    @checked_constructor
    def __init__(self, *, lanes: int, weight_words: int, rows_per_beat: int = 1, residual: bool = False,
                 max_m: int = 1, addr_bits: int = 16, product_register: bool = False,
                 residual_registers: bool = False, fabric_products: bool = False):
        self.lanes = check_positive_int("GEMM path lanes", lanes)
        self.max_m = check_positive_int("GEMM path max_m", max_m)
        self.addr_bits = check_positive_int("GEMM path addr_bits", addr_bits)
        self.weight_words = check_positive_int("GEMM path weight_words", weight_words)
        self.rows_per_beat = G = check_positive_int("GEMM path rows_per_beat", rows_per_beat)
        if lanes % G or G & (G - 1):
            raise InputError(f"GEMM path rows_per_beat must be a power of two dividing lanes ({lanes}), not {G}")
        V = lanes
        self.residual = bool(residual)
        self.product_register = bool(product_register)
        self.residual_registers = bool(residual_registers)
        self.fabric_products = bool(fabric_products)
        AB = addr_bits
        extra = {"r_addr": Out(AB), "r_en": Out(1), "r_data": In(8 * V)} if residual else {}
        super().__init__({
            **extra,
            "rows": In(range(max_m + 1)),
            "row_stride": In(AB),
            "logits_stride": In(AB),
            "decode": In(1),
            "run": In(1),
            "raw": In(instruction_layout()),
            "ins": In(instruction_layout()),
            "weights": Out(stream.Signature(weight_layout(V, G))),
            "acts": Out(stream.Signature(act_layout(V))),
            "sums": In(stream.Signature(sum_layout(V))),
            "w_addr": Out(range(weight_words // G + 1)),
            "w_en": Out(1),
            "w_data": In(8 * V * G),
            "a_addr": Out(AB),
            "a_en": Out(1),
            "a_data": In(8 * V),
            "bias_addr": Out(25),
            "bias_data": In(32 * V),
            "ms_addr": Out(25),
            "ms_data": In(32 * V),
            "s_we": Out(1),
            "s_addr": Out(AB),
            "s_data": Out(8 * V),
            "l_we": Out(1),
            "l_addr": Out(AB),
            "l_data": Out(32 * V),
            "fin": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        V = self.lanes
        lg = V.bit_length() - 1
        AB = self.addr_bits
        MM = max(2, self.max_m)
        raw, ins = self.raw, self.ins
        rows = self.rows

        def words(x):
            return (x + (V - 1)) >> lg

        kt = Signal(16)
        nt = Signal(16)
        wf_valid = Signal()
        G = self.rows_per_beat
        lg_g = G.bit_length() - 1
        wf_addr = Signal(range(self.weight_words // G + 1))
        # The weight stream walks (output tile, reduction tile, beat of the tile) with three counters
        # against the latched tile counts: no ``kt * nt`` product between the program memory's read
        # data and a register (it was the deepest path of the board build's decode).
        beats_per_tile = 1 << (lg - lg_g)
        wf_more = Signal()
        wf_beat = Signal(range(max(beats_per_tile, 2)))
        wf_k = Signal(16)
        wf_n = Signal(16)
        af_valid = Signal()
        af_more = Signal()
        af_kt = Signal(16)
        af_nt = Signal(16)
        af_r = Signal(range(MM))         # the activation row being read (of the pass's M)
        af_off = Signal(AB)              # its offset: af_r * row_stride (words)
        af_last = Signal(init=1)         # the beat held is the tile's last row
        src = Signal(AB)
        s_kt = Signal(16)
        s_final = Signal(name="s_final")    # s_kt == kt - 1 at every cycle (the last reduction tile)
        s_nt = Signal(16)
        s_row = Signal(range(MM))        # the row of the next sum
        s_off = Signal(AB)               # s_row * row_stride (scratchpad words)
        s_loff = Signal(AB)              # s_row * logits_stride (logits words)
        dst = Signal(AB)
        bias_base = Signal(24)
        all_flags = (GemmFlags.BIAS | GemmFlags.REQUANT).value
        ms_base = Signal(24)
        with m.If(self.decode & (raw.opcode == Opcode.GEMM)):
            r_kt = words(raw.length)
            r_nt = words(raw.count)
            m.d.sync += [kt.eq(r_kt), nt.eq(r_nt), wf_valid.eq(0), wf_addr.eq(raw.weight >> lg_g),
                         wf_more.eq((raw.length != 0) & (raw.count != 0)), wf_beat.eq(0), wf_k.eq(0),
                         wf_n.eq(0), af_valid.eq(0), af_more.eq(1), af_kt.eq(0),
                         af_nt.eq(0), af_r.eq(0), af_off.eq(0),
                         src.eq(raw.src0 >> lg), s_kt.eq(0), s_final.eq(r_kt - 1 == 0), s_nt.eq(0), s_row.eq(0),
                         s_off.eq(0), s_loff.eq(0), dst.eq(raw.dst >> lg),
                         bias_base.eq(_plus(raw.param >> lg, _GEMM.channel_word("bias", r_nt, all_flags))),
                         # the multiplier part follows the bias part when the instruction has one
                         ms_base.eq((raw.param >> lg) + Mux(raw.flags & GemmFlags.BIAS.value, r_nt, 0))]
        gemm = self.run
        w_adv = ~wf_valid | self.weights.ready
        a_adv = ~af_valid | self.acts.ready
        m.d.comb += [self.weights.valid.eq(wf_valid & gemm), self.weights.payload.eq(self.w_data),
                     self.acts.valid.eq(af_valid & gemm), self.acts.payload.data.eq(self.a_data),
                     self.acts.payload.last.eq(af_last), self.sums.ready.eq(1)]
        with m.If(gemm):
            m.d.comb += [self.w_addr.eq(wf_addr), self.w_en.eq(w_adv), self.a_addr.eq(src + af_off + af_kt),
                         self.a_en.eq(a_adv), self.bias_addr.eq(bias_base + s_nt), self.ms_addr.eq(ms_base + s_nt)]
            with m.If(w_adv):
                m.d.sync += wf_valid.eq(wf_more)
                with m.If(wf_more):
                    m.d.sync += wf_addr.eq(wf_addr + 1)
                    with m.If(_walk(m, beats_per_tile, wf_beat, [], wf_k, kt, wf_n) & (wf_n == nt - 1)):
                        m.d.sync += wf_more.eq(0)
            # Activations: for each (output tile, reduction tile), the M rows' words, row r at r * row_stride.
            with m.If(a_adv):
                m.d.sync += af_valid.eq(af_more)
                with m.If(af_more):
                    m.d.sync += af_last.eq(af_r == rows - 1)
                    with m.If(_walk(m, rows, af_r, [(af_off, self.row_stride)], af_kt, kt, af_nt) & (af_nt == nt - 1)):
                        m.d.sync += af_more.eq(0)

        # Accumulator: sums arrive in (output tile, reduction tile, row) order; row r's running sum
        # over the reduction tiles is word r of a small memory (read combinationally, written the
        # cycle a non-final sum arrives).
        m.submodules.acc = acc_mem = memory.Memory(shape=data.ArrayLayout(signed(32), V), depth=MM, init=[])
        acc_w, acc_r = acc_mem.write_port(), acc_mem.read_port(domain="comb")
        bias = data.View(data.ArrayLayout(signed(32), V), self.bias_data)
        ms = data.View(data.ArrayLayout(unsigned(32), V), self.ms_data)
        total = Signal(data.ArrayLayout(signed(32), V))
        # The instruction's BIAS flag, a copy a lane (hdl.fanout; equal to ins.flags' bit at every
        # cycle: ins loads raw in DECODE): it selects every bit of the lane's running sum.
        use_bias = ring_copies(m, V, self.decode, (raw.flags & GemmFlags.BIAS.value) != 0, shape=1, name="use_bias")
        fire = gemm & self.sums.valid
        firsts = _first_tile_copies(m, V, self.decode & (raw.opcode == Opcode.GEMM), fire & (s_row == rows - 1),
                                    s_kt, s_final)
        for j in range(V):
            start = Mux(firsts[j], Mux(use_bias[j], bias[j], 0), acc_r.data[j])
            m.d.comb += total[j].eq(self.sums.payload.data[j] + start)
        # Output stage (GEMM_WRITEBACK): an output tile's final sum is registered with its
        # multiplier word, destination and kind; the requantization and the write happen the next
        # cycle. It cuts the path from the parameter memory's read data through the add, the
        # multiply, the rounding shift and the saturation into the scratchpad in two.
        o_valid = Signal()
        o_total = Signal(data.ArrayLayout(signed(32), V))
        o_ms = Signal(data.ArrayLayout(unsigned(32), V))
        o_addr = Signal(AB)
        o_requant = Signal()
        o_last = Signal()
        requant = (ins.flags & GemmFlags.REQUANT.value) != 0
        m.d.comb += [acc_r.addr.eq(s_row), acc_w.addr.eq(s_row), acc_w.data.eq(total), acc_w.en.eq(fire & ~s_final)]
        # The stage's data registers load every cycle, without an enable (one would be a net to
        # all V x 64 of them); o_valid says when they hold a final sum, and everything after them
        # (requantization, residual stage, writes) is gated by it.
        m.d.sync += [o_valid.eq(fire & s_final), o_total.eq(total), o_ms.eq(ms),
                     o_addr.eq(dst + s_nt + Mux(requant, s_off, s_loff)), o_requant.eq(requant),
                     o_last.eq((s_nt == nt - 1) & (s_row == rows - 1))]
        with m.If(fire):     # s_final follows s_kt's step (to s_kt + 1, or 0 after the last)
            _walk(m, rows, s_row, [(s_off, self.row_stride), (s_loff, self.logits_stride)], s_kt, kt, s_nt,
                  [s_final.eq(Mux(s_final, kt - 1 == 0, (s_kt + 1)[:16] == kt - 1))])
        stage = self._requantize(m, o_valid, o_total, o_ms, o_addr, o_requant, o_last)
        self._write_back(m, raw, stage, s_nt + s_off, fire & s_final)
        return m

    def _write_back(self, m, raw, stage, r_word, take):
        """The output stage's writes (``stage``: :meth:`_requantize`'s), through the fused residual
        add when there is one (``r_word``, ``take``: :meth:`_residual_stage`'s). With
        ``product_register`` they leave through a register (the word's shift, saturation and
        residual add apart from the scratchpad's write port and its multiplexer), so every write
        and ``fin`` come a cycle later."""
        gemm = self.run
        o_valid, o_total, o_addr, o_requant, o_last, y = stage
        out = _Bundle(**{name: Signal.like(getattr(self, name), name=f"w_{name}") for name in _GEMM_WRITES})
        fused = self._residual_stage(m, raw, o_valid, o_addr, o_last, y, r_word, take, out)
        with m.If(gemm & o_valid & (~fused if self.residual else 1)):
            with m.If(o_requant):
                m.d.comb += out.s_we.eq(1)
            with m.Else():
                m.d.comb += out.l_we.eq(1)
            with m.If(o_last):
                m.d.comb += out.fin.eq(1)
        if not self.residual:
            m.d.comb += [out.s_addr.eq(o_addr), out.s_data.eq(y)]
        m.d.comb += [out.l_addr.eq(o_addr), out.l_data.eq(o_total)]
        m.d["sync" if self.product_register else "comb"] += [getattr(self, name).eq(getattr(out, name))
                                                             for name in _GEMM_WRITES]

    def _requantize(self, m, o_valid, o_total, o_ms, o_addr, o_requant, o_last):
        """The output stage's requantization of ``o_total`` by ``o_ms`` into int8 words ``y``; with
        ``product_register`` the products and the word's destination pass a second register first
        (GEMM_PRODUCT_REGISTER). Returns the stage's (valid, total, addr, requant, last, y) as the
        write sees them."""
        V = self.lanes
        shifts = [data.View(MULT_SHIFT, o_ms[j]).shift[:SHIFT_BITS] for j in range(V)]
        products = [o_total[j] * data.View(MULT_SHIFT, o_ms[j]).mult for j in range(V)]
        if self.product_register:
            q_products = [Signal(signed(len(p)), name=f"q_product{j}") for j, p in enumerate(products)]
            q_shifts = [Signal(SHIFT_BITS, name=f"q_shift{j}") for j in range(V)]
            stage = [Signal.like(o_valid, name="q_valid"), Signal.like(o_total, name="q_total"),
                     Signal.like(o_addr, name="q_addr"), Signal.like(o_requant, name="q_requant"),
                     Signal.like(o_last, name="q_last")]
            m.d.sync += [q.eq(p) for q, p in zip(q_products, products, strict=True)]
            m.d.sync += [q.eq(sh) for q, sh in zip(q_shifts, shifts, strict=True)]
            m.d.sync += [q.eq(o) for q, o in zip(stage, (o_valid, o_total, o_addr, o_requant, o_last), strict=True)]
            products, shifts = q_products, q_shifts
            o_valid, o_total, o_addr, o_requant, o_last = stage
        y = Signal(data.ArrayLayout(signed(8), V))
        for j in range(V):
            m.d.comb += y[j].eq(round_saturate8(products[j], shifts[j]))
        return o_valid, o_total, o_addr, o_requant, o_last, y

    def _residual_stage(self, m, raw, o_valid, o_addr, o_last, y, r_word, take, out):
        """The fused residual add (flag RESIDUAL) after the output stage; returns the flag (0 without
        ``residual``). ``take``: an output tile's final sum is registered this cycle; ``r_word``: its
        residual word's offset from ``src1`` (output tile plus row offset); ``out``: the writes it
        drives (``s_we``, ``s_addr``, ``s_data``, ``fin``)."""
        if not self.residual:
            return 0
        V = self.lanes
        lg = V.bit_length() - 1
        AB = self.addr_bits
        gemm, ins = self.run, self.ins
        fused = (ins.flags & GemmFlags.RESIDUAL.value) != 0
        rec = RESIDUAL_GEMM_RECORD
        # The record's scalars follow its channel parts (mult_shift, after the bias when present).
        both = (GemmFlags.BIAS | GemmFlags.REQUANT | GemmFlags.RESIDUAL).value
        one = (GemmFlags.REQUANT | GemmFlags.RESIDUAL).value
        r_nt = (raw.count + (V - 1)) >> lg
        sc_addr = Signal(24)
        r_base = Signal(AB)
        sc_step = Signal(2)
        sc = Signal(data.ArrayLayout(unsigned(32), V))
        with m.If(self.decode & (raw.opcode == Opcode.GEMM)):
            m.d.sync += [sc_addr.eq((raw.param >> lg) + Mux(raw.flags & GemmFlags.BIAS.value,
                                                             rec.scalar_word(r_nt, both), rec.scalar_word(r_nt, one))),
                         r_base.eq(raw.src1 >> lg), sc_step.eq(0)]
        # The scalars: addressed in the first GEMM cycle through the bias port, latched in the second.
        with m.If(gemm & (sc_step == 0)):
            m.d.comb += self.bias_addr.eq(sc_addr)
            m.d.sync += sc_step.eq(1)
        with m.If(gemm & (sc_step == 1)):
            m.d.sync += [sc.eq(self.bias_data), sc_step.eq(2)]
        # Stage R: the requantized word y waits for the residual's word x (read the cycle y is made).
        r_addr = Signal(AB)
        with m.If(take):
            m.d.sync += r_addr.eq(r_base + r_word)
        if self.product_register:   # y is a cycle later: so is the residual word's read
            r_late = Signal(AB)
            m.d.sync += r_late.eq(r_addr)
            r_addr = r_late
        p_valid = Signal()
        p_y = Signal(data.ArrayLayout(signed(8), V))
        p_addr = Signal(AB)
        p_last = Signal()
        m.d.comb += [self.r_addr.eq(r_addr), self.r_en.eq(1)]
        m.d.sync += [p_valid.eq(gemm & o_valid & fused), p_y.eq(y), p_addr.eq(o_addr), p_last.eq(o_last)]
        x = data.View(data.ArrayLayout(signed(8), V), self.r_data)
        z = Signal(data.ArrayLayout(signed(8), V))

        def scalar(name, bits):
            return sc[rec.scalar_index(name)][:bits]

        a_mult, b_mult = scalar("a_mult", MULT_BITS), scalar("b_mult", MULT_BITS)
        fab = self.fabric_products
        sums = [product(a_mult, x[j], fabric=fab) + product(b_mult, p_y[j], fabric=fab) for j in range(V)]
        mult, shift = scalar("mult", MULT_BITS), scalar("shift", SHIFT_BITS)
        if self.residual_registers:
            # Stages R2 and R3 (residual_registers): the sums, then the requantization's products,
            # registered; the word is shifted, saturated and written the cycle after R3.
            products = []
            for name, values in (("r2", sums), ("r3", None)):
                if values is None:
                    values = [s * mult for s in products]
                regs = [Signal(signed(len(v)), name=f"{name}_{j}") for j, v in enumerate(values)]
                valid, last = Signal(name=f"{name}_valid"), Signal(name=f"{name}_last")
                addr = Signal(AB, name=f"{name}_addr")
                m.d.sync += [valid.eq(p_valid), addr.eq(p_addr), last.eq(p_last)] + [
                    r.eq(v) for r, v in zip(regs, values, strict=True)]
                p_valid, p_addr, p_last, products = valid, addr, last, regs
            for j in range(V):
                m.d.comb += z[j].eq(round_saturate8(products[j], shift))
        else:
            for j in range(V):
                m.d.comb += z[j].eq(requantize(sums[j], mult, shift))
        with m.If(gemm & p_valid):
            m.d.comb += out.s_we.eq(1)
            with m.If(p_last):
                m.d.comb += out.fin.eq(1)
        m.d.comb += [out.s_addr.eq(Mux(fused, p_addr, o_addr)), out.s_data.eq(Mux(fused, z, y))]
        return fused


class VectorPath(wiring.Component):
    """The decode top level's vector instructions (RMSNORM, LAYERNORM, ROPE, RESIDUAL_ADD,
    ACTIVATION, MULTIPLY, ARGMAX) as commands and operand beats of a :class:`hdl.vector.VectorUnit`
    (docs/top.md, "Vector instructions").

    Parameters (keyword-only): ``lanes`` (V), ``head_dim``, ``max_length``, ``max_context``,
    ``act_tables`` (the vector unit's), ``fused_rope`` and ``fused_swiglu`` (``Config``'s),
    ``addr_bits`` (scratchpad and logits word addresses).

    Ports
    -----
    Sequencer: ``decode`` (the sequencer decodes ``raw`` this cycle: a vector instruction latches
    its operand addresses ``src0``, ``src1``, ``dst``, row offsets included, and its beat count),
    ``issue`` (the command cycle, VCMD), ``run`` (the beats, VRUN), ``ins`` (the running instruction),
    ``position`` (its row's, for ROPE). ``again`` asks for another command cycle (an unfused ROPE's next
    head); ``fin`` marks the instruction's last cycle.
    Memories, data one cycle after the address, read while ``rd_en``: the scratchpad through
    ``a_addr``/``a_data`` (x) and ``b_addr``/``b_data`` (y), the logits buffer at ``a_addr``
    (``l_data``, ARGMAX), the parameter memory's two ports at ``g_addr``/``p1_data`` (gamma) and
    ``be_addr``/``p2_data`` (beta). The instruction's scalars are the two parameter words the
    sequencer read in DECODE (``p1_data``, ``p2_data`` in the command cycle), latched at the first
    command; with ``scalar_register`` (``Config.vector_scalar_register``) in the ``latch`` cycle before
    it (VLATCH: ``p1_data``, ``p2_data`` then), so the command's scalars come from a register.
    Results: ``s_we``/``s_addr``/``s_data`` (a word to the scratchpad), ``token_valid``/``token``
    (ARGMAX). Streams ``cmd``, ``inp`` (out) and ``out`` (in) join the vector unit's.
    """

    @checked_constructor
    def __init__(self, *, lanes: int, head_dim: int, max_length: int, max_context: int, act_tables: int,
                 fused_rope: bool = False, fused_swiglu: bool = False, scalar_register: bool = False,
                 addr_bits: int = 16):
        self.lanes = check_positive_int("lanes", lanes)
        self.scalar_register = bool(scalar_register)
        self.head_dim = check_positive_int("head_dim", head_dim)
        self.max_length = check_positive_int("max_length", max_length)
        self.fused_rope, self.fused_swiglu = bool(fused_rope), bool(fused_swiglu)
        V, AB = lanes, check_positive_int("addr_bits", addr_bits)
        extra = {"latch": In(1)} if scalar_register else {}
        super().__init__({
            **extra,
            "decode": In(1),
            "issue": In(1),
            "run": In(1),
            "raw": In(instruction_layout()),
            "ins": In(instruction_layout()),
            "position": In(range(max_context)),
            "src0": In(AB),
            "src1": In(AB),
            "dst": In(AB),
            "p1_data": In(32 * V),
            "p2_data": In(32 * V),
            "a_data": In(8 * V),
            "b_data": In(8 * V),
            "l_data": In(32 * V),
            "rd_en": Out(1),
            "a_addr": Out(AB),
            "b_addr": Out(AB),
            "g_addr": Out(24),
            "be_addr": Out(24),
            "s_we": Out(1),
            "s_addr": Out(AB),
            "s_data": Out(8 * V),
            "token_valid": Out(1),
            "token": Out(16),
            "again": Out(1),
            "fin": Out(1),
            "cmd": Out(stream.Signature(cmd_layout(max_length, max_context, act_tables))),
            "inp": Out(stream.Signature(in_layout(V))),
            "out": In(stream.Signature(out_layout(V, max_length))),
        })

    def elaborate(self, platform):
        m = Module()
        V = self.lanes
        lg = V.bit_length() - 1
        HW = self.head_dim // V
        raw, ins = self.raw, self.ins
        op = ins.opcode
        is_norm = (op == Opcode.RMSNORM) | (op == Opcode.LAYERNORM)
        is_rope = op == Opcode.ROPE
        is_argmax = op == Opcode.ARGMAX

        def words(x):
            return (x + (V - 1)) >> lg

        # Scalars: the two parameter words read in DECODE, latched at the first command (or, with
        # scalar_register, in the latch cycle before it, so the command reads a register).
        live = Cat(self.p1_data, self.p2_data)
        sc = Signal(SCALAR_WORDS * 32 * V)
        sc_valid = Signal()
        latched = self.scalar_register
        s = data.View(data.ArrayLayout(unsigned(32), SCALAR_WORDS * V), sc if latched else Mux(sc_valid, sc, live))
        s_addr, b_addr, d_addr = Signal.like(self.a_addr), Signal.like(self.b_addr), Signal.like(self.s_addr)
        heads = Signal(16)
        nw = Signal(16)                  # words of one pass
        f_valid = Signal()
        f_left = Signal(16)
        f_beat = Signal(16)
        g_addr = Signal(24)              # gamma (pass 2, port P1)
        be_addr = Signal(24)             # beta (pass 2, port P2)
        pw = Signal(24)                  # the record's first word (param >> lg), registered in DECODE
        addressed = Signal()             # the cycle after DECODE: gamma's and beta's addresses are set
        # gamma's and beta's first addresses, pw + nw and pw + 2 * nw, are set the cycle after DECODE
        # from registers (not from the program memory's read data through two adders in DECODE: the
        # ULX3S build's slowest routed path): they are first read in a norm's second pass.
        m.d.sync += addressed.eq(self.decode)
        with m.If(addressed):
            m.d.sync += [g_addr.eq(_plus(pw, _LN.channel_word("gamma", nw))),
                         be_addr.eq(_plus(pw, _LN.channel_word("beta", nw)))]
        with m.If(self.decode):
            r_nw = words(raw.length)
            r_pw = raw.param >> lg
            # fused_rope: one command takes every head's words; else one command (HW words) a head.
            rope_beats = r_nw if self.fused_rope else HW
            beats = Mux((raw.opcode == Opcode.RMSNORM) | (raw.opcode == Opcode.LAYERNORM), 2 * r_nw,
                        Mux(raw.opcode == Opcode.ROPE, rope_beats, r_nw))
            # The feeder's first read is in the command cycle, not in DECODE.
            m.d.sync += [sc_valid.eq(0), heads.eq(Mux(raw.opcode == Opcode.ROPE, raw.count, 1)), nw.eq(r_nw),
                         f_valid.eq(0), f_left.eq(beats), f_beat.eq(0), pw.eq(r_pw),
                         s_addr.eq(self.src0), b_addr.eq(self.src1), d_addr.eq(self.dst)]

        self._command(m, ins, s)
        m.d.comb += self.cmd.valid.eq(self.issue)
        if latched:
            with m.If(self.latch):
                m.d.sync += sc.eq(live)
        else:
            with m.If(self.issue):
                m.d.sync += sc_valid.eq(1)
                with m.If(~sc_valid):
                    m.d.sync += sc.eq(live)

        # The operand feeder: one beat a cycle from the scratchpad (x, a; b), the parameter memory
        # (gamma; beta) or the logits buffer; the read ports' output registers hold the beat.
        feeding = self.issue | self.run
        adv = ~f_valid | self.inp.ready
        phase2 = is_norm & (f_beat >= nw)
        m.d.comb += [self.a_addr.eq(s_addr), self.b_addr.eq(b_addr), self.g_addr.eq(g_addr),
                     self.be_addr.eq(be_addr), self.rd_en.eq(adv), self.s_addr.eq(d_addr)]
        # The beat's phase (gamma and beta, or x and b), a copy a lane (hdl.fanout): it selects
        # every bit of the lane's operands.
        f_phase = ring_copies(m, V, feeding & adv & (f_left != 0), phase2, shape=1, name="f_phase")
        # ARGMAX's logits in place of x, a copy a lane too (equal to is_argmax: ins loads raw in DECODE).
        lane_argmax = ring_copies(m, V, self.decode, raw.opcode == Opcode.ARGMAX, shape=1, name="lane_argmax")
        with m.If(feeding & adv):
            m.d.sync += f_valid.eq(f_left != 0)
            with m.If(f_left != 0):
                m.d.sync += [f_left.eq(f_left - 1), f_beat.eq(f_beat + 1)]
                with m.If(phase2):
                    m.d.sync += [g_addr.eq(g_addr + 1), be_addr.eq(be_addr + 1)]
                with m.Else():
                    m.d.sync += [s_addr.eq(s_addr + 1), b_addr.eq(b_addr + 1)]
        xa = data.View(data.ArrayLayout(signed(8), V), self.a_data)
        xb = data.View(data.ArrayLayout(signed(8), V), self.b_data)
        lg32 = data.View(data.ArrayLayout(signed(32), V), self.l_data)
        gam = data.View(data.ArrayLayout(signed(32), V), self.p1_data)
        bet = data.View(data.ArrayLayout(signed(32), V), self.p2_data)
        m.d.comb += [self.inp.valid.eq(f_valid & self.run), self.out.ready.eq(1)]
        for i in range(V):
            lane = self.inp.payload[i]
            m.d.comb += [lane.a.eq(Mux(lane_argmax[i], lg32[i], Mux(f_phase[i], bet[i], xa[i]))),
                         lane.b.eq(Mux(f_phase[i], gam[i], xb[i])), lane.shift.eq(0)]

        # Results: written back one word a cycle; ARGMAX's one beat carries the token.
        m.d.comb += [self.s_data.eq(self.out.payload.data), self.token.eq(self.out.payload.index)]
        with m.If(self.run & self.out.valid):
            with m.If(is_argmax):
                m.d.comb += self.token_valid.eq(1)
            with m.Else():
                m.d.comb += self.s_we.eq(1)
                m.d.sync += d_addr.eq(d_addr + 1)
            with m.If(self.out.payload.last):
                if self.fused_rope:
                    m.d.comb += self.fin.eq(1)
                else:
                    with m.If(is_rope & (heads != 1)):
                        m.d.comb += self.again.eq(1)
                        m.d.sync += [heads.eq(heads - 1), f_left.eq(HW), f_beat.eq(0)]
                    with m.Else():
                        m.d.comb += self.fin.eq(1)
        return m

    def _command(self, m, ins, s):
        """The vector unit's command for the running instruction ``ins``, its scalars ``s``."""
        op = ins.opcode
        is_norm = (op == Opcode.RMSNORM) | (op == Opcode.LAYERNORM)
        is_rope = op == Opcode.ROPE
        ix, norms, add = scalar_index, (Opcode.RMSNORM, Opcode.LAYERNORM), Opcode.RESIDUAL_ADD
        others = (Opcode.ROPE, Opcode.MULTIPLY)
        # The command. fused_swiglu: a MULTIPLY with the ACTIVATION flag is one SILU_MUL command.
        swiglu = (op == Opcode.MULTIPLY) & ((ins.flags & MultiplyFlags.ACTIVATION.value) != 0) \
            if self.fused_swiglu else 0
        vop = Mux(op == Opcode.RMSNORM, VectorOp.RMSNORM,
              Mux(op == Opcode.LAYERNORM, VectorOp.LAYERNORM,
              Mux(is_rope, VectorOp.ROPE,
              Mux(op == Opcode.RESIDUAL_ADD, VectorOp.ADD,
              Mux(swiglu, VectorOp.SILU_MUL,
              Mux(op == Opcode.MULTIPLY, VectorOp.MUL,
              Mux(op == Opcode.ACTIVATION, VectorOp.SILU, VectorOp.ARGMAX)))))))
        is_add = op == Opcode.RESIDUAL_ADD
        cmd = self.cmd.payload
        m.d.comb += [
            cmd.op.eq(vop),
            cmd.length.eq(Mux(is_rope, self.head_dim, ins.length)),
            cmd.mult.eq(Mux(is_norm, s[ix("out_mult", *norms)],
                            Mux(is_add, s[ix("mult", add)], s[ix("mult", *others)]))[:MULT_BITS]),
            cmd.shift.eq(Mux(is_norm, s[ix("out_shift", *norms)],
                             Mux(is_add, s[ix("shift", add)], s[ix("shift", *others)]))[:SHIFT_BITS]),
            cmd.a_mult.eq(s[ix("a_mult", add)][:MULT_BITS]), cmd.b_mult.eq(s[ix("b_mult", add)][:MULT_BITS]),
            cmd.inv_mult.eq(s[ix("inv_mult", Opcode.LAYERNORM)][:MULT_BITS]),
            cmd.inv_shift.eq(s[ix("inv_shift", Opcode.LAYERNORM)][:SHIFT_BITS]),
            cmd.eps.eq(s[ix("eps", *norms)][:31]), cmd.position.eq(self.position),
            # ACTIVATION's table (and a fused SwiGLU MULTIPLY's), loaded by the host once per run (the
            # compiler keeps it < act_tables); 0 for the other ops, so no table read ever leaves the memory.
            cmd.table.eq(Mux((op == Opcode.ACTIVATION) | swiglu, ins.count, 0)),
        ]
        if self.fused_rope:
            # Every head of the instruction in one command; with SPLIT the last heads_b at mult_b/shift_b.
            split = is_rope & ((ins.flags & RopeFlags.SPLIT.value) != 0)
            rope = (Opcode.ROPE,)
            m.d.comb += [cmd.heads.eq(Mux(is_rope, ins.count, 1)),
                         cmd.heads_b.eq(Mux(split, s[ix("heads_b", *rope)], 0)),
                         cmd.mult_b.eq(s[ix("mult_b", *rope)][:MULT_BITS]),
                         cmd.shift_b.eq(s[ix("shift_b", *rope)][:SHIFT_BITS])]
