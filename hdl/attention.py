"""The decode-attention unit: one new query per query head against a streamed KV cache.

It computes :func:`golden.attention.attention_decode_loop` bit for bit: dot products, the scaled
Q11.5 logit, the streaming softmax with its running maximum and rescale, the reciprocal by table
and Newton step, and the output requantization (docs/numerics.md, "Attention"). The unit holds
no KV cache: K and V rows arrive on streams, in the order a KV-cache sequencer reads them.

Work order and throughput
-------------------------
Query heads that share a KV head (a group of ``group = n_heads / n_kv_heads`` heads) are
processed together, so each K/V row is streamed once per KV head, not once per query head::

    for g in range(n_kv_heads):            # KV head g serves query heads g*group .. g*group+group-1
        for t in range(kv_len):            # one K row and one V row of KV head g
            for j in range(group):         # the row is held while each query head of the group uses it
                one (head, position) step

One (query head, position) step issues per cycle: the datapath is ``head_dim`` lanes wide (a
full-row dot product and a full-row multiply-accumulate per cycle), so a call takes
``n_heads * kv_len`` issue cycles plus a fixed pipeline latency (:func:`sim.machine.cycles.attention_cycles`).
The per-head state of a group (running max, denominator, ``head_dim`` weighted sums) lives in
rotating register files: the head at the front is updated and goes to the back, so no state
select is ever indexed. When a head's last position is folded in, its state leaves for the
finishing pipeline (reciprocal, normalisation, requantization) and a fresh state takes its place,
so the next group follows with no bubble.

Pipeline (every stage advances on one enable, ``en = ~out.valid | out.ready``)::

    issue  take a K/V row (first head of a group only); address the query memory
    S1     s = q . k                                    (head_dim int8 products in logic, adder tree)
    S2     z = clamp_s16(round_shift(s * score_mult, score_shift))
    S3     d = z - m; m = max(m, z); address EXP[|d|]   (running max, per head)
    S4     a or w from EXP; l, acc rescaled and accumulated (per head)
    F1     leading one of l, Q1.15 mantissa; address the reciprocal seed table
    F2     r = round_shift(r0 * (2**31 - m * r0), 30)   (one Newton step)
    F3     y = round_shift(acc * r, p - 1)                 (``finish_lanes`` lanes per cycle)
    F4     out = requantize(y, out_mult, out_shift)        (``finish_lanes`` lanes per cycle)
    out    the output register (the stream's payload)

The finish stages F3 and F4 run once per head, not once per position, so they need not be
``head_dim`` lanes wide: with ``finish_lanes`` = F < head_dim, a head's row waits in F3 for
S = ceil(head_dim / F) cycles while its lanes pass through F multipliers F at a time (the row
shifts down by F lanes each cycle) and F4's results are shifted into an assembly register that
becomes the output row with the last chunk. While a row waits in F3 every stage before it holds
(one enable), so each head adds exactly S - 1 cycles to a call (:func:`sim.machine.cycles.attention_cycles`)
and the two 32-bit products per lane of the finish (four ECP5 multipliers) are built F times
instead of head_dim times.

Ports
-----
``finish_lanes`` (default: ``head_dim``) sets the finish stages' width (above).

Control, sampled when ``start`` is high and the unit is idle: ``kv_len`` (1 .. max_context),
``n_kv_heads`` and ``group`` (``n_kv_heads * group`` <= max_heads query heads), ``score_mult``,
``score_shift``, ``out_mult``, ``out_shift`` (golden's :class:`~golden.attention.AttentionParams`).
``busy`` is high from the cycle after ``start`` until ``done`` rises; ``done`` stays high until the
next ``start``. ``cycles`` counts clock periods from the cycle ``start`` is sampled to the first
cycle ``done`` is high. Out-of-range control values are the host's to reject
(:func:`sim.flows.attention.plan_attention`); the unit does not check them.

Streams (payloads ``data.ArrayLayout(signed(8), head_dim)``, lane ``i`` = element ``i``):

* ``q``: ``n_heads`` beats, query head 0 first. Accepted from the cycle after ``start``.
* ``k``, ``v``: ``n_kv_heads * kv_len`` beats each, KV head-major, position order within a head
  (``k[t, g]`` is beat ``g * kv_len + t``). A K beat and a V beat are taken together, in the same
  cycle (each stream's ``ready`` waits for the other's ``valid``).
* ``out``: ``n_heads`` beats of int8 results, query head 0 first.

Lookup tables are ROMs holding :func:`golden.tables.exp_table` and
:func:`golden.tables.recip_table` as built by golden.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.attention import HEAD_DIM_MAX, MAX_CONTEXT_LIMIT, SCORE_BITS, SCORE_MAX, SCORE_MIN
from golden.errors import InputError
from golden.numerics import ACC_BITS, INT8_MAX, INT8_MIN, MULT_BITS, SHIFT_MAX, ceil_div
from golden.tables import EXP_ONE, EXP_OUT_BITS, EXP_TABLE_SIZE, RECIP_INDEX_BITS, exp_table, recip_table

from .arith import clamp, fabric_product, round_shift, tree_sum
from .config import UNIT_CYCLE_BITS, check_positive_int, checked_constructor

__all__ = ["CYCLE_COUNTER_BITS", "MAX_HEADS_LIMIT", "AttentionUnit", "row_layout"]

#: Width of the ``cycles`` counter.
CYCLE_COUNTER_BITS = UNIT_CYCLE_BITS
#: Most query heads one unit holds state for (register files grow with it).
MAX_HEADS_LIMIT = 64
#: Width of the denominator register: l <= MAX_CONTEXT_LIMIT * EXP_ONE = 2**24.
DEN_BITS = 25
#: Bits of the Q1.15 reciprocal r (r may reach 32768, 1.0).
RECIP_BITS = 16
#: The mantissa's fraction bits: the reciprocal's input is l in Q1.15 after normalisation.
MANT_FRAC_BITS = 15


def row_layout(head_dim: int) -> data.ArrayLayout:
    """One q, K, V or output row: ``head_dim`` int8 lanes."""
    return data.ArrayLayout(signed(8), head_dim)


def _rotate(m, regs, push, length, when):
    """Rotating register file of runtime ``length``: front out, ``push`` in at ``length - 1``."""
    with m.If(when):
        for j, reg in enumerate(regs):
            following = regs[j + 1] if j + 1 < len(regs) else push
            m.d.sync += reg.eq(Mux(length == j + 1, push, following))


class AttentionUnit(wiring.Component):
    """Decode attention for up to ``max_heads`` query heads over up to ``max_context`` positions.

    Parameters (keyword-only): ``head_dim`` (lanes of every row, 1 .. HEAD_DIM_MAX),
    ``max_context`` (longest KV cache, 1 .. MAX_CONTEXT_LIMIT = 512), ``max_heads`` (query heads
    of one call, 1 .. 64), ``finish_lanes`` (lanes of the finish stages, 1 .. head_dim; None, the
    default, for head_dim). Raises TypeError for a non-integer and ValueError for a value out of
    range, naming the parameter and the value. See the module docstring for ports and timing.
    """

    @checked_constructor
    def __init__(self, *, head_dim: int, max_context: int, max_heads: int, finish_lanes: int | None = None):
        self.head_dim = check_positive_int("attention head_dim", head_dim)
        self.max_context = check_positive_int("attention max_context", max_context)
        self.max_heads = check_positive_int("attention max_heads", max_heads)
        for name, value, limit in (("head_dim", head_dim, HEAD_DIM_MAX),
                                   ("max_context", max_context, MAX_CONTEXT_LIMIT),
                                   ("max_heads", max_heads, MAX_HEADS_LIMIT)):
            if value > limit:
                raise InputError(f"attention {name} must be at most {limit}, not {value}")
        if finish_lanes is None:
            finish_lanes = head_dim
        self.finish_lanes = check_positive_int("attention finish_lanes", finish_lanes)
        if finish_lanes > head_dim:
            raise InputError(f"attention finish_lanes must be at most head_dim ({head_dim}), not {finish_lanes}")
        #: Cycles a head's row spends in the finish stage F3: ceil(head_dim / finish_lanes).
        self.finish_steps = ceil_div(head_dim, finish_lanes)
        row = row_layout(head_dim)
        super().__init__({
            "start": In(1),
            "kv_len": In(range(max_context + 1)),
            "n_kv_heads": In(range(max_heads + 1)),
            "group": In(range(max_heads + 1)),
            "score_mult": In(MULT_BITS),
            "score_shift": In(range(SHIFT_MAX + 1)),
            "out_mult": In(MULT_BITS),
            "out_shift": In(range(SHIFT_MAX + 1)),
            "busy": Out(1),
            "done": Out(1),
            "cycles": Out(CYCLE_COUNTER_BITS),
            "q": In(stream.Signature(row)),
            "k": In(stream.Signature(row)),
            "v": In(stream.Signature(row)),
            "out": Out(stream.Signature(row)),
        })

    def elaborate(self, platform):
        m = Module()
        H = self.max_heads

        # --- control: the latched call -------------------------------------------------------
        kv_len = Signal.like(self.kv_len)
        n_kv = Signal.like(self.n_kv_heads)
        group = Signal.like(self.group)
        n_heads = Signal(range(H + 1))
        score_mult = Signal.like(self.score_mult)
        score_shift = Signal.like(self.score_shift)
        out_mult = Signal.like(self.out_mult)
        out_shift = Signal.like(self.out_shift)
        running = Signal()
        launch = Signal()
        en_out = Signal()       # the finish stages and the output register advance
        hold = Signal()         # a row waits in F3 for its next chunk of lanes
        en = Signal()           # every stage up to F3 advances
        m.d.comb += [
            launch.eq(self.start & ~running),
            self.busy.eq(running),
            en_out.eq(~self.out.valid | self.out.ready),
            en.eq(en_out & ~hold),
        ]

        q_r, q_count, issue, new_row, last_pos, more, pos, head_j, kv_g, base = self._issue(
            m, running, en, kv_len, n_kv, group, n_heads)
        valid1, valid2, valid3, last3, rise, dist, v3, m_regs, exp_r = self._scores(
            m, en, issue, new_row, last_pos, q_r, score_mult, score_shift, group)
        valid4, last4, l_regs, acc_regs, l_new, acc_new = self._accumulate(
            m, en, valid3, last3, rise, dist, v3, exp_r, group)
        fvalid1, fvalid2, fvalid3, fvalid4, step = self._finish(
            m, en, en_out, hold, valid4, last4, l_new, acc_new, out_mult, out_shift)

        # --- control and the cycle counter ---------------------------------------------------
        S = self.finish_steps
        out_count = Signal(range(H + 1))
        out_fire = Signal()
        m.d.comb += out_fire.eq(self.out.valid & self.out.ready)
        with m.If(out_fire):
            m.d.sync += out_count.eq(out_count + 1)
        with m.If(launch):
            m.d.sync += [
                running.eq(1), self.done.eq(0), self.cycles.eq(1),
                kv_len.eq(self.kv_len), n_kv.eq(self.n_kv_heads), group.eq(self.group),
                n_heads.eq(self.n_kv_heads * self.group),
                score_mult.eq(self.score_mult), score_shift.eq(self.score_shift),
                out_mult.eq(self.out_mult), out_shift.eq(self.out_shift),
                q_count.eq(0), out_count.eq(0), more.eq(1),
                pos.eq(0), head_j.eq(0), kv_g.eq(0), base.eq(0),
                # Clear whatever an abandoned call left behind.
                valid1.eq(0), valid2.eq(0), valid3.eq(0), valid4.eq(0),
                fvalid1.eq(0), fvalid2.eq(0), fvalid3.eq(0), fvalid4.eq(0), self.out.valid.eq(0),
            ]
            if S > 1:
                m.d.sync += step.eq(0)
            m.d.sync += [reg.eq(SCORE_MIN) for reg in m_regs]
            m.d.sync += [reg.eq(0) for reg in l_regs + acc_regs]
        with m.Elif(running):
            m.d.sync += self.cycles.eq(self.cycles + 1)
            with m.If(out_fire & (out_count == n_heads - 1)):
                m.d.sync += [running.eq(0), self.done.eq(1)]
        return m

    def _issue(self, m, running, en, kv_len, n_kv, group, n_heads):
        """The query memory (filled by the q stream, one row per query head) and the issue slot
        (for g, for t, for j). Returns the query read port, the query count and the issue state."""
        D, H = self.head_dim, self.max_heads
        # --- query memory: filled by the q stream, one row per query head ---------------------
        m.submodules.qmem = qmem = memory.Memory(shape=unsigned(8 * D), depth=H, init=[])
        q_w = qmem.write_port()
        q_r = qmem.read_port()
        q_count = Signal(range(H + 1))
        q_fire = Signal()
        m.d.comb += [
            self.q.ready.eq(running & (q_count != n_heads)),
            q_fire.eq(self.q.valid & self.q.ready),
            q_w.addr.eq(q_count), q_w.data.eq(self.q.payload), q_w.en.eq(q_fire),
        ]
        with m.If(q_fire):
            m.d.sync += q_count.eq(q_count + 1)

        # --- issue: for g, for t, for j ------------------------------------------------------
        more = Signal()
        pos = Signal(range(self.max_context + 1))
        head_j = Signal(range(H + 1))
        kv_g = Signal(range(H + 1))
        base = Signal(range(H + 1))          # g * group: the group's first query head
        head = Signal(range(2 * H + 1))
        q_ok = Signal()
        new_row = Signal()
        can_issue = Signal()
        issue = Signal()
        last_pos = Signal()
        last_head = Signal()
        m.d.comb += [
            head.eq(base + head_j),
            q_ok.eq(q_count > head),        # this head's query row was written at an earlier edge
            new_row.eq(head_j == 0),
            can_issue.eq(running & more & en & q_ok),
            issue.eq(can_issue & (~new_row | (self.k.valid & self.v.valid))),
            self.k.ready.eq(can_issue & new_row & self.v.valid),
            self.v.ready.eq(can_issue & new_row & self.k.valid),
            last_pos.eq(pos == kv_len - 1),
            last_head.eq(head_j == group - 1),
            q_r.addr.eq(head), q_r.en.eq(en),
        ]
        with m.If(issue):
            with m.If(~last_head):
                m.d.sync += head_j.eq(head_j + 1)
            with m.Else():
                m.d.sync += head_j.eq(0)
                with m.If(~last_pos):
                    m.d.sync += pos.eq(pos + 1)
                with m.Else():
                    m.d.sync += [pos.eq(0), kv_g.eq(kv_g + 1), base.eq(base + group)]
                    with m.If(kv_g == n_kv - 1):
                        m.d.sync += more.eq(0)

        return q_r, q_count, issue, new_row, last_pos, more, pos, head_j, kv_g, base

    def _scores(self, m, en, issue, new_row, last_pos, q_r, score_mult, score_shift, group):
        """S1 .. S3: the dot product, the scaled logit, the running maximum and the exp table address."""
        D, H = self.head_dim, self.max_heads
        row = row_layout(D)
        # --- S1: dot product. The K/V row registers load on a group's first head only and are
        # held while the other heads of the group use the same row.
        valid1, last1 = Signal(), Signal()
        k1 = Signal(row)
        v1 = Signal(row)
        q1 = data.View(row, q_r.data)
        with m.If(en):
            m.d.sync += [valid1.eq(issue), last1.eq(last_pos)]
        with m.If(issue & new_row):
            m.d.sync += [k1.eq(self.k.payload), v1.eq(self.v.payload)]
        dot = Signal(signed(ACC_BITS))
        m.d.comb += dot.eq(tree_sum(fabric_product(q1[i], k1[i]) for i in range(D)))

        # --- S2: scaled, rounded, clamped logit ------------------------------------------------
        valid2, last2 = Signal(), Signal()
        s2 = Signal(signed(ACC_BITS))
        v2 = Signal(row)
        with m.If(en):
            m.d.sync += [valid2.eq(valid1), last2.eq(last1), s2.eq(dot), v2.eq(v1)]
        z = Signal(signed(SCORE_BITS))
        m.d.comb += z.eq(clamp(round_shift(s2 * score_mult, score_shift), SCORE_MIN, SCORE_MAX))

        # --- S3: running maximum (per head, rotating) and the exp table address ----------------
        valid3, last3 = Signal(), Signal()
        z3 = Signal(signed(SCORE_BITS))
        v3 = Signal(row)
        with m.If(en):
            m.d.sync += [valid3.eq(valid2), last3.eq(last2), z3.eq(z), v3.eq(v2)]
        m_regs = [Signal(signed(SCORE_BITS), init=SCORE_MIN, name=f"max{j}") for j in range(H)]
        diff = Signal(signed(SCORE_BITS + 2))
        rise = Signal()
        dist = Signal(SCORE_BITS + 1)
        m_new = Signal(signed(SCORE_BITS))
        m_next = Signal(signed(SCORE_BITS))
        m.d.comb += [
            diff.eq(z3 - m_regs[0]),
            rise.eq(diff > 0),
            dist.eq(Mux(rise, diff, -diff)),
            m_new.eq(Mux(rise, z3, m_regs[0])),
            m_next.eq(Mux(last3, SCORE_MIN, m_new)),   # a finished head leaves a fresh state
        ]
        _rotate(m, m_regs, m_next, group, en & valid3)
        m.submodules.exp_rom = exp_rom = memory.Memory(
            shape=unsigned(EXP_OUT_BITS + 1), depth=EXP_TABLE_SIZE, init=[int(x) for x in exp_table()])
        exp_r = exp_rom.read_port()
        index_bits = (EXP_TABLE_SIZE - 1).bit_length()
        m.d.comb += [exp_r.addr.eq(dist[:index_bits]), exp_r.en.eq(en)]

        return valid1, valid2, valid3, last3, rise, dist, v3, m_regs, exp_r

    def _accumulate(self, m, en, valid3, last3, rise, dist, v3, exp_r, group):
        """S4: rescale and accumulate each head's denominator and weighted sums (rotating)."""
        D, H = self.head_dim, self.max_heads
        row = row_layout(D)
        acc_row = data.ArrayLayout(signed(ACC_BITS), D)
        # --- S4: rescale and accumulate (per head, rotating) ------------------------------------
        valid4, last4, rise4, beyond4 = Signal(), Signal(), Signal(), Signal()
        v4 = Signal(row)
        with m.If(en):
            m.d.sync += [valid4.eq(valid3), last4.eq(last3), rise4.eq(rise),
                         beyond4.eq(dist >= EXP_TABLE_SIZE), v4.eq(v3)]
        e4 = Signal(EXP_OUT_BITS + 1)
        w4 = Signal(EXP_OUT_BITS + 1)
        # A rise gets a = EXP[z - m_old] and w = EXP[0]; otherwise no rescale and w = EXP[m - z].
        m.d.comb += [e4.eq(Mux(beyond4, 0, exp_r.data)), w4.eq(Mux(rise4, EXP_ONE, e4))]
        l_regs = [Signal(DEN_BITS, name=f"den{j}") for j in range(H)]
        acc_regs = [Signal(acc_row, name=f"acc{j}") for j in range(H)]
        l_new = Signal(DEN_BITS)
        acc_new = Signal(acc_row)
        m.d.comb += l_new.eq(Mux(rise4, round_shift(l_regs[0] * e4, EXP_OUT_BITS), l_regs[0]) + w4)
        for i in range(D):
            old = acc_regs[0][i]
            m.d.comb += acc_new[i].eq(Mux(rise4, round_shift(old * e4, EXP_OUT_BITS), old) + fabric_product(w4, v4[i]))
        _rotate(m, l_regs, Mux(last4, 0, l_new), group, en & valid4)
        _rotate(m, acc_regs, Mux(last4, 0, acc_new.as_value()), group, en & valid4)

        return valid4, last4, l_regs, acc_regs, l_new, acc_new

    def _finish(self, m, en, en_out, hold, valid4, last4, l_new, acc_new, out_mult, out_shift):
        """F1 .. F4: the reciprocal of the denominator, the normalisation and the requantization,
        ``finish_lanes`` lanes a cycle, into the output register."""
        D = self.head_dim
        acc_row = data.ArrayLayout(signed(ACC_BITS), D)
        # --- F1: normalise the denominator, address the reciprocal seed -------------------------
        fvalid1 = Signal()
        l_f1 = Signal(DEN_BITS)
        acc_f1 = Signal(acc_row)
        with m.If(en):
            m.d.sync += [fvalid1.eq(valid4 & last4), l_f1.eq(l_new), acc_f1.eq(acc_new)]
        # l >= EXP_ONE (the maximum contributes exactly EXP[0]), so its leading one is at bit
        # 15 .. 24 and the mantissa is a right shift by lead = p - 15.
        lead = 0
        for bit in range(MANT_FRAC_BITS + 1, DEN_BITS):
            lead = Mux(l_f1[bit], bit - MANT_FRAC_BITS, lead)
        lead1 = Signal(range(DEN_BITS - MANT_FRAC_BITS))
        mant1 = Signal(MANT_FRAC_BITS + 1)
        m.d.comb += [lead1.eq(lead), mant1.eq(l_f1 >> lead1)]
        m.submodules.recip_rom = recip_rom = memory.Memory(
            shape=unsigned(RECIP_BITS), depth=1 << RECIP_INDEX_BITS, init=[int(x) for x in recip_table()])
        recip_r = recip_rom.read_port()
        m.d.comb += [recip_r.addr.eq(mant1[MANT_FRAC_BITS - RECIP_INDEX_BITS:MANT_FRAC_BITS]),
                     recip_r.en.eq(en)]

        # --- F2: one Newton step ------------------------------------------------------------------
        fvalid2 = Signal()
        mant2 = Signal.like(mant1)
        lead2 = Signal.like(lead1)
        acc_f2 = Signal(acc_row)
        with m.If(en):
            m.d.sync += [fvalid2.eq(fvalid1), mant2.eq(mant1), lead2.eq(lead1), acc_f2.eq(acc_f1)]
        err2 = Signal(signed(33))
        recip2 = Signal(RECIP_BITS + 1)
        m.d.comb += [
            err2.eq((1 << 31) - mant2 * recip_r.data),
            recip2.eq(round_shift(recip_r.data * err2, 30)),
        ]

        # --- F3: y = acc / l in Q8.16, F lanes per cycle ------------------------------------------
        # The row waits here for S cycles; chunk ``step`` (lanes step*F .. step*F + F - 1) sits in
        # the low lanes of ``acc_f3``, which shifts down by F lanes after each chunk.
        F, S = self.finish_lanes, self.finish_steps
        chunk = data.ArrayLayout(signed(ACC_BITS), F)
        fvalid3 = Signal()
        recip3 = Signal.like(recip2)
        lead3 = Signal.like(lead1)
        acc_f3 = Signal(data.ArrayLayout(signed(ACC_BITS), S * F))
        step = Signal(range(S)) if S > 1 else None
        last_step = Signal()
        m.d.comb += [last_step.eq(step == S - 1 if S > 1 else 1), hold.eq(fvalid3 & ~last_step)]
        with m.If(en):
            m.d.sync += [fvalid3.eq(fvalid2), recip3.eq(recip2), lead3.eq(lead2), acc_f3.eq(acc_f2.as_value())]
            if S > 1:
                m.d.sync += step.eq(0)
        if S > 1:
            with m.Elif(en_out & fvalid3):
                m.d.sync += [acc_f3.eq(acc_f3.as_value() >> (F * ACC_BITS)), step.eq(step + 1)]
        y3 = Signal(chunk)
        # p - 1 = lead + 14: y = acc * r * 2**-(15 + p) * 2**16.
        shift3 = Signal(range(DEN_BITS))
        m.d.comb += shift3.eq(lead3 + (MANT_FRAC_BITS - 1))
        for i in range(F):
            m.d.comb += y3[i].eq(round_shift(acc_f3[i] * recip3, shift3))

        # --- F4: requantize F lanes to int8; the last chunk completes the output register -------------
        fvalid4, last_f4 = Signal(), Signal()
        y4 = Signal(chunk)
        with m.If(en_out):
            m.d.sync += [fvalid4.eq(fvalid3), last_f4.eq(last_step), y4.eq(y3)]
        out8 = Signal(data.ArrayLayout(signed(8), F))
        for i in range(F):
            m.d.comb += out8[i].eq(clamp(round_shift(y4[i] * out_mult, out_shift), INT8_MIN, INT8_MAX))
        # The earlier chunks of the head, oldest in the low lanes (none when S == 1).
        assembly = Signal(8 * F * (S - 1)) if S > 1 else None
        row_bits = Cat(assembly, out8) if S > 1 else out8.as_value()
        with m.If(en_out):
            m.d.sync += self.out.valid.eq(fvalid4 & last_f4)
            with m.If(fvalid4):
                if S > 1:
                    m.d.sync += assembly.eq(row_bits[8 * F:])
                with m.If(last_f4):
                    m.d.sync += self.out.payload.eq(row_bits[:8 * D])

        return fvalid1, fvalid2, fvalid3, fvalid4, step
