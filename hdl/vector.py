"""The vector unit: norms, activations, element-wise ops, RoPE, requantization and argmax.

One component, one opcode (:class:`VectorOp`), bit-exact with :mod:`golden.vector` and
:func:`golden.numerics.requantize`. A command arrives on the ``cmd`` stream; its operands stream
in on ``inp`` (``lanes`` elements per beat), its results stream out on ``out``. One command runs
at a time. Timing is fixed by the shape alone (:func:`sim.machine.cycles.vector_cycles`): a command
issues one beat per cycle in each of its passes, every beat crosses the same four-stage pipeline
(seven with ``product_register``: the memories' read data registered before stage A, stage A's
lane products before their sums, the output stage's product before its shift), and the whole
pipeline stalls together when ``out`` is back-pressured.

Passes, per opcode (W = ceil(length / lanes) beats per pass):

* REQUANT, ADD, MUL, SILU, GELU, SILU_MUL: one pass of W input beats, W output beats. SILU and
  GELU are one datapath: a lookup in the activation table the command's ``table`` field names (the
  host loads each table once; the two names say what the table computes). SILU_MUL looks ``a`` up
  in that table and multiplies the entry by ``b`` as MUL does (SwiGLU's ``silu(gate) * up`` in one
  pass).
* ARGMAX: one pass of W input beats, one output beat carrying the index.
* RMSNORM, LAYERNORM: pass 1 takes W beats of ``x`` into the row buffer and sums ``x`` and
  ``x*x``; a fixed chain of :data:`NORM_STATS_CYCLES` cycles turns the sums into the mean, the
  reciprocal square root and its exponent; pass 2 takes W beats of ``gamma`` (and ``beta``),
  reads ``x`` back from the buffer and sends W output beats.
* ROPE: pass 1 takes W beats of one head into the buffer; pass 2 reads lane j and its partner
  j +- head_dim/2 together (two read ports) and sends W output beats. A command of ``heads`` > 1
  heads (W = head_dim / lanes each, ``length`` = head_dim) runs the two passes once per head, back
  to back; its last ``heads_b`` heads requantize with ``mult_b``/``shift_b`` (q and k of one
  instruction, each at its own scale).

The LayerNorm centred sums use the exact integer identities ``sum (x - mu) = s - N*mu`` and
``sum (x - mu)^2 = q0 - 2*mu*s + N*mu^2`` (s = sum x, q0 = sum x*x), so one statistics pass
gives what golden computes in two.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.errors import InputError
from golden.numerics import MULT_BITS, SHIFT_BITS, ceil_div
from golden.tables import RSQRT_INDEX_SHIFT, RSQRT_TABLE_SIZE, rsqrt_table
from golden.vector import NORM_MAX_LEN, NORM_MEAN_FRAC_BITS

from .arith import product, round_saturate8, round_shift
from .config import ACT_TABLE_SIZE, MAX_ACT_TABLES, UNIT_CYCLE_BITS, check_positive_int, checked_constructor
from .fanout import follower_copies, ring_copies

__all__ = [
    "ACT_TABLE_SIZE", "LAYER_STATS_EXTRA", "MAX_LANES", "NORM_STATS_CYCLES", "PIPELINE_STAGES",
    "PRODUCT_REGISTER_NORM_SETTLE", "PRODUCT_REGISTER_STAGES", "VECTOR_OP_NAMES", "VectorOp", "VectorTable",
    "NormStatistics", "VectorUnit", "cmd_layout", "in_layout", "lane_layout", "out_layout", "rope_word_layout",
]

#: Most lanes a vector unit may have.
MAX_LANES = 64
#: Registers a beat crosses from its issue to the output register (operands, stage A, stage B, out).
PIPELINE_STAGES = 4
#: Cycles from a norm's final sums to the first issue of its second pass (the statistics chain).
NORM_STATS_CYCLES = 8
#: Registers ``product_register`` adds to the pipeline: stage M (the memories' read data before
#: stage A), between stage A's lane products and their sums, and between the output stage's
#: requantization product and its rounding shift.
PRODUCT_REGISTER_STAGES = 3
#: Cycles ``product_register`` adds before a norm's running sums are final (stage M lies ahead of
#: the stage that takes them), so before its second pass.
PRODUCT_REGISTER_NORM_SETTLE = 1
#: Cycles ``product_register`` adds to LayerNorm's statistics chain (its mean's product registered
#: before its shift, N * mu before e and N * mu^2); RMSNorm's chain keeps NORM_STATS_CYCLES.
LAYER_STATS_EXTRA = 2
_ACC_BITS = 32


class VectorOp(enum.Enum, shape=unsigned(4)):
    """The vector unit's opcodes (see the module docstring for each one's passes)."""
    REQUANT = 0
    ADD = 1
    MUL = 2
    SILU = 3
    GELU = 4
    ARGMAX = 5
    RMSNORM = 6
    LAYERNORM = 7
    ROPE = 8
    #: SwiGLU's gate in one pass: ``requantize(table[a + 128] * b, mult, shift)``, bit-exact with
    #: SILU (or GELU: any table) followed by MUL.
    SILU_MUL = 9


#: The op names the host side and the cycle model use: each VectorOp's name in lower case.
VECTOR_OP_NAMES = tuple(op.name.lower() for op in VectorOp)


class VectorTable(enum.Enum, shape=unsigned(1)):
    """Which run-time loadable table memory the table write port addresses."""
    #: The activation tables: entry ``table * ACT_TABLE_SIZE + x + 128`` (one int8).
    ACT = 0
    #: The RoPE cos/sin table: one word of :func:`rope_word_layout`.
    ROPE = 1


def lane_layout() -> data.StructLayout:
    """One input lane: ``a`` (int32 or int8 in its low bits), ``b`` (int8 or a u15 multiplier),
    ``shift`` (a requantization shift)."""
    return data.StructLayout({"a": signed(_ACC_BITS), "b": signed(16), "shift": unsigned(SHIFT_BITS)})


def in_layout(lanes: int) -> data.ArrayLayout:
    return data.ArrayLayout(lane_layout(), lanes)


def _index_shape(max_length: int):
    return unsigned(max(1, (max_length - 1).bit_length()))


def out_layout(lanes: int, max_length: int) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(signed(8), lanes), "index": _index_shape(max_length),
                              "last": unsigned(1)})


def _table_shape(act_tables: int):
    return unsigned(max(1, (act_tables - 1).bit_length()))


def cmd_layout(max_length: int, max_context: int, act_tables: int) -> data.StructLayout:
    return data.StructLayout({
        "op": VectorOp,
        "length": range(max_length + 1),
        "mult": unsigned(MULT_BITS),
        "shift": unsigned(SHIFT_BITS),
        "a_mult": unsigned(MULT_BITS),
        "b_mult": unsigned(MULT_BITS),
        "inv_mult": unsigned(MULT_BITS),
        "inv_shift": unsigned(SHIFT_BITS),
        "eps": unsigned(31),
        "position": range(max_context),
        "table": _table_shape(act_tables),
        # ROPE only: heads rotated one after another (0 or 1: one), and the last heads_b of them
        # requantized with mult_b / shift_b instead of mult / shift.
        "heads": range(max_length + 1),
        "heads_b": range(max_length + 1),
        "mult_b": unsigned(MULT_BITS),
        "shift_b": unsigned(SHIFT_BITS),
    })


def rope_word_layout(lanes: int) -> data.StructLayout:
    return data.StructLayout({"cos": data.ArrayLayout(signed(16), lanes), "sin": data.ArrayLayout(signed(16), lanes)})





class VectorUnit(wiring.Component):
    """The vector unit (see the module docstring and docs/vector_unit.md).

    Parameters (keyword-only; TypeError / ValueError name the parameter and its value)
    ----------
    lanes: elements per beat, 1 .. 64.
    max_length: longest vector of any command.
    max_norm_length: longest norm row (the row buffer), at most max_length and 32768.
    max_head_dim: longest RoPE head, a multiple of 2 * lanes and at most max_length.
    max_context: positions of the RoPE table.
    act_tables: activation tables (256 int8 entries each) the table memory holds, 1 .. 256.
    fabric_products: each lane's two products (shared by the opcodes: MUL and SILU_MUL, the norm's
    x * x, ADD's two scaled terms, RoPE's x * cos and x * sin) built from adders
    (:func:`hdl.arith.fabric_product`) instead of two hard multipliers.
    product_register: FPGA timing cuts: a register (stage M) on the memories' read data (the row
    buffer, the RoPE table, the activation tables) before stage A's products, one between stage A's
    lane products (the norms' ``d * r`` among them) and their sums, rounding shift and opcode
    choice, and one between the output stage's requantization product and its rounding shift and
    saturation: every beat crosses :data:`PRODUCT_REGISTER_STAGES` (3) more stages, so every
    command takes three cycles more, and a norm's second pass starts
    :data:`PRODUCT_REGISTER_NORM_SETTLE` (1) cycle later (its running sums are taken in stage A's
    second cycle, one stage M later than without the key).
    layernorm: LayerNorm built (the default): the statistics chain's mean and centred sums and each
    lane's centring and bias. False builds RMSNorm alone (``Config.layernorm``): a LAYERNORM
    command then runs as an RMSNorm, so the compiler refuses a model with a LayerNorm on such a
    design (:func:`sim.runtime.prepare`).

    Ports
    -----
    ``cmd`` (in stream of :func:`cmd_layout`): taken only while idle (``busy`` low).
    ``inp`` (in stream of ``lanes`` x :func:`lane_layout`): the command's operand beats, in
    order; lanes past ``length`` in the final beat of a pass are ignored.
    ``out`` (out stream of :func:`out_layout`): result beats; lanes past ``length`` read 0;
    ``last`` marks the command's final beat; ARGMAX sends one beat whose ``index`` is the result.
    ``busy``: from the cycle after ``cmd`` is taken until the cycle after the last beat is taken.
    ``cycles``: clock cycles of the last command, from the cycle ``cmd`` was taken to the cycle its
    last beat was taken, both counted.
    ``tbl_we``/``tbl_sel``/``tbl_addr``/``tbl_data``: write one entry of a loadable table (ACT: an
    int8 at address ``table * 256 + x + 128``; ROPE: one word of :func:`rope_word_layout` at address
    ``position * rope_stride + pair_word``). Meant for idle time. SILU and GELU commands read table
    ``cmd.table``, which must be below ``act_tables``.
    """

    @checked_constructor
    def __init__(self, *, lanes: int, max_length: int, max_norm_length: int, max_head_dim: int,
                 max_context: int, act_tables: int, fabric_products: bool = False, product_register: bool = False,
                 layernorm: bool = True):
        self.fabric_products = bool(fabric_products)
        self.product_register = bool(product_register)
        self.layernorm = bool(layernorm)
        self.lanes = check_positive_int("vector unit lanes", lanes)
        if lanes > MAX_LANES:
            raise InputError(f"vector unit lanes must be at most {MAX_LANES}, not {lanes}")
        self.max_length = check_positive_int("vector unit max_length", max_length)
        self.max_norm_length = check_positive_int("vector unit max_norm_length", max_norm_length)
        if max_norm_length > min(max_length, NORM_MAX_LEN):
            raise InputError(f"vector unit max_norm_length must be at most max_length ({max_length}) and "
                             f"{NORM_MAX_LEN}, not {max_norm_length}")
        self.max_head_dim = check_positive_int("vector unit max_head_dim", max_head_dim)
        if max_head_dim % (2 * lanes):
            raise InputError(f"vector unit max_head_dim must be a multiple of 2 * lanes ({2 * lanes}), "
                             f"not {max_head_dim}")
        if max_head_dim > max_length:
            raise InputError(f"vector unit max_head_dim must be at most max_length ({max_length}), "
                             f"not {max_head_dim}")
        self.max_context = check_positive_int("vector unit max_context", max_context)
        self.act_tables = check_positive_int("vector unit act_tables", act_tables)
        if act_tables > MAX_ACT_TABLES:
            raise InputError(f"vector unit act_tables must be at most {MAX_ACT_TABLES}, not {act_tables}")
        super().__init__({
            "cmd": In(stream.Signature(cmd_layout(max_length, max_context, act_tables))),
            "inp": In(stream.Signature(in_layout(lanes))),
            "out": Out(stream.Signature(out_layout(lanes, max_length))),
            "busy": Out(1),
            "cycles": Out(self.cycle_counter_bits),
            "tbl_we": In(1),
            "tbl_sel": In(VectorTable),
            "tbl_addr": In(self.table_addr_bits),
            "tbl_data": In(32 * lanes),
        })

    # --- derived sizes ------------------------------------------------------------------------

    cycle_counter_bits = UNIT_CYCLE_BITS

    @property
    def rope_stride(self) -> int:
        """Words per position in the RoPE table: max_head_dim / (2 * lanes)."""
        return self.max_head_dim // (2 * self.lanes)

    @property
    def rope_words(self) -> int:
        return self.max_context * self.rope_stride

    @property
    def buffer_words(self) -> int:
        return ceil_div(max(self.max_norm_length, self.max_head_dim), self.lanes)

    @property
    def act_entries(self) -> int:
        """Depth of the activation table memory: act_tables x 256 int8 entries."""
        return self.act_tables * ACT_TABLE_SIZE

    @property
    def table_addr_bits(self) -> int:
        return max((self.act_entries - 1).bit_length(), (self.rope_words - 1).bit_length())

    @property
    def params(self) -> dict:
        return {"lanes": self.lanes, "max_length": self.max_length, "max_norm_length": self.max_norm_length,
                "max_head_dim": self.max_head_dim, "max_context": self.max_context, "act_tables": self.act_tables}

    # --- hardware -----------------------------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        L = self.lanes

        m.submodules.act_mem = act_mem = memory.Memory(shape=signed(8), depth=self.act_entries, init=[])
        m.submodules.rope_mem = rope_mem = memory.Memory(shape=rope_word_layout(L), depth=self.rope_words,
                                                         init=[])
        m.submodules.buf = buf = memory.Memory(shape=data.ArrayLayout(signed(8), L), depth=self.buffer_words,
                                               init=[])
        self._table_writes(m, act_mem, rope_mem)

        # --- command -------------------------------------------------------------------------
        busy = Signal()
        c = Signal(cmd_layout(self.max_length, self.max_context, self.act_tables))
        cmd_fire = Signal()
        m.d.comb += [self.cmd.ready.eq(~busy), cmd_fire.eq(self.cmd.valid & ~busy), self.busy.eq(busy)]
        op = _Decoded(m, c.op, layernorm=self.layernorm)
        lane_ops = self._lane_opcodes(m, cmd_fire)

        # The norms' statistics chain: free-running registers, stable once the sums are.
        m.submodules.stats = stats = NormStatistics(max_length=self.max_length, product_register=self.product_register,
                                                          lanes=L)
        s_sum = Signal(signed(32))
        q_sum = Signal(unsigned(32))
        m.d.comb += [stats.s_sum.eq(s_sum), stats.q_sum.eq(q_sum), stats.length.eq(c.length),
                     stats.inv_mult.eq(c.inv_mult), stats.inv_shift.eq(c.inv_shift), stats.eps.eq(c.eps),
                     stats.layer.eq(op.is_layer)]

        slot = self._issue(m, c, op, busy, cmd_fire, stats.go)
        buf_ra, buf_rb, rope_r, act_data = self._reads(m, buf, act_mem, rope_mem, c, op, slot)

        # --- stage 1: operands ---------------------------------------------------------------
        en = slot.en
        p1 = _Stage("p1", L, self.max_length)
        p1_in = Signal(in_layout(L))
        with m.If(en):
            m.d.sync += [p1.valid.eq(slot.issue), p1.final.eq(slot.final), p1.pass2.eq(slot.pass2),
                         p1.mask.eq(slot.mask), p1.second.eq(slot.second), p1.first.eq(slot.w == 0),
                         p1.s1_end.eq(slot.s1_end), p1.base.eq(slot.base), p1.bsel.eq(slot.bsel),
                         p1_in.eq(self.inp.payload)]

        reads = (buf_ra.data, buf_rb.data, rope_r.data, act_data)
        if self.product_register:
            # Stage M: the memories' read data registered before stage A's products (a block RAM's
            # clock-to-data is ~5 ns of an ECP5's 19 ns at 53 MHz), the beat's control with it.
            pm = _Stage("pm", L, self.max_length)
            pm_in = Signal(in_layout(L))
            held = (Signal(buf.shape, name="pm_buf_a"), Signal(buf.shape, name="pm_buf_b"),
                    Signal(rope_word_layout(L), name="pm_rope"),
                    [Signal(signed(8), name=f"pm_act_{i}") for i in range(L)])
            with m.If(en):
                m.d.sync += [*pm.copy(p1), pm_in.eq(p1_in), held[0].eq(reads[0]), held[1].eq(reads[1]),
                             held[2].eq(reads[2]), *(h.eq(a) for h, a in zip(held[3], reads[3], strict=True))]
            p1, p1_in, reads = pm, pm_in, held
        p2, stage2 = self._products(m, c, op, lane_ops, en, p1, p1_in, *reads, stats, s_sum, q_sum)
        p3, stage3 = self._scale(m, op, lane_ops, en, p2, stage2, s_sum, q_sum, stats)

        # --- stage 4: requantize into the output register --------------------------------------
        acc3, mult3, shift3, act3, idx3 = stage3
        ctl, prods, shifts, acts, idx = p3, [acc3[i] * mult3[i] for i in range(L)], shift3, act3, idx3
        if self.product_register:
            # The requantization's product registered before its rounding shift and saturation.
            ctl = _Stage("pq", L, self.max_length)
            held = [Signal(prods[i].shape(), name=f"pq_prod_{i}") for i in range(L)]
            held_shifts = [Signal.like(shift3[i], name=f"pq_shift_{i}") for i in range(L)]
            held_acts = [Signal.like(act3[i], name=f"pq_act_{i}") for i in range(L)]
            held_idx = Signal.like(idx3, name="pq_idx")
            with m.If(en):
                m.d.sync += [*ctl.copy(p3), held_idx.eq(idx3)]
                m.d.sync += [h.eq(v) for h, v in zip(held + held_shifts + held_acts, prods + shifts + acts,
                                                     strict=True)]
            prods, shifts, acts, idx = held, held_shifts, held_acts, held_idx
        emits = Mux(op.two_pass, ctl.pass2, Mux(op.is_argmax, ctl.final, 1))
        with m.If(en):
            m.d.sync += [self.out.valid.eq(ctl.valid & emits), self.out.payload.last.eq(ctl.final),
                         self.out.payload.index.eq(idx)]
            for i in range(L):
                # requantize(acc3, mult3, shift3), its product possibly registered.
                y = Mux(lane_ops[i].is_act, acts[i], round_saturate8(prods[i], shifts[i]))
                m.d.sync += self.out.payload.data[i].eq(Mux(ctl.mask[i], y, 0))

        # --- completion and the cycle counter ------------------------------------------------------
        with m.If(cmd_fire):
            m.d.sync += self.cycles.eq(1)
        with m.Elif(busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.If(self.out.valid & self.out.ready & self.out.payload.last):
            m.d.sync += busy.eq(0)
        return m

    def _lane_opcodes(self, m, cmd_fire):
        """Each lane's own copy of the running opcode, decoded in the lane (a :class:`_Decoded` a lane).

        One decoded opcode for all lanes would select hundreds of LUT inputs across the lanes'
        multiplexers (:mod:`hdl.fanout`). The copies equal ``c.op`` at every cycle (they load the
        command's opcode when ``c`` does), so no cycle and no bit changes: the lanes' datapath
        multiplexers read the copies, the issue and pipeline control read the one decode of ``c.op``."""
        copies = ring_copies(m, self.lanes, cmd_fire, self.cmd.payload.op, shape=VectorOp, name="lane_op")
        return [_Decoded(m, copy, prefix=f"lane{i}_", layernorm=self.layernorm) for i, copy in enumerate(copies)]

    def _table_writes(self, m, act_mem, rope_mem):
        """The table write port: one entry of the activation tables or of the RoPE table."""
        act_w = act_mem.write_port()
        rope_w = rope_mem.write_port()
        sel = self.tbl_sel
        m.d.comb += [
            act_w.addr.eq(self.tbl_addr),
            act_w.data.eq(self.tbl_data[:8]),
            act_w.en.eq(self.tbl_we & (sel == VectorTable.ACT)),
            rope_w.addr.eq(self.tbl_addr),
            rope_w.data.as_value().eq(self.tbl_data),
            rope_w.en.eq(self.tbl_we & (sel == VectorTable.ROPE)),
        ]

    def _issue(self, m, c, op, busy, cmd_fire, stats_go):
        """The issue slot: one beat per cycle while the pass lasts and the pipeline moves.

        Takes the command on ``cmd_fire``; returns the slot's control (a :class:`_Slot`)."""
        L = self.lanes
        words = ceil_div(self.max_length, L)
        en = Signal()        # the whole pipeline advances together
        issuing = Signal()
        pass2 = Signal()
        remaining = Signal(range(self.max_length + 1))
        w = Signal(range(words + 2))
        base = Signal(range(self.max_length + 2 * L))
        hw = Signal(range(words + 1))     # RoPE: words per half head
        needs_input = Signal()
        issue = Signal()
        last_of_pass = Signal()
        heads_left = Signal(range(self.max_length + 1))   # RoPE: heads still to rotate, this one included
        more_heads = Signal()
        bsel = Signal()       # RoPE: this head requantizes with mult_b / shift_b
        m.d.comb += [
            en.eq(~self.out.valid | self.out.ready),
            needs_input.eq(~pass2 | op.is_norm),
            self.inp.ready.eq(issuing & en & needs_input),
            issue.eq(issuing & en & (~needs_input | self.inp.valid)),
            last_of_pass.eq(remaining <= L),
            more_heads.eq(op.is_rope & (heads_left > 1)),
            bsel.eq(op.is_rope & (heads_left <= c.heads_b)),
        ]
        with m.If(cmd_fire):
            m.d.sync += [busy.eq(1), c.eq(self.cmd.payload), issuing.eq(1), pass2.eq(0),
                         remaining.eq(self.cmd.payload.length), w.eq(0), base.eq(0),
                         heads_left.eq(Mux(self.cmd.payload.heads == 0, 1, self.cmd.payload.heads))]
        with m.Elif(issue):
            m.d.sync += [w.eq(w + 1), base.eq(base + L), remaining.eq(remaining - L)]
            with m.If(last_of_pass):
                m.d.sync += [remaining.eq(c.length), w.eq(0), base.eq(0)]
                with m.If(op.two_pass & ~pass2):
                    m.d.sync += [pass2.eq(1), hw.eq((w + 1) >> 1)]
                    # A norm waits for its statistics; RoPE goes straight on to its second pass.
                    m.d.sync += issuing.eq(op.is_rope)
                with m.Elif(more_heads):
                    # RoPE's next head: its first pass follows at once (this head's reads are done).
                    m.d.sync += [pass2.eq(0), heads_left.eq(heads_left - 1)]
                with m.Else():
                    m.d.sync += issuing.eq(0)
        with m.Elif(stats_go):
            m.d.sync += issuing.eq(1)

        second = Signal()      # RoPE: this word lies in the second half of the head
        pair_word = Signal.like(w)
        partner = Signal.like(w)
        final = Signal()       # the command's final slot
        s1_end = Signal()      # a norm's final first-pass slot
        mask = Signal(L)
        m.d.comb += [
            second.eq(pass2 & op.is_rope & (w >= hw)),
            pair_word.eq(Mux(second, w - hw, w)),
            partner.eq(Mux(second, w - hw, w + hw)),
            final.eq(last_of_pass & (~op.two_pass | pass2) & ~more_heads),
            s1_end.eq(last_of_pass & op.is_norm & ~pass2),
            mask.eq(Cat(*[remaining > lane for lane in range(L)])),
        ]
        return _Slot(en=en, issue=issue, pass2=pass2, w=w, base=base, second=second, pair_word=pair_word,
                     partner=partner, final=final, s1_end=s1_end, mask=mask, bsel=bsel)

    def _reads(self, m, buf, act_mem, rope_mem, c, op, slot):
        """Memories read in the issue cycle; their data lines up with stage 1.

        Writes the first pass of a two-pass command into the row buffer; returns the row buffer's
        two read ports, the RoPE table's read port and each lane's activation table entry."""
        buf_w = buf.write_port()
        buf_ra = buf.read_port()
        buf_rb = buf.read_port()
        rope_r = rope_mem.read_port()
        en, w = slot.en, slot.w
        m.d.comb += [
            buf_w.addr.eq(w), buf_w.en.eq(slot.issue & ~slot.pass2 & op.two_pass),
            buf_ra.addr.eq(w), buf_ra.en.eq(en),
            buf_rb.addr.eq(slot.partner), buf_rb.en.eq(en),
            rope_r.addr.eq(c.position * self.rope_stride + slot.pair_word), rope_r.en.eq(en),
        ]
        act_data = []
        for lane in range(self.lanes):
            x = self.inp.payload[lane].a
            port = act_mem.read_port()
            m.d.comb += [
                buf_w.data[lane].eq(x[:8]),
                # Index x + 128 of an int8 is x with its sign bit flipped; the table is the command's.
                port.addr.eq(Cat(x[:7], ~x[7], c.table)), port.en.eq(en),
            ]
            act_data.append(port.data)
        return buf_ra, buf_rb, rope_r, act_data

    def _products(self, m, c, op, lane_ops, en, p1, p1_in, buf_a, buf_b, rope, act_data, stats, s_sum, q_sum):
        """Stage 2 (A): each lane's product or sum; a beat's sums for the norms; its argmax.

        In two steps: the lanes' products (A1), then their sums, the norms' rounding shift, the
        opcode's choice, the beat's sums and its argmax (A2). With ``product_register`` a register
        lies between the two (the products, the operands the stage passes on and the beat's
        control): the stage takes a cycle more, and the norms' running sums take the beat's sums in
        A2 (instead of stage B), so they are complete as early as without the register.

        Returns the stage's control and registers: (p2, (acc2, gamma2, beta2, mult2, shift2, act2,
        s_beat, q_beat, bmax, bidx))."""
        L = self.lanes
        mu, f, r = stats.mu, stats.f, stats.r
        # d = ((x - mu) << 8) - f as (x << 8) - ((mu << 8) + f): one subtractor after the
        # registered mf, the same value, in a signal of the first form's shape.
        d_shape = (((Const(0, signed(8)) - mu) << NORM_MEAN_FRAC_BITS) - f).shape()
        fab = self.fabric_products
        lanes = []
        for i in range(L):
            lop = lane_ops[i]
            lane = p1_in[i]
            a8 = lane.a[:8].as_signed()
            b8 = lane.b[:8].as_signed()
            bx = buf_a[i]
            bp = buf_b[i]
            d = Signal(d_shape, name=f"norm_d{i}")
            m.d.comb += d.eq((bx << NORM_MEAN_FRAC_BITS) - stats.mf)
            v = {"a": lane.a, "b": lane.b[:MULT_BITS], "shift": lane.shift, "act": act_data[i], "norm": d * r}
            # The lane's products are two, shared by the opcodes (each command uses at most two):
            # ADD's a_mult * a and b_mult * b, MUL's and SILU_MUL's x * b, RoPE's cos * x and
            # sin * x', the norms' x * x. Hard multipliers, or built from adders with ``fabric_products``.
            a1, b1, a2, b2 = _shared_operands(lop, c, a8, b8, act_data[i],
                                              rope.cos[i], rope.sin[i], bx, bp)
            v.update(shared1=product(a1, b1, fabric=fab), shared2=product(a2, b2, fabric=fab))
            lanes.append(v)
        ctl = p1
        # The beat's argmax candidates: (value, lane, live).
        cands = [(p1_in[i].a, Const(i, range(L)), p1.mask[i]) for i in range(L)]
        if self.product_register:
            ctl = _Stage("pa", L, self.max_length)
            held = [{name: Signal(value.shape(), name=f"pa_{name}_{i}") for name, value in v.items()}
                    for i, v in enumerate(lanes)]
            # The argmax's comparison tree: its first level in A1, the rest in A2.
            cands = _argmax_level(cands)
            held_cands = [(Signal(signed(_ACC_BITS), name=f"pa_max_{j}"), Signal(range(L), name=f"pa_idx_{j}"),
                           Signal(name=f"pa_live_{j}")) for j in range(len(cands))]
            with m.If(en):
                m.d.sync += ctl.copy(p1)
                for v, h in zip(lanes, held, strict=True):
                    m.d.sync += [h[name].eq(value) for name, value in v.items()]
                for cand, h in zip(cands, held_cands, strict=True):
                    m.d.sync += [h[0].eq(cand[0]), h[1].eq(cand[1]), h[2].eq(cand[2])]
            lanes, cands = held, held_cands
        return self._lane_sums(m, c, op, lane_ops, en, ctl, lanes, cands, stats, s_sum, q_sum)

    def _lane_sums(self, m, c, op, lane_ops, en, ctl, lanes, cands, stats, s_sum, q_sum):
        """Stage 2's second step (A2): from each lane's products (``lanes``, :meth:`_products`), the
        argmax's candidates (``cands``) and the beat's control ``ctl`` to the stage's registers."""
        L = self.lanes
        p2 = _Stage("p2", L, self.max_length)
        acc2 = [Signal(signed(34), name=f"acc2_{i}") for i in range(L)]
        gamma2 = [Signal(signed(8), name=f"gamma2_{i}") for i in range(L)]
        beta2 = [Signal(signed(_ACC_BITS), name=f"beta2_{i}") for i in range(L)]
        mult2 = [Signal(unsigned(MULT_BITS), name=f"mult2_{i}") for i in range(L)]
        shift2 = [Signal(unsigned(SHIFT_BITS), name=f"shift2_{i}") for i in range(L)]
        act2 = [Signal(signed(8), name=f"act2_{i}") for i in range(L)]
        s_beat = Signal(signed(16))
        q_beat = Signal(unsigned(24))
        bmax = Signal(signed(_ACC_BITS))
        bidx = Signal(range(L))
        s_terms, q_terms = [], []
        for i, v in enumerate(lanes):
            lop = lane_ops[i]
            a8 = v["a"][:8].as_signed()
            b8 = v["b"][:8].as_signed()
            n = round_shift(v["norm"], stats.k_shift_lanes[i])
            pm = xx = v["shared1"]
            pb = v["shared2"]
            # ADD's sum and RoPE's cos * x +- sin * x' in one adder.
            sum2 = pc = pm + Mux(lop.is_rope & ~ctl.second, -pb, pb)
            acc = Mux(lop.is_req, v["a"],
                  Mux(lop.is_add, sum2,
                  Mux(lop.is_mul, pm,
                  Mux(lop.is_rope, pc, n))))
            with m.If(en):
                m.d.sync += [acc2[i].eq(acc), gamma2[i].eq(b8), beta2[i].eq(Mux(lop.is_layer, v["a"], 0)),
                             mult2[i].eq(Mux(lop.is_req, v["b"], Mux(ctl.bsel, c.mult_b, c.mult))),
                             shift2[i].eq(Mux(lop.is_req, v["shift"], Mux(ctl.bsel, c.shift_b, c.shift))),
                             act2[i].eq(v["act"])]
            live = ctl.mask[i]
            s_terms.append(Mux(live, a8, 0))
            q_terms.append(Mux(live, xx, 0))
        while len(cands) > 1:
            cands = _argmax_level(cands)
        with m.If(en):
            m.d.sync += [p2.copy(ctl), bmax.eq(cands[0][0]), bidx.eq(cands[0][1])]
        if self.product_register:
            _accumulate(m, en, op, ctl, sum(s_terms), sum(q_terms), s_sum, q_sum, stats)
        else:
            with m.If(en):
                m.d.sync += [s_beat.eq(sum(s_terms)), q_beat.eq(sum(q_terms))]
        return p2, (acc2, gamma2, beta2, mult2, shift2, act2, s_beat, q_beat, bmax, bidx)

    def _scale(self, m, op, lane_ops, en, p2, stage2, s_sum, q_sum, stats):
        """Stage 3 (B): the norms' scale and bias; the norms' sums; the running argmax.

        Returns the stage's control and registers: (p3, (acc3, mult3, shift3, act3, idx3))."""
        L = self.lanes
        acc2, gamma2, beta2, mult2, shift2, act2, s_beat, q_beat, bmax, bidx = stage2
        p3 = _Stage("p3", L, self.max_length)
        acc3 = [Signal(signed(34), name=f"acc3_{i}") for i in range(L)]
        mult3 = [Signal(unsigned(MULT_BITS), name=f"mult3_{i}") for i in range(L)]
        shift3 = [Signal(unsigned(SHIFT_BITS), name=f"shift3_{i}") for i in range(L)]
        act3 = [Signal(signed(8), name=f"act3_{i}") for i in range(L)]
        best = Signal(signed(_ACC_BITS))
        best_idx = Signal(_index_shape(self.max_length))
        idx3 = Signal(_index_shape(self.max_length))
        gidx = p2.base + bidx
        take = p2.first | (bmax > best)
        new_idx = Mux(take, gidx, best_idx)
        with m.If(en):
            m.d.sync += [p3.copy(p2), idx3.eq(new_idx)]
            for i in range(L):
                m.d.sync += [acc3[i].eq(Mux(lane_ops[i].is_norm, acc2[i] * gamma2[i] + beta2[i], acc2[i])),
                             mult3[i].eq(mult2[i]), shift3[i].eq(shift2[i]), act3[i].eq(act2[i])]
            with m.If(p2.valid & op.is_argmax):
                m.d.sync += [best.eq(Mux(take, bmax, best)), best_idx.eq(new_idx)]
        if not self.product_register:   # (with it, stage A2 keeps the sums)
            _accumulate(m, en, op, p2, s_beat, q_beat, s_sum, q_sum, stats)
        return p3, (acc3, mult3, shift3, act3, idx3)


def _argmax_level(cands):
    """One level of the argmax's comparison tree over ``(value, lane, live)`` candidates: pairs
    reduced to their winner, the right one winning only when strictly greater (ties keep the lower
    lane); an odd one out passes."""
    nxt = []
    for j in range(0, len(cands) - 1, 2):
        (lv, li, lo), (rv, ri, ro) = cands[j], cands[j + 1]
        take = ro & (~lo | (rv > lv))
        nxt.append((Mux(take, rv, lv), Mux(take, ri, li), lo | ro))
    if len(cands) % 2:
        nxt.append(cands[-1])
    return nxt


def _accumulate(m, en, op, ctl, s_beat, q_beat, s_sum, q_sum, stats):
    """A norm's first pass: the running sums take the beat's (``s_beat``, ``q_beat``) of the stage
    ``ctl`` at the next edge; the statistics chain starts when the pass's last beat's are in."""
    with m.If(en & ctl.valid & op.is_norm & ~ctl.pass2):
        m.d.sync += [s_sum.eq(Mux(ctl.first, 0, s_sum) + s_beat),
                     q_sum.eq(Mux(ctl.first, 0, q_sum) + q_beat)]
    m.d.comb += stats.sums_done.eq(en & ctl.valid & ctl.s1_end)


def _shared_operands(op, c, a8, b8, act, cos, sin, bx, bp):
    """The operands of a lane's two shared products: ``(a1, b1, a2, b2)``,
    ``b1`` and ``b2`` int8. ADD: ``a_mult * a`` and ``b_mult * b``; MUL, SILU_MUL: ``x * b`` (``x``
    the table entry for SILU_MUL); ROPE: ``cos * x`` and ``sin * x'`` (the partner); the norms'
    first pass: ``a * a``. The opcode holds for a whole command, so a mux picks each operand."""
    a1 = Mux(op.is_add, c.a_mult, Mux(op.is_mul, Mux(op.is_silu_mul, act, a8), Mux(op.is_rope, cos, a8)))
    b1 = Mux(op.is_mul, b8, Mux(op.is_rope, bx, a8))
    a2 = Mux(op.is_add, c.b_mult, sin)
    b2 = Mux(op.is_add, b8, bp)
    return a1, b1, a2, b2


class NormStatistics(wiring.Component):
    """The norms' statistics chain: from a row's sums to its mean, reciprocal square root and exponent.

    Free-running registers: every output is stable :data:`NORM_STATS_CYCLES` cycles after the sums
    are (and stays so while they are); ``go`` pulses then, when ``sums_done`` marked the cycle
    before the sums became final. The steps are those of :func:`golden.vector.rmsnorm` and
    :func:`golden.vector.layernorm` (see the module docstring for the LayerNorm identities).

    Parameters: ``max_length`` (the longest row, the shape of ``length``); ``product_register``:
    step 4's product ``e*e * inv_mult`` registered on its own, and step 4's shift, subtraction and
    clamp done with step 5 (``u = max(q + eps - X, max(eps, 1))``, X the shifted product: the same
    value as ``max(max(q - X, 0) + eps, 1)``); LayerNorm's steps 1 and 2 in two cycles each (the
    mean's product, then its shift; ``N * mu``, then ``e`` and ``N * mu * mu``) and f's shift a
    cycle after its product: LayerNorm's outputs are stable :data:`LAYER_STATS_EXTRA` cycles later
    and ``go`` with them; RMSNorm's are not (its ``u`` is ``max(q0 + eps, 1)``).

    Ports
    -----
    In: ``s_sum`` (sum x), ``q_sum`` (sum x*x), ``length`` (N), ``inv_mult``/``inv_shift`` (1/N as a
    multiplier and shift), ``eps``, ``layer`` (LayerNorm: centre on the mean; RMSNorm: mean 0),
    ``sums_done``. Out: ``mu`` (the mean), ``f`` (its fraction), ``mf`` (``(mu << 8) + f``, a cycle
    behind them), ``r`` (the Q2.14 reciprocal square root's mantissa), ``k`` (its exponent),
    ``k_shift`` (``k + 8``, the second pass's shift of each lane's normalised value, a cycle behind
    ``k``: a register, so the lanes' shifters are driven by flip-flops, not by an adder's carry
    chain fanning out across the unit), ``k_shift_lanes`` (``lanes`` copies of ``k_shift``, equal
    to it at every cycle: one a lane, :func:`hdl.fanout.follower_copies`), ``go``.
    """

    @checked_constructor
    def __init__(self, *, max_length: int, product_register: bool = False, lanes: int = 1):
        self.max_length = check_positive_int("norm statistics max_length", max_length)
        self.product_register = bool(product_register)
        self.lanes = check_positive_int("norm statistics lanes", lanes)
        super().__init__({
            "s_sum": In(signed(32)),
            "q_sum": In(unsigned(32)),
            "length": In(range(max_length + 1)),
            "inv_mult": In(unsigned(MULT_BITS)),
            "inv_shift": In(unsigned(SHIFT_BITS)),
            "eps": In(unsigned(31)),
            "layer": In(1),
            "sums_done": In(1),
            "mu": Out(signed(16)),
            "f": Out(signed(24)),
            "mf": Out(signed(26)),
            "r": Out(unsigned(17)),
            "k": Out(range(16)),
            "k_shift": Out(range(16 + NORM_MEAN_FRAC_BITS)),
            "k_shift_lanes": Out(data.ArrayLayout(range(16 + NORM_MEAN_FRAC_BITS), self.lanes)),
            "go": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.rsqrt_rom = rom = memory.Memory(
            shape=unsigned(16), depth=RSQRT_TABLE_SIZE, init=[int(v) for v in rsqrt_table()])
        s_sum, q_sum, is_layer = self.s_sum, self.q_sum, self.layer
        mu, f, r, k = self.mu, self.f, self.r, self.k
        e = Signal(signed(24))
        ms = Signal(signed(48))
        nmm = Signal(signed(48))
        q = Signal(signed(50))
        ee = Signal(unsigned(48))
        v = Signal(unsigned(32))
        u = Signal(unsigned(31))
        mant = Signal(unsigned(16))
        r0 = Signal(unsigned(16))
        sq = Signal(unsigned(32))
        t = Signal(signed(34))
        n_len = self.length
        im, ish = self.inv_mult, self.inv_shift
        # Priority encoder: top = bit_length(u) - 1; then k and the Q2.14 mantissa.
        top = Const(0, 5)
        for i in range(1, 31):
            top = Mux(u[i], i, top)
        k_now = Signal(range(16))
        mant_now = Signal(unsigned(16))
        m.d.comb += [k_now.eq(top >> 1), mant_now.eq((u << 14) >> (k_now << 1))]
        rom_r = rom.read_port()
        m.d.comb += [rom_r.addr.eq((mant_now >> RSQRT_INDEX_SHIFT) - (1 << (14 - RSQRT_INDEX_SHIFT))),
                     r0.eq(rom_r.data)]
        h = round_shift(mant * sq, 15)
        if self.product_register:
            # Step 4 in two halves: the product (and q + eps, q + eps - max(eps, 1), max(eps, 1)),
            # then with step 5 the shift and subtraction, in two subtractors side by side: u =
            # max(q + eps - X, max(eps, 1)) = max(max(q - X, 0) + eps, 1) for eps >= 0.
            eps = self.eps
            prod = Signal(unsigned(len(ee) + len(im)))
            qe = Signal(signed(len(q) + 2))
            qe_low = Signal.like(qe)
            e_min = Signal(unsigned(31))
            e_min_now = Mux(eps < 1, 1, eps)
            m.d.sync += [prod.eq(ee * im), qe.eq(q + eps), qe_low.eq(q + eps - e_min_now), e_min.eq(e_min_now)]
            x = round_shift(prod, ish)
            u_next = Mux(is_layer, Mux(qe_low - x < 0, e_min, qe - x), Mux(q_sum + eps < 1, 1, q_sum + eps))
            m.d.sync += u.eq(u_next)                                                  # steps 4 and 5
        else:
            v_next = q - round_shift(ee * im, ish)
            u_pre = Mux(is_layer, v, q_sum) + self.eps
            m.d.sync += [v.eq(Mux(v_next < 0, 0, v_next)),                           # step 4
                         u.eq(Mux(u_pre < 1, 1, u_pre))]                              # step 5
        if self.product_register:
            # LayerNorm's steps 1 and 2 in two cycles each: the mean's product before its shift, N * mu
            # before e and N * mu * mu; f's shift a step after its product (off the chain to r).
            p_mu = Signal(signed(len(s_sum) + len(im) + 1))
            nm = Signal(signed(34))
            p_f = Signal(signed(len(e) + NORM_MEAN_FRAC_BITS + len(im) + 1))
            m.d.sync += [
                p_mu.eq(s_sum * im),                                                  # step 1
                mu.eq(Mux(is_layer, round_shift(p_mu, ish), 0)),
                nm.eq(n_len * mu), ms.eq(mu * s_sum),                                 # step 2
                e.eq(s_sum - nm), nmm.eq(nm * mu),
                q.eq(q_sum - 2 * ms + nmm), ee.eq(e * e),                             # step 3
                p_f.eq((e << NORM_MEAN_FRAC_BITS) * im),
                f.eq(Mux(is_layer, round_shift(p_f, ish), 0)),
            ]
        else:
            m.d.sync += [
                mu.eq(Mux(is_layer, round_shift(s_sum * im, ish), 0)),               # step 1
                e.eq(s_sum - n_len * mu), ms.eq(mu * s_sum), nmm.eq(n_len * mu * mu),  # step 2
                q.eq(q_sum - 2 * ms + nmm), ee.eq(e * e),                             # step 3
                f.eq(Mux(is_layer, round_shift((e << NORM_MEAN_FRAC_BITS) * im, ish), 0)),
            ]
        m.d.sync += [
            k.eq(k_now), mant.eq(mant_now),                                           # step 6 (+ ROM)
            sq.eq(r0 * r0),                                                           # step 7
            t.eq((3 << 29) - h),                                                      # step 8
            r.eq(round_shift(r0 * t, 30)),                                           # step 9
        ]
        # The token: NORM_STATS_CYCLES registers, LAYER_STATS_EXTRA more for LayerNorm with
        # product_register (RMSNorm's u comes from q_sum alone, so its r is ready as early as before).
        extra = LAYER_STATS_EXTRA if self.product_register else 0
        tokens = [Signal(name=f"stats_token{i}") for i in range(NORM_STATS_CYCLES + extra)]
        m.d.comb += self.go.eq(Mux(is_layer, tokens[-1], tokens[NORM_STATS_CYCLES - 1]) if extra else tokens[-1])
        m.d.sync += [tokens[0].eq(self.sums_done)] + [tokens[i].eq(tokens[i - 1]) for i in range(1, NORM_STATS_CYCLES)]
        m.d.sync += [tokens[i].eq(tokens[i - 1] & is_layer) for i in range(NORM_STATS_CYCLES, len(tokens))]
        # The mean and its fraction as stage A subtracts them, (mu << 8) + f: a register, so the norms'
        # second pass makes d with one subtractor. One cycle behind mu and f, and first read two
        # cycles after ``go`` (the issue, then stage 1), so it is as stable as they are.
        m.d.sync += self.mf.eq((mu << NORM_MEAN_FRAC_BITS) + f)
        # The same for k (step 6, at least two cycles before go even for RMSNorm): k + 8 a cycle later.
        m.d.sync += self.k_shift.eq(k + NORM_MEAN_FRAC_BITS)
        copies = follower_copies(m, self.lanes, k + NORM_MEAN_FRAC_BITS, shape=range(16 + NORM_MEAN_FRAC_BITS),
                                 name="k_shift_lane")
        m.d.comb += [self.k_shift_lanes[i].eq(copy) for i, copy in enumerate(copies)]
        return m


class _Decoded:
    """An opcode decoded (combinational flags): the running command's, or a lane's copy of it.
    Without ``layernorm`` no opcode is a LayerNorm (``is_layer`` is 0: its logic is not built)."""

    def __init__(self, m, op, prefix="", layernorm=True):
        self.op = op
        self.is_norm = Signal(name=f"{prefix}is_norm")
        self.is_layer = Signal(name=f"{prefix}is_layer")
        self.is_rope = Signal(name=f"{prefix}is_rope")
        self.is_argmax = Signal(name=f"{prefix}is_argmax")
        self.is_act = Signal(name=f"{prefix}is_act")
        self.two_pass = Signal(name=f"{prefix}two_pass")
        self.is_req = Signal(name=f"{prefix}is_req")
        self.is_add = Signal(name=f"{prefix}is_add")
        self.is_silu_mul = Signal(name=f"{prefix}is_silu_mul")
        # MUL and SILU_MUL share one product a lane: SILU_MUL's first operand is the table entry.
        self.is_mul = Signal(name=f"{prefix}is_mul")
        m.d.comb += [
            self.is_layer.eq((op == VectorOp.LAYERNORM) if layernorm else 0),
            self.is_norm.eq((op == VectorOp.RMSNORM) | (op == VectorOp.LAYERNORM)),
            self.is_rope.eq(op == VectorOp.ROPE),
            self.is_argmax.eq(op == VectorOp.ARGMAX),
            self.is_act.eq((op == VectorOp.SILU) | (op == VectorOp.GELU)),
            self.two_pass.eq(self.is_norm | self.is_rope),
            self.is_req.eq(op == VectorOp.REQUANT),
            self.is_add.eq(op == VectorOp.ADD),
            self.is_silu_mul.eq(op == VectorOp.SILU_MUL),
            self.is_mul.eq((op == VectorOp.MUL) | self.is_silu_mul),
        ]


class _Slot:
    """The issue slot's control, as :meth:`VectorUnit._issue` drives it."""

    def __init__(self, **signals):
        self.__dict__.update(signals)


class _Stage:
    """The per-beat control that travels with a beat down the pipeline."""

    def __init__(self, name, lanes, max_length):
        self.valid = Signal(name=f"{name}_valid")
        self.final = Signal(name=f"{name}_final")
        self.pass2 = Signal(name=f"{name}_pass2")
        self.second = Signal(name=f"{name}_second")
        self.first = Signal(name=f"{name}_first")
        self.s1_end = Signal(name=f"{name}_s1_end")
        self.mask = Signal(lanes, name=f"{name}_mask")
        self.base = Signal(range(max_length + 2 * lanes), name=f"{name}_base")
        self.bsel = Signal(name=f"{name}_bsel")

    _FIELDS = ("valid", "final", "pass2", "second", "first", "s1_end", "mask", "base", "bsel")

    def copy(self, other):
        return [getattr(self, n).eq(getattr(other, n)) for n in self._FIELDS]
