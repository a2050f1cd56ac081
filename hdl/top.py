"""The decode accelerator's top level: memories, a sequencer, the GEMM path, the vector and
attention units, and a host port.

The host loads the program, the weights, the parameters, the RoPE table and the activation
tables once per run through the host port, then runs one decode step per ``start``: the
sequencer fetches, decodes and runs one instruction at a time (:mod:`hdl.isa`) until ``HALT``,
with the semantics of :class:`sim.isa_sim.IsaMachine` bit for bit, and raises ``done`` with the
argmax token in ``next_token`` and the step's cycles in ``cycles``. docs/top.md describes every
micro-sequence and its cycle count; :func:`sim.cycles.op_cycles` predicts them exactly.

Requires a square array whose size equals the vector lanes: ``V = array_rows = array_cols =
vector_lanes``, a power of two >= 4. Then one scratchpad word (V int8) is one array beat and one
vector beat; a parameter word is V x 32 bits; a logits word V x int32.

Memories (word = what one address holds):

========  ==========================  ===========================================================
memory    word                        depth
========  ==========================  ===========================================================
program   one instruction (136 bits)  ``program_words``
weights   V int8                      ``weight_words``
params    V x 32 bits                 ``ceil(param_words / V)``
scratch   V int8                      ``scratch_bytes / V``
logits    V x int32                   ``ceil(logits_words / V)``
K, V      ``head_dim`` int8 (one row) ``kv_bytes / (2 * head_dim)``; row ``(layer * n_kv_heads
                                      + kv head) * max_context + position``
trace     32 bits                     ``program_words``: the cycles each instruction of the last
                                      step took
act       int8 (one table entry)      ``act_tables * 256`` (in the vector unit): entry ``table *
                                      256 + x + 128``
========  ==========================  ===========================================================

Control: ``token``, ``position``, ``n_kv_heads`` and ``group`` (query heads per KV head) are
sampled when ``start`` is high and the top level is idle. ``busy`` is high from the next cycle
until ``done`` rises; ``done`` stays high until the next ``start``. ``cycles`` is the sum of the
cycles of every instruction of the step except ``HALT``; instruction ``i`` took ``trace[i]``
cycles, counted from its fetch to its last cycle, both included.

Host port: ``host_we`` writes ``host_wdata`` (low bits) to word ``host_addr`` of memory
``host_mem`` (PROGRAM, WEIGHTS, PARAMS, SCRATCH, VTABLE: the vector unit's RoPE table, or
ACT_TABLES: its activation tables, one int8 entry a word at ``table * 256 + x + 128``);
``host_rdata`` shows word ``host_addr`` of SCRATCH, LOGITS, TRACE or PARAMS one cycle after the
address. Meant for idle time.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, memory, wiring
from amaranth.lib.wiring import In, Out

from golden.attention import HEAD_DIM_MAX, MAX_CONTEXT_LIMIT
from golden.errors import InputError, InputTypeError
from golden.numerics import MULT_BITS
from golden.vector import NORM_MAX_LEN

from .arith import round_shift, saturate8
from .array import SystolicArray
from .attention import MAX_HEADS_LIMIT, AttentionUnit
from .config import Config, check_positive_int, checked_constructor
from .isa import INSTRUCTION_BITS, Opcode, instruction_layout
from .vector import VectorOp, VectorTable, VectorUnit

__all__ = ["DecodeTop", "TopMem", "check_top_config"]

_SHIFT_BITS = 6
#: Parameter words the sequencer reads for an instruction's scalar constants (two, so a
#: LayerNorm's five scalars fit with V = 4).
SCALAR_WORDS = 2
#: GEMM flags (sim.compiler.GEMM_BIAS, GEMM_REQUANT) and EMBED's (EMBED_BY_POSITION).
_GEMM_BIAS, _GEMM_REQUANT, _EMBED_BY_POSITION = 1, 2, 1


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
    FETCH = 1
    DECODE = 2
    EMBED = 3
    GEMM = 4
    VCMD = 5
    VRUN = 6
    KVW = 7
    AQ = 8
    ASTART = 9
    ARUN = 10
    AOUT = 11


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
        super().__init__({
            "start": In(1),
            "token": In(16),
            "position": In(range(c.max_context)),
            "n_kv_heads": In(range(max_heads + 1)),
            "group": In(range(max_heads + 1)),
            "busy": Out(1),
            "done": Out(1),
            "next_token": Out(16),
            "cycles": Out(c.cycle_counter_bits),
            "host_mem": In(TopMem),
            "host_addr": In(self.host_addr_bits),
            "host_we": In(1),
            "host_wdata": In(self.host_data_bits),
            "host_rdata": Out(32 * V),
        })

    # --- derived sizes ------------------------------------------------------------------------

    @property
    def max_length(self) -> int:
        """Longest vector of any vector-unit command: a scratchpad's or a logits buffer's worth."""
        return max(self.config.scratch_bytes, self.config.logits_words)

    @property
    def param_depth(self) -> int:
        return -(-self.config.param_words // self.lanes)

    @property
    def scratch_depth(self) -> int:
        return -(-self.config.scratch_bytes // self.lanes)

    @property
    def logits_depth(self) -> int:
        return -(-self.config.logits_words // self.lanes)

    @property
    def kv_rows(self) -> int:
        return self.config.kv_bytes // (2 * self.head_dim)

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
    def params(self) -> dict:
        return {"config": self.config.as_dict(), "head_dim": self.head_dim, "max_heads": self.max_heads,
                "max_norm_length": self.max_norm_length}

    # --- hardware -----------------------------------------------------------------------------

    def elaborate(self, platform):  # noqa: C901 - one sequencer, one state per micro-sequence
        m = Module()
        c = self.config
        V = self.lanes
        lg = V.bit_length() - 1
        HD = self.head_dim
        HW = HD // V                  # scratchpad words per KV / q row
        CTX = c.max_context

        # --- memories -----------------------------------------------------------------------
        m.submodules.prog = prog = memory.Memory(shape=unsigned(INSTRUCTION_BITS), depth=c.program_words, init=[])
        m.submodules.wmem = wmem = memory.Memory(shape=unsigned(8 * V), depth=c.weight_words, init=[])
        m.submodules.pmem = pmem = memory.Memory(shape=unsigned(32 * V), depth=self.param_depth, init=[])
        m.submodules.smem = smem = memory.Memory(shape=unsigned(8 * V), depth=self.scratch_depth, init=[])
        m.submodules.lmem = lmem = memory.Memory(shape=unsigned(32 * V), depth=self.logits_depth, init=[])
        m.submodules.kmem = kmem = memory.Memory(shape=unsigned(8 * HD), depth=self.kv_rows, init=[])
        m.submodules.vmem = vmem = memory.Memory(shape=unsigned(8 * HD), depth=self.kv_rows, init=[])
        m.submodules.qbuf = qbuf = memory.Memory(shape=unsigned(8 * HD), depth=self.max_heads, init=[])
        m.submodules.obuf = obuf = memory.Memory(shape=unsigned(8 * HD), depth=self.max_heads, init=[])
        m.submodules.trace = trace = memory.Memory(shape=unsigned(32), depth=c.program_words, init=[])

        prog_w, prog_r = prog.write_port(), prog.read_port()
        w_w, w_r = wmem.write_port(), wmem.read_port()
        p_w, p1, p2, p_h = pmem.write_port(), pmem.read_port(), pmem.read_port(), pmem.read_port()
        s_w, sa, sb, s_h = smem.write_port(), smem.read_port(), smem.read_port(), smem.read_port()
        l_w, l_r, l_h = lmem.write_port(), lmem.read_port(), lmem.read_port()
        k_w, k_r = kmem.write_port(), kmem.read_port()
        v_w, v_r = vmem.write_port(), vmem.read_port()
        q_w, q_r = qbuf.write_port(), qbuf.read_port()
        o_w, o_r = obuf.write_port(), obuf.read_port()
        t_w, t_h = trace.write_port(), trace.read_port()

        # --- units ---------------------------------------------------------------------------
        m.submodules.array = array = SystolicArray(rows=V, cols=V)
        m.submodules.vec = vec = VectorUnit(lanes=V, max_length=self.max_length,
                                            max_norm_length=self.max_norm_length, max_head_dim=HD,
                                            max_context=CTX, act_tables=c.act_tables)
        finish = min(c.attention_finish_lanes, HD) or None
        m.submodules.att = att = AttentionUnit(head_dim=HD, max_context=CTX, max_heads=self.max_heads,
                                               finish_lanes=finish)

        # --- sequencer state ---------------------------------------------------------------------
        state = Signal(_S)
        pc = Signal(range(c.program_words + 1))
        ins = Signal(instruction_layout())
        raw = data.View(instruction_layout(), prog_r.data)
        tok = Signal(16)
        pos = Signal(range(CTX))
        n_kv = Signal.like(self.n_kv_heads)
        group = Signal.like(self.group)
        n_heads = Signal(range(self.max_heads * self.max_heads + 1))
        ins_cyc = Signal(32)
        step_cyc = Signal(c.cycle_counter_bits)
        fin = Signal()                   # the running instruction's last cycle
        running = Signal()
        m.d.comb += [running.eq(state != _S.IDLE), self.busy.eq(running), self.cycles.eq(step_cyc)]

        def words(x):
            return (x + (V - 1)) >> lg

        rop = raw.opcode

        # --- default port settings ---------------------------------------------------------------
        m.d.comb += [prog_r.addr.eq(pc), prog_r.en.eq(1), w_r.en.eq(1), p1.en.eq(1), p2.en.eq(1),
                     sa.en.eq(1), sb.en.eq(1), l_r.en.eq(1), k_r.en.eq(1), v_r.en.eq(1), q_r.en.eq(1),
                     o_r.en.eq(1), vec.out.ready.eq(1), att.out.ready.eq(1), array.sums.ready.eq(1)]

        # --- host port ---------------------------------------------------------------------------
        hw = self.host_we & ~running
        hm = self.host_mem
        m.d.comb += [
            prog_w.addr.eq(self.host_addr), prog_w.data.eq(self.host_wdata), prog_w.en.eq(hw & (hm == TopMem.PROGRAM)),
            w_w.addr.eq(self.host_addr), w_w.data.eq(self.host_wdata), w_w.en.eq(hw & (hm == TopMem.WEIGHTS)),
            p_w.addr.eq(self.host_addr), p_w.data.eq(self.host_wdata), p_w.en.eq(hw & (hm == TopMem.PARAMS)),
            s_h.addr.eq(self.host_addr), l_h.addr.eq(self.host_addr), t_h.addr.eq(self.host_addr),
            p_h.addr.eq(self.host_addr),
            self.host_rdata.eq(Mux(hm == TopMem.SCRATCH, s_h.data,
                               Mux(hm == TopMem.LOGITS, l_h.data,
                               Mux(hm == TopMem.TRACE, t_h.data, p_h.data)))),
        ]
        with m.If(~running):
            m.d.comb += [s_w.addr.eq(self.host_addr), s_w.data.eq(self.host_wdata),
                         s_w.en.eq(hw & (hm == TopMem.SCRATCH)),
                         vec.tbl_we.eq(hw & ((hm == TopMem.VTABLE) | (hm == TopMem.ACT_TABLES))),
                         vec.tbl_sel.eq(Mux(hm == TopMem.ACT_TABLES, VectorTable.ACT, VectorTable.ROPE)),
                         vec.tbl_addr.eq(self.host_addr), vec.tbl_data.eq(self.host_wdata)]

        # --- start, fetch, decode, halt --------------------------------------------------------
        with m.If((state == _S.IDLE) & self.start):
            m.d.sync += [state.eq(_S.FETCH), pc.eq(0), step_cyc.eq(0), self.done.eq(0),
                         tok.eq(self.token), pos.eq(self.position), n_kv.eq(self.n_kv_heads),
                         group.eq(self.group), n_heads.eq(self.n_kv_heads * self.group)]
        with m.If(state == _S.FETCH):
            m.d.sync += [state.eq(_S.DECODE), ins_cyc.eq(1)]
        with m.Elif(running):
            m.d.sync += ins_cyc.eq(ins_cyc + 1)
        m.d.comb += [t_w.addr.eq(pc), t_w.data.eq(ins_cyc + 1), t_w.en.eq(fin)]
        with m.If(fin):
            m.d.sync += [state.eq(_S.FETCH), pc.eq(pc + 1), step_cyc.eq(step_cyc + ins_cyc + 1)]

        # Registers the micro-sequences share.
        s_addr = Signal(16)              # scratchpad read address, port A (src0)
        b_addr = Signal(16)              # scratchpad read address, port B (src1)
        d_addr = Signal(16)              # scratchpad / logits write address
        left = Signal(32)                # words (beats, rows) left
        idx = Signal(16)                 # position in a row / table
        row = Signal(8 * HD)             # gathered row (K or q)
        row_b = Signal(8 * HD)           # gathered V row
        kv_row = Signal(range(self.kv_rows + CTX * self.max_heads + 1))
        e_addr = Signal(range(c.weight_words + 1))

        # Decoded fields of the raw instruction (valid in DECODE).
        r_nw = words(raw.length)
        r_pw = raw.param >> lg
        r_scal = Mux(rop == Opcode.RMSNORM, r_pw + r_nw, Mux(rop == Opcode.LAYERNORM, r_pw + 2 * r_nw, r_pw))
        embed_row = Mux(raw.flags & _EMBED_BY_POSITION, pos, tok)
        with m.If(state == _S.DECODE):
            m.d.comb += [sa.addr.eq(raw.src0 >> lg), sb.addr.eq(raw.src1 >> lg), p1.addr.eq(r_scal),
                         p2.addr.eq(r_scal + 1 if V < 5 else r_scal),
                         w_r.addr.eq(raw.weight + embed_row * raw.count)]
            m.d.sync += [ins.eq(raw), s_addr.eq((raw.src0 >> lg) + 1), b_addr.eq((raw.src1 >> lg) + 1),
                         d_addr.eq(raw.dst >> lg), idx.eq(0)]
            with m.Switch(rop):
                with m.Case(Opcode.HALT):
                    m.d.sync += [state.eq(_S.IDLE), self.done.eq(1)]
                with m.Case(Opcode.EMBED):
                    m.d.sync += [state.eq(_S.EMBED), left.eq(raw.count),
                                 e_addr.eq(raw.weight + embed_row * raw.count + 1)]
                with m.Case(Opcode.GEMM):
                    m.d.sync += state.eq(_S.GEMM)
                with m.Case(Opcode.KV_WRITE):
                    m.d.sync += [state.eq(_S.KVW), left.eq(n_kv * HW),
                                 kv_row.eq(raw.count * n_kv * CTX + pos)]
                with m.Case(Opcode.ATTENTION):
                    m.d.sync += [state.eq(_S.AQ), left.eq(n_heads * HW)]
                with m.Default():
                    m.d.sync += state.eq(_S.VCMD)

        # --- EMBED: copy ``count`` weight words to the scratchpad, one a cycle -------------------
        with m.If(state == _S.EMBED):
            m.d.comb += [w_r.addr.eq(e_addr), s_w.addr.eq(d_addr), s_w.data.eq(w_r.data), s_w.en.eq(1),
                         fin.eq(left == 1)]
            m.d.sync += [e_addr.eq(e_addr + 1), d_addr.eq(d_addr + 1), left.eq(left - 1)]

        self._gemm(m, state, ins, raw, array, w_r, sa, p1, p2, s_w, l_w, fin, words, lg)
        self._vector(m, state, ins, raw, vec, sa, sb, p1, p2, l_r, s_w, fin, s_addr, b_addr, d_addr, pos, words, lg)

        # --- KV_WRITE: gather n_kv K and V rows of HW words each, write them at the position -------
        with m.If(state == _S.KVW):
            new_k = Cat(row[8 * V:], sa.data)
            new_v = Cat(row_b[8 * V:], sb.data)
            m.d.comb += [sa.addr.eq(s_addr), sb.addr.eq(b_addr), fin.eq(left == 1),
                         k_w.addr.eq(kv_row), k_w.data.eq(new_k), v_w.addr.eq(kv_row), v_w.data.eq(new_v)]
            m.d.sync += [row.eq(new_k), row_b.eq(new_v), s_addr.eq(s_addr + 1), b_addr.eq(b_addr + 1),
                         left.eq(left - 1), idx.eq(Mux(idx == HW - 1, 0, idx + 1))]
            with m.If(idx == HW - 1):
                m.d.comb += [k_w.en.eq(1), v_w.en.eq(1)]
                m.d.sync += kv_row.eq(kv_row + CTX)

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
        m.d.comb += [att.kv_len.eq(pos + 1), att.n_kv_heads.eq(n_kv), att.group.eq(group),
                     att.score_mult.eq(scal[0][:MULT_BITS]), att.score_shift.eq(scal[1][:_SHIFT_BITS]),
                     att.out_mult.eq(scal[2][:MULT_BITS]), att.out_shift.eq(scal[3][:_SHIFT_BITS]),
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
        with m.If(state == _S.DECODE):
            m.d.sync += [qf_valid.eq(0), qf_addr.eq(0), qf_left.eq(n_heads), kf_valid.eq(0), kf_more.eq(1),
                         kf_t.eq(0), kf_g.eq(0), kf_addr.eq(raw.count * n_kv * CTX),
                         kf_gbase.eq(raw.count * n_kv * CTX), o_count.eq(0), o_row.eq(0), o_word.eq(0)]
        with m.If(in_att):
            m.d.comb += [q_r.en.eq(q_adv), k_r.en.eq(kv_adv), v_r.en.eq(kv_adv)]
            with m.If(q_adv):
                m.d.sync += qf_valid.eq(qf_left != 0)
                with m.If(qf_left != 0):
                    m.d.sync += [qf_addr.eq(qf_addr + 1), qf_left.eq(qf_left - 1)]
            with m.If(kv_adv):
                m.d.sync += kf_valid.eq(kf_more)
                with m.If(kf_more):
                    with m.If(kf_t == pos):
                        m.d.sync += [kf_t.eq(0), kf_g.eq(kf_g + 1), kf_gbase.eq(kf_gbase + CTX),
                                     kf_addr.eq(kf_gbase + CTX)]
                        with m.If(kf_g == n_kv - 1):
                            m.d.sync += kf_more.eq(0)
                    with m.Else():
                        m.d.sync += [kf_t.eq(kf_t + 1), kf_addr.eq(kf_addr + 1)]
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
        return m

    # --- GEMM: the array fed from the weight memory and the scratchpad; bias; requantization ----

    def _gemm(self, m, state, ins, raw, array, w_r, sa, p1, p2, s_w, l_w, fin, words, lg):
        V = self.lanes
        c = self.config
        kt = Signal(16)
        nt = Signal(16)
        wf_valid = Signal()
        wf_addr = Signal(range(c.weight_words + 1))
        wf_left = Signal(32)
        af_valid = Signal()
        af_more = Signal()
        af_kt = Signal(16)
        af_nt = Signal(16)
        src = Signal(16)
        s_kt = Signal(16)
        s_nt = Signal(16)
        dst = Signal(16)
        bias_base = Signal(24)
        ms_base = Signal(24)
        acc = Signal(data.ArrayLayout(signed(32), V))
        with m.If((state == _S.DECODE) & (raw.opcode == Opcode.GEMM)):
            r_kt = words(raw.length)
            r_nt = words(raw.count)
            m.d.sync += [kt.eq(r_kt), nt.eq(r_nt), wf_valid.eq(0), wf_addr.eq(raw.weight),
                         wf_left.eq(r_kt * r_nt * V), af_valid.eq(0), af_more.eq(1), af_kt.eq(0), af_nt.eq(0),
                         src.eq(raw.src0 >> lg), s_kt.eq(0), s_nt.eq(0), dst.eq(raw.dst >> lg),
                         bias_base.eq(raw.param >> lg),
                         ms_base.eq((raw.param >> lg) + Mux(raw.flags & _GEMM_BIAS, r_nt, 0))]
        gemm = state == _S.GEMM
        w_adv = ~wf_valid | array.weights.ready
        a_adv = ~af_valid | array.acts.ready
        m.d.comb += [array.weights.valid.eq(wf_valid & gemm), array.weights.payload.eq(w_r.data),
                     array.acts.valid.eq(af_valid & gemm), array.acts.payload.data.eq(sa.data),
                     array.acts.payload.last.eq(1)]
        with m.If(gemm):
            m.d.comb += [w_r.addr.eq(wf_addr), w_r.en.eq(w_adv), sa.addr.eq(src + af_kt), sa.en.eq(a_adv),
                         p1.addr.eq(bias_base + s_nt), p2.addr.eq(ms_base + s_nt)]
            with m.If(w_adv):
                m.d.sync += wf_valid.eq(wf_left != 0)
                with m.If(wf_left != 0):
                    m.d.sync += [wf_addr.eq(wf_addr + 1), wf_left.eq(wf_left - 1)]
            with m.If(a_adv):
                m.d.sync += af_valid.eq(af_more)
                with m.If(af_more):
                    with m.If(af_kt != kt - 1):
                        m.d.sync += af_kt.eq(af_kt + 1)
                    with m.Else():
                        m.d.sync += [af_kt.eq(0), af_nt.eq(af_nt + 1)]
                        with m.If(af_nt == nt - 1):
                            m.d.sync += af_more.eq(0)

        # Accumulator: sums arrive in (output tile, reduction tile) order, one per tile (M = 1).
        bias = data.View(data.ArrayLayout(signed(32), V), p1.data)
        ms = data.View(data.ArrayLayout(unsigned(32), V), p2.data)
        total = Signal(data.ArrayLayout(signed(32), V))
        first = s_kt == 0
        use_bias = ins.flags & _GEMM_BIAS
        for j in range(V):
            start = Mux(first, Mux(use_bias, bias[j], 0), acc[j])
            m.d.comb += total[j].eq(array.sums.payload.data[j] + start)
        # Output stage (GEMM_WRITEBACK): an output tile's final sum is registered with its
        # multiplier word, destination and kind; the requantization and the write happen the next
        # cycle. It cuts the path from the parameter memory's read data through the add, the
        # multiply, the rounding shift and the saturation into the scratchpad in two.
        o_valid = Signal()
        o_total = Signal(data.ArrayLayout(signed(32), V))
        o_ms = Signal(data.ArrayLayout(unsigned(32), V))
        o_addr = Signal(16)
        o_requant = Signal()
        o_last = Signal()
        y = Signal(data.ArrayLayout(signed(8), V))
        for j in range(V):
            m.d.comb += y[j].eq(saturate8(round_shift(o_total[j] * o_ms[j][:16], o_ms[j][16:16 + _SHIFT_BITS])))
        final = s_kt == kt - 1
        fire = gemm & array.sums.valid
        m.d.sync += o_valid.eq(0)
        with m.If(fire):
            with m.If(final):
                m.d.sync += [s_kt.eq(0), s_nt.eq(s_nt + 1), o_valid.eq(1), o_total.eq(total), o_ms.eq(ms),
                             o_addr.eq(dst + s_nt), o_requant.eq((ins.flags & _GEMM_REQUANT) != 0),
                             o_last.eq(s_nt == nt - 1)]
            with m.Else():
                m.d.sync += [s_kt.eq(s_kt + 1), acc.eq(total)]
        with m.If(gemm & o_valid):
            with m.If(o_requant):
                m.d.comb += [s_w.addr.eq(o_addr), s_w.data.eq(y), s_w.en.eq(1)]
            with m.Else():
                m.d.comb += l_w.en.eq(1)
            with m.If(o_last):
                m.d.comb += fin.eq(1)
        m.d.comb += [l_w.addr.eq(o_addr), l_w.data.eq(o_total)]

    # --- vector instructions through the vector unit -------------------------------------------

    def _vector(self, m, state, ins, raw, vec, sa, sb, p1, p2, l_r, s_w, fin, s_addr, b_addr, d_addr, pos,
                words, lg):
        V = self.lanes
        HW = self.head_dim // V
        op = ins.opcode
        is_norm = (op == Opcode.RMSNORM) | (op == Opcode.LAYERNORM)
        is_rope = op == Opcode.ROPE
        is_argmax = op == Opcode.ARGMAX

        # Scalars: the two parameter words read in DECODE, latched at the first command.
        live = Cat(p1.data, p2.data)
        sc = Signal(2 * 32 * V)
        sc_valid = Signal()
        s = data.View(data.ArrayLayout(unsigned(32), 2 * V), Mux(sc_valid, sc, live))
        heads = Signal(16)
        nw = Signal(16)                  # words of one pass
        f_valid = Signal()
        f_left = Signal(16)
        f_beat = Signal(16)
        f_phase = Signal()
        g_addr = Signal(24)              # gamma (pass 2, port P1)
        be_addr = Signal(24)             # beta (pass 2, port P2)
        with m.If(state == _S.DECODE):
            r_nw = words(raw.length)
            r_pw = raw.param >> lg
            beats = Mux((raw.opcode == Opcode.RMSNORM) | (raw.opcode == Opcode.LAYERNORM), 2 * r_nw,
                        Mux(raw.opcode == Opcode.ROPE, HW, r_nw))
            m.d.sync += [sc_valid.eq(0), heads.eq(Mux(raw.opcode == Opcode.ROPE, raw.count, 1)), nw.eq(r_nw),
                         f_valid.eq(0), f_left.eq(beats), f_beat.eq(0), g_addr.eq(r_pw), be_addr.eq(r_pw + r_nw)]
            vector_ops = (Opcode.RMSNORM, Opcode.LAYERNORM, Opcode.ROPE, Opcode.RESIDUAL_ADD, Opcode.ACTIVATION,
                          Opcode.MULTIPLY, Opcode.ARGMAX)
            with m.If(sum(raw.opcode == o for o in vector_ops) != 0):
                # The feeder's first read is in the command cycle, not in DECODE.
                m.d.sync += [s_addr.eq(raw.src0 >> lg), b_addr.eq(raw.src1 >> lg)]

        # The command.
        vop = Mux(op == Opcode.RMSNORM, VectorOp.RMSNORM,
              Mux(op == Opcode.LAYERNORM, VectorOp.LAYERNORM,
              Mux(is_rope, VectorOp.ROPE,
              Mux(op == Opcode.RESIDUAL_ADD, VectorOp.ADD,
              Mux(op == Opcode.MULTIPLY, VectorOp.MUL,
              Mux(op == Opcode.ACTIVATION, VectorOp.SILU, VectorOp.ARGMAX))))))
        is_add = op == Opcode.RESIDUAL_ADD
        cmd = vec.cmd.payload
        m.d.comb += [
            cmd.op.eq(vop),
            cmd.length.eq(Mux(is_rope, self.head_dim, ins.length)),
            cmd.mult.eq(Mux(is_norm, s[1], Mux(is_add, s[2], s[0]))[:MULT_BITS]),
            cmd.shift.eq(Mux(is_norm, s[2], Mux(is_add, s[3], s[1]))[:_SHIFT_BITS]),
            cmd.a_mult.eq(s[0][:MULT_BITS]), cmd.b_mult.eq(s[1][:MULT_BITS]),
            cmd.inv_mult.eq(s[3][:MULT_BITS]), cmd.inv_shift.eq(s[4][:_SHIFT_BITS]),
            cmd.eps.eq(s[0][:31]), cmd.position.eq(pos),
            # ACTIVATION's table, loaded by the host once per run (the compiler keeps it < act_tables);
            # 0 for the other ops, so no table read ever leaves the memory.
            cmd.table.eq(Mux(op == Opcode.ACTIVATION, ins.count, 0)),
            vec.cmd.valid.eq(state == _S.VCMD),
        ]
        with m.If(state == _S.VCMD):
            m.d.sync += [state.eq(_S.VRUN), sc_valid.eq(1)]
            with m.If(~sc_valid):
                m.d.sync += sc.eq(live)

        # The operand feeder: one beat a cycle from the scratchpad (x, a; b), the parameter memory
        # (gamma; beta) or the logits buffer; the read ports' output registers hold the beat.
        feeding = (state == _S.VCMD) | (state == _S.VRUN)
        adv = ~f_valid | vec.inp.ready
        phase2 = is_norm & (f_beat >= nw)
        with m.If(feeding):
            m.d.comb += [sa.addr.eq(s_addr), sb.addr.eq(b_addr), l_r.addr.eq(s_addr), p1.addr.eq(g_addr),
                         p2.addr.eq(be_addr), sa.en.eq(adv), sb.en.eq(adv), l_r.en.eq(adv), p1.en.eq(adv),
                         p2.en.eq(adv)]
            with m.If(adv):
                m.d.sync += f_valid.eq(f_left != 0)
                with m.If(f_left != 0):
                    m.d.sync += [f_left.eq(f_left - 1), f_beat.eq(f_beat + 1), f_phase.eq(phase2)]
                    with m.If(phase2):
                        m.d.sync += [g_addr.eq(g_addr + 1), be_addr.eq(be_addr + 1)]
                    with m.Else():
                        m.d.sync += [s_addr.eq(s_addr + 1), b_addr.eq(b_addr + 1)]
        xa = data.View(data.ArrayLayout(signed(8), V), sa.data)
        xb = data.View(data.ArrayLayout(signed(8), V), sb.data)
        lg32 = data.View(data.ArrayLayout(signed(32), V), l_r.data)
        gam = data.View(data.ArrayLayout(signed(32), V), p1.data)
        bet = data.View(data.ArrayLayout(signed(32), V), p2.data)
        m.d.comb += vec.inp.valid.eq(f_valid & (state == _S.VRUN))
        for i in range(V):
            lane = vec.inp.payload[i]
            m.d.comb += [lane.a.eq(Mux(is_argmax, lg32[i], Mux(f_phase, bet[i], xa[i]))),
                         lane.b.eq(Mux(f_phase, gam[i], xb[i])), lane.shift.eq(0)]

        # Results: written back one word a cycle; ARGMAX's one beat carries the token.
        with m.If((state == _S.VRUN) & vec.out.valid):
            with m.If(is_argmax):
                m.d.sync += self.next_token.eq(vec.out.payload.index)
            with m.Else():
                m.d.comb += [s_w.addr.eq(d_addr), s_w.data.eq(vec.out.payload.data), s_w.en.eq(1)]
                m.d.sync += d_addr.eq(d_addr + 1)
            with m.If(vec.out.payload.last):
                with m.If(is_rope & (heads != 1)):
                    m.d.sync += [state.eq(_S.VCMD), heads.eq(heads - 1), f_left.eq(HW), f_beat.eq(0)]
                with m.Else():
                    m.d.comb += fin.eq(1)
