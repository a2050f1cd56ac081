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

Several heads a step (``heads_per_step`` = P > 1): S1 .. S4 are built P times ("lanes") and share
each K and V row, so a step runs heads ``j .. j + P - 1`` of a group at one position and the inner
loop above goes ``for j in range(0, group, P)``: ``n_kv_heads * ceil(group / P) * kv_len`` steps. Lane
``p`` reads query row ``head + p`` (a read port per lane) and keeps its heads' state in its own
rotating files, ``ceil(group / P)`` long; a group that is not a multiple of P leaves lanes idle in
its last step of a position (their results are never used). The first step waits for every query
row (P rows are read a cycle, one arrives a cycle). The finish stages stay single: a finished
step's live lanes enter F1 one a cycle, lane 0 first, while the issue slot and S1 .. S4 hold
(``hand``), so each finished step adds (live lanes - 1) cycles to a call.

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
``finish_lanes`` (default: ``head_dim``) sets the finish stages' width and ``heads_per_step``
(default 1, at most ``max_heads``) the query heads run a step (above).

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

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.attention import HEAD_DIM_MAX, MAX_CONTEXT_LIMIT, SCORE_BITS, SCORE_MAX, SCORE_MIN
from golden.errors import InputError
from golden.numerics import ACC_BITS, MULT_BITS, SHIFT_MAX, ceil_div
from golden.tables import EXP_ONE, EXP_OUT_BITS, EXP_TABLE_SIZE, RECIP_INDEX_BITS, exp_table, recip_table

from .arith import clamp, fabric_product, round_saturate8, round_shift, tree_sum
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


def _extra_stage(m, en, launch, name, stage, values=()):
    """A register stage of ``timing_registers``: a stage's control ``stage`` (valid, last and, in
    the position stages, lanes and the V row) and ``values`` registered while ``en``; valid
    cleared at ``launch``. Returns the registered stage and values."""
    names = ("valid", "last", "lanes", "v")[:len(stage)]
    staged = tuple(Signal.like(s, name=f"{n}{name}") for n, s in zip(names, stage, strict=True))
    regs = [Signal(Value.cast(v).shape(), name=f"value{name}_{i}") for i, v in enumerate(values)]
    with m.If(en):
        m.d.sync += [r.eq(s) for r, s in zip(staged, stage, strict=True)]
        m.d.sync += [r.eq(v) for r, v in zip(regs, values, strict=True)]
    with m.If(launch):
        m.d.sync += staged[0].eq(0)
    return staged, regs


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
    default, for head_dim), ``heads_per_step`` (query heads of a group run a step, 1 .. max_heads,
    default 1), ``timing_registers`` (``Config.attention_timing_registers``: registers cut the
    unit's deepest single-cycle paths, each a stage of its own: the dot products' terms before
    their sum (S1x), the logits' products before their shift and clamp (S2x), the exp table's
    read data before S4's rescale (S3x), the Newton step's error before its second multiply
    (F2x), the normalisation's products before their shift (F3x) and the output
    requantization's products before their shift and clamp (F4x), so a call takes
    :data:`sim.machine.cycles.ATTENTION_TIMING_REGISTERS` = 6 cycles more; default False),
    ``rescale_register`` (``Config.attention_rescale_register``: S4 in two stages, S4 the rescale's
    products and S4r their sums into the rotating files, so the recurrence ``acc -> acc * e -> acc``
    has a register on its way; a head's state comes round again only after ``ceil(group / P)``
    steps, so with one step a group at a position the issue slot leaves a cycle between steps;
    see :func:`sim.machine.cycles.attention_cycles`; default False).
    Raises TypeError for a non-integer and ValueError for a value out of range, naming the
    parameter and the value. See the module docstring for ports and timing.
    """

    @checked_constructor
    def __init__(self, *, head_dim: int, max_context: int, max_heads: int, finish_lanes: int | None = None,
                 heads_per_step: int = 1, timing_registers: bool = False, rescale_register: bool = False):
        self.head_dim = check_positive_int("attention head_dim", head_dim)
        self.timing_registers = bool(timing_registers)
        self.rescale_register = bool(rescale_register)
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
        self.heads_per_step = check_positive_int("attention heads_per_step", heads_per_step)
        if heads_per_step > max_heads:
            raise InputError(f"attention heads_per_step must be at most max_heads ({max_heads}), not {heads_per_step}")
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
        H, P = self.max_heads, self.heads_per_step

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
        hand = Signal()         # the heads of a finished step are still entering F1, one a cycle
        en_pos = Signal()       # the issue slot and the position stages S1 .. S4 advance
        m.d.comb += [
            launch.eq(self.start & ~running),
            self.busy.eq(running),
            en_out.eq(~self.out.valid | self.out.ready),
            en.eq(en_out & ~hold),
            en_pos.eq(en & ~hand),
        ]
        # Heads of a group per step: P lanes, the last step of a group has ``group - head_j`` of them.
        blocks = Signal(range(H + 1))       # steps per (KV head, position): ceil(group / P)
        blocks_in = sum((self.group > j * P for j in range(ceil_div(H, P))), start=0) if P > 1 else self.group

        gap = Signal()          # rescale_register: a step may not follow its own head's step
        q_r, q_count, issue, new_row, last_pos, more, pos, head_j, kv_g, base, lanes_i = self._issue(
            m, running, en_pos, gap, kv_len, n_kv, group, n_heads)
        valid1, valid2, valid3, last3, lanes3, rise, dist, v3, m_regs, exp_r = self._scores(
            m, en_pos, launch, issue, new_row, last_pos, lanes_i, q_r, score_mult, score_shift, blocks)
        if self.rescale_register:
            # S4r updates a head's state a cycle after S4 reads it: with one step a position
            # (blocks = 1) consecutive steps are the same heads, so a step issues only after a bubble.
            m.d.comb += gap.eq((blocks == 1) & valid1)
        valid4, last4, l_regs, acc_regs, l_new, acc_new = self._accumulate(
            m, en, en_pos, hand, launch, valid3, last3, lanes3, rise, dist, v3, exp_r, blocks)
        fvalid1, fvalid2, fvalid3, fvalid4, step = self._finish(
            m, en, en_out, hold, launch, valid4, last4, l_new, acc_new, out_mult, out_shift)

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
                n_heads.eq(fabric_product(self.n_kv_heads, self.group)),
                blocks.eq(blocks_in),
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
            m.d.sync += [reg.eq(SCORE_MIN) for lane in m_regs for reg in lane]
            m.d.sync += [reg.eq(0) for lane in l_regs + acc_regs for reg in lane]
        with m.Elif(running):
            m.d.sync += self.cycles.eq(self.cycles + 1)
            with m.If(out_fire & (out_count == n_heads - 1)):
                m.d.sync += [running.eq(0), self.done.eq(1)]
        return m

    def _issue(self, m, running, en_pos, gap, kv_len, n_kv, group, n_heads):
        """The query memory (filled by the q stream, one row per query head) and the issue slot
        (for g, for t, for j in steps of P). Returns the query read ports (one per lane), the query
        count, the issue state and the step's live lanes."""
        D, H, P = self.head_dim, self.max_heads, self.heads_per_step
        # --- query memory: filled by the q stream, one row per query head; lane p reads head + p
        # (a row past the last head, for an idle lane, is whatever the memory holds).
        m.submodules.qmem = qmem = memory.Memory(shape=unsigned(8 * D), depth=H + P - 1, init=[])
        q_w = qmem.write_port()
        q_r = [qmem.read_port() for _ in range(P)]
        q_count = Signal(range(H + 1))
        q_fire = Signal()
        m.d.comb += [
            self.q.ready.eq(running & (q_count != n_heads)),
            q_fire.eq(self.q.valid & self.q.ready),
            q_w.addr.eq(q_count), q_w.data.eq(self.q.payload), q_w.en.eq(q_fire),
        ]
        with m.If(q_fire):
            m.d.sync += q_count.eq(q_count + 1)

        # --- issue: for g, for t, for j in steps of P ----------------------------------------
        more = Signal()
        pos = Signal(range(self.max_context + 1))
        head_j = Signal(range(H + P))
        kv_g = Signal(range(H + 1))
        base = Signal(range(H + 1))          # g * group: the group's first query head
        head = Signal(range(2 * H + P))
        left = Signal(range(H + P))          # heads of the group from head_j on
        lanes_i = Signal(range(P + 1))       # live lanes of the step: min(P, left)
        q_ok = Signal()
        new_row = Signal()
        can_issue = Signal()
        issue = Signal()
        last_pos = Signal()
        last_head = Signal()
        m.d.comb += [
            head.eq(base + head_j),
            left.eq(group - head_j),
            lanes_i.eq(Mux(left >= P, P, left)),
            # One lane: this head's query row was written at an earlier edge (rows keep arriving
            # one a cycle while the group's first steps run). Several lanes read several rows a
            # cycle, so the first step waits until every row is in.
            q_ok.eq(q_count > head if P == 1 else q_count == n_heads),
            new_row.eq(head_j == 0),
            can_issue.eq(running & more & en_pos & q_ok & ~gap),
            issue.eq(can_issue & (~new_row | (self.k.valid & self.v.valid))),
            self.k.ready.eq(can_issue & new_row & self.v.valid),
            self.v.ready.eq(can_issue & new_row & self.k.valid),
            last_pos.eq(pos == kv_len - 1),
            last_head.eq(left <= P),
        ]
        for p, port in enumerate(q_r):
            m.d.comb += [port.addr.eq(head + p), port.en.eq(en_pos)]
        with m.If(issue):
            with m.If(~last_head):
                m.d.sync += head_j.eq(head_j + P)
            with m.Else():
                m.d.sync += head_j.eq(0)
                with m.If(~last_pos):
                    m.d.sync += pos.eq(pos + 1)
                with m.Else():
                    m.d.sync += [pos.eq(0), kv_g.eq(kv_g + 1), base.eq(base + group)]
                    with m.If(kv_g == n_kv - 1):
                        m.d.sync += more.eq(0)

        return q_r, q_count, issue, new_row, last_pos, more, pos, head_j, kv_g, base, lanes_i

    def _scores(self, m, en_pos, launch, issue, new_row, last_pos, lanes_i, q_r, score_mult, score_shift, blocks):
        """S1 .. S3: per lane the dot product, the scaled logit, the running maximum and the exp
        table address."""
        D, H, P = self.head_dim, self.max_heads, self.heads_per_step
        row = row_layout(D)
        # --- S1: dot products. The K/V row registers load on a group's first step only and are
        # held while the group's other steps use the same row; every lane reads the same K row.
        valid1, last1 = Signal(name="valid1"), Signal(name="last1")
        lanes1 = Signal.like(lanes_i)
        k1 = Signal(row)
        v1 = Signal(row)
        with m.If(en_pos):
            m.d.sync += [valid1.eq(issue), last1.eq(last_pos), lanes1.eq(lanes_i)]
        with m.If(issue & new_row):
            m.d.sync += [k1.eq(self.k.payload), v1.eq(self.v.payload)]
        terms = [[fabric_product(data.View(row, q_r[p].data)[i], k1[i]) for i in range(D)] for p in range(P)]
        staged1 = valid1, last1, lanes1, v1
        if self.timing_registers:
            # --- S1x (timing_registers): the dot products' terms registered before their sum.
            staged1, flat = _extra_stage(m, en_pos, launch, "1x", staged1, [t for lane in terms for t in lane])
            terms = [flat[p * D:(p + 1) * D] for p in range(P)]
        dots = []
        for p in range(P):
            dot = Signal(signed(ACC_BITS), name=f"dot{p}" if P > 1 else "dot")
            m.d.comb += dot.eq(tree_sum(terms[p]))
            dots.append(dot)

        # --- S2: scaled, rounded, clamped logits ------------------------------------------------
        valid2, last2 = Signal(name="valid2"), Signal(name="last2")
        lanes2 = Signal.like(lanes_i)
        v2 = Signal(row)
        with m.If(en_pos):
            m.d.sync += [valid2.eq(staged1[0]), last2.eq(staged1[1]), lanes2.eq(staged1[2]), v2.eq(staged1[3])]
        products = []
        for p in range(P):
            s2 = Signal(signed(ACC_BITS), name=f"s2_{p}" if P > 1 else "s2")
            with m.If(en_pos):
                m.d.sync += s2.eq(dots[p])
            products.append(s2 * score_mult)
        staged2 = valid2, last2, lanes2, v2
        if self.timing_registers:
            # --- S2x (timing_registers): the logits' products registered before the shift and clamp.
            staged2, products = _extra_stage(m, en_pos, launch, "2x", staged2, products)
        zs = []
        for p in range(P):
            z = Signal(signed(SCORE_BITS), name=f"z{p}" if P > 1 else "z")
            m.d.comb += z.eq(clamp(round_shift(products[p], score_shift), SCORE_MIN, SCORE_MAX))
            zs.append(z)

        # --- S3: running maximum (per head, rotating) and the exp table address ----------------
        valid3, last3 = Signal(name="valid3"), Signal(name="last3")
        lanes3 = Signal.like(lanes_i)
        v3 = Signal(row)
        with m.If(en_pos):
            m.d.sync += [valid3.eq(staged2[0]), last3.eq(staged2[1]), lanes3.eq(staged2[2]), v3.eq(staged2[3])]
        m.submodules.exp_rom = exp_rom = memory.Memory(
            shape=unsigned(EXP_OUT_BITS + 1), depth=EXP_TABLE_SIZE, init=[int(x) for x in exp_table()])
        index_bits = (EXP_TABLE_SIZE - 1).bit_length()
        regs = ceil_div(H, P)
        m_regs, rises, dists, exp_rs = [], [], [], []
        for p in range(P):
            sfx = f"_{p}" if P > 1 else ""
            z3 = Signal(signed(SCORE_BITS), name=f"z3{sfx}")
            with m.If(en_pos):
                m.d.sync += z3.eq(zs[p])
            lane_m = [Signal(signed(SCORE_BITS), init=SCORE_MIN, name=f"max{j}{sfx}") for j in range(regs)]
            diff = Signal(signed(SCORE_BITS + 2), name=f"diff{sfx}")
            rise = Signal(name=f"rise{sfx}")
            dist = Signal(SCORE_BITS + 1, name=f"dist{sfx}")
            m_new = Signal(signed(SCORE_BITS), name=f"m_new{sfx}")
            m_next = Signal(signed(SCORE_BITS), name=f"m_next{sfx}")
            m.d.comb += [
                diff.eq(z3 - lane_m[0]),
                rise.eq(diff > 0),
                dist.eq(Mux(rise, diff, -diff)),
                m_new.eq(Mux(rise, z3, lane_m[0])),
                m_next.eq(Mux(last3, SCORE_MIN, m_new)),   # a finished head leaves a fresh state
            ]
            _rotate(m, lane_m, m_next, blocks, en_pos & valid3)
            exp_r = exp_rom.read_port()
            m.d.comb += [exp_r.addr.eq(dist[:index_bits]), exp_r.en.eq(en_pos)]
            m_regs.append(lane_m)
            rises.append(rise)
            dists.append(dist)
            exp_rs.append(exp_r)

        return valid1, valid2, valid3, last3, lanes3, rises, dists, v3, m_regs, exp_rs

    def _accumulate(self, m, en, en_pos, hand, launch, valid3, last3, lanes3, rises, dists, v3, exp_rs, blocks):
        """S4: rescale and accumulate each head's denominator and weighted sums (per lane,
        rotating); the heads of a finished step leave for F1 one a cycle (``hand``)."""
        D, H, P = self.head_dim, self.max_heads, self.heads_per_step
        row = row_layout(D)
        acc_row = data.ArrayLayout(signed(ACC_BITS), D)
        # --- S4: rescale and accumulate (per head, rotating) ------------------------------------
        valid4, last4 = Signal(name="valid4"), Signal(name="last4")
        lanes4 = Signal.like(lanes3)
        v4 = Signal(row)
        regs = ceil_div(H, P)
        rises = [rises[p] for p in range(P)]
        beyonds = [dists[p] >= EXP_TABLE_SIZE for p in range(P)]
        exps = [exp_rs[p].data for p in range(P)]
        if self.timing_registers:
            # --- S3x (timing_registers): the exp table's read data is registered before S4 uses it
            # (here it is the table's data, a beyond-the-table distance reads 0; S4 registers it).
            (valid3, last3, lanes3, v3), flags = _extra_stage(m, en_pos, launch, "3x", (valid3, last3, lanes3, v3),
                                                              rises + beyonds)
            rises = flags[:P]
            exps = [Mux(flags[P + p], 0, exps[p]) for p in range(P)]
            beyonds = [Const(0)] * P
        with m.If(en_pos):
            m.d.sync += [valid4.eq(valid3), last4.eq(last3), lanes4.eq(lanes3), v4.eq(v3)]
        with m.If(launch):
            m.d.sync += valid4.eq(0)
        R = self.rescale_register
        if R:
            # --- S4r (rescale_register): S4's products registered; S4r sums them into the files.
            (valid4r, last4r, lanes4r), _ = _extra_stage(m, en_pos, launch, "4r", (valid4, last4, lanes4))
            valid_w, last_w, lanes_w = valid4r, last4r, lanes4r
        else:
            valid_w, last_w, lanes_w = valid4, last4, lanes4
        s, half = EXP_OUT_BITS, 1 << (EXP_OUT_BITS - 1)
        l_regs, acc_regs, l_news, acc_news = [], [], [], []
        for p in range(P):
            sfx = f"_{p}" if P > 1 else ""
            rise4, beyond4 = Signal(name=f"rise4{sfx}"), Signal(name=f"beyond4{sfx}")
            with m.If(en_pos):
                m.d.sync += [rise4.eq(rises[p]), beyond4.eq(beyonds[p])]
            e4 = Signal(EXP_OUT_BITS + 1, name=f"e4{sfx}")
            w4 = Signal(EXP_OUT_BITS + 1, name=f"w4{sfx}")
            if self.timing_registers:
                e4_reg = Signal(EXP_OUT_BITS + 1, name=f"e4_reg{sfx}")
                with m.If(en_pos):
                    m.d.sync += e4_reg.eq(exps[p])
                exp_data = e4_reg
            else:
                exp_data = exps[p]
            # A rise gets a = EXP[z - m_old] and w = EXP[0]; otherwise no rescale and w = EXP[m - z].
            m.d.comb += [e4.eq(Mux(beyond4, 0, exp_data)), w4.eq(Mux(rise4, EXP_ONE, e4))]
            lane_l = [Signal(DEN_BITS, name=f"den{j}{sfx}") for j in range(regs)]
            lane_acc = [Signal(acc_row, name=f"acc{j}{sfx}") for j in range(regs)]
            l_new = Signal(DEN_BITS, name=f"l_new{sfx}")
            acc_new = Signal(acc_row, name=f"acc_new{sfx}")
            # round_shift(old * e4, s) + pv on a rise, old + pv otherwise (s = EXP_OUT_BITS), as
            # one sum after the product: (Mux(rise, old * e4, old * 2**s) + half + pv * 2**s) >> s,
            # exact since floor((x + half + pv * 2**s) / 2**s) = floor((x + half) / 2**s) + pv and
            # floor((old + pv) * 2**s + half) / 2**s) = old + pv. The rounding half and pv * 2**s
            # (made beside the multiplier) are one addend, so the product meets one adder, not a
            # rounding adder and then pv's (the three in series were the routed board design's
            # slowest path).
            if not R:
                m.d.comb += l_new.eq(Mux(rise4, round_shift(lane_l[0] * e4, s), lane_l[0]) + w4)
                for i in range(D):
                    old = lane_acc[0][i]
                    addend = (fabric_product(w4, v4[i]) << s) + half
                    m.d.comb += acc_new[i].eq((Mux(rise4, old * e4, old << s) + addend) >> s)
            else:
                # S4 reads the head's state where it is: the file's front, or the place behind it
                # while S4r's step (the head before it, blocks >= 2) goes to the back this cycle; a
                # head's own step is never in S4r (the issue slot's gap when blocks = 1). S4r sums
                # the same one-sum form, l's too (w4 in place of pv).
                def current(lane):
                    return Mux(valid4r, lane[1], lane[0]) if regs > 1 else lane[0]
                l_old = current(lane_l)
                l_prod = Signal(DEN_BITS + EXP_OUT_BITS + 1, name=f"l_prod{sfx}")
                w4r = Signal.like(w4, name=f"w4r{sfx}")
                with m.If(en_pos):
                    m.d.sync += [l_prod.eq(Mux(rise4, l_old * e4, l_old << s)), w4r.eq(w4)]
                m.d.comb += l_new.eq((l_prod + (w4r << s) + half) >> s)
                acc_old = data.View(acc_row, current([x.as_value() for x in lane_acc]))
                for i in range(D):
                    old = acc_old[i]
                    prod = Signal(signed(ACC_BITS + EXP_OUT_BITS + 1), name=f"acc_prod{i}{sfx}")
                    pv = Signal(signed(EXP_OUT_BITS + 10), name=f"pv{i}{sfx}")
                    with m.If(en_pos):
                        m.d.sync += [prod.eq(Mux(rise4, old * e4, old << s)), pv.eq(fabric_product(w4, v4[i]))]
                    m.d.comb += acc_new[i].eq((prod + (pv << s) + half) >> s)
            _rotate(m, lane_l, Mux(last_w, 0, l_new), blocks, en_pos & valid_w)
            _rotate(m, lane_acc, Mux(last_w, 0, acc_new.as_value()), blocks, en_pos & valid_w)
            l_regs.append(lane_l)
            acc_regs.append(lane_acc)
            l_news.append(l_new)
            acc_news.append(acc_new)
        if P == 1:
            return valid_w, last_w, l_regs, acc_regs, l_news[0], acc_news[0]

        # --- hand-off: a finished step's live lanes enter F1 one a cycle, lane ``sel`` first;
        # the position stages hold (``hand``) until the last live lane is taken.
        sel = Signal(range(P))
        final = Signal()
        m.d.comb += [final.eq(sel == lanes_w - 1), hand.eq(valid_w & last_w & ~final)]
        with m.If(launch):
            m.d.sync += sel.eq(0)
        with m.Elif(en & valid_w & last_w):
            m.d.sync += sel.eq(Mux(final, 0, sel + 1))
        l_sel = Signal(DEN_BITS)
        acc_sel = Signal(acc_row)
        l_pick, acc_pick = l_news[0], acc_news[0].as_value()
        for p in range(1, P):
            l_pick = Mux(sel == p, l_news[p], l_pick)
            acc_pick = Mux(sel == p, acc_news[p].as_value(), acc_pick)
        m.d.comb += [l_sel.eq(l_pick), acc_sel.eq(acc_pick)]
        return valid_w, last_w, l_regs, acc_regs, l_sel, acc_sel

    def _finish(self, m, en, en_out, hold, launch, valid4, last4, l_new, acc_new, out_mult, out_shift):
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
        r0 = recip_r.data
        m.d.comb += err2.eq((1 << 31) - mant2 * r0)
        err = err2
        if self.timing_registers:
            # --- F2x (timing_registers): the Newton step's error and seed registered before its
            # second multiply.
            fvalid2x = Signal(name="fvalid2x")
            lead2x, acc_f2x = Signal.like(lead2, name="lead2x"), Signal(acc_row, name="acc_f2x")
            err, r0 = Signal.like(err2, name="err2x"), Signal.like(recip_r.data, name="r0_2x")
            with m.If(en):
                m.d.sync += [fvalid2x.eq(fvalid2), lead2x.eq(lead2), acc_f2x.eq(acc_f2), err.eq(err2),
                             r0.eq(recip_r.data)]
            with m.If(launch):
                m.d.sync += fvalid2x.eq(0)
            staged2 = fvalid2x, lead2x, acc_f2x
        else:
            staged2 = fvalid2, lead2, acc_f2
        m.d.comb += recip2.eq(round_shift(r0 * err, 30))

        # --- F3: y = acc / l in Q8.16, F lanes per cycle ------------------------------------------
        # The row waits here for S cycles; chunk ``step`` (lanes step*F .. step*F + F - 1) sits in
        # the low lanes of ``acc_f3``, which shifts down by F lanes after each chunk.
        F, S = self.finish_lanes, self.finish_steps
        chunk = data.ArrayLayout(signed(ACC_BITS), F)
        fvalid3 = Signal()
        recip3 = Signal.like(recip2)
        lead3 = Signal.like(lead1)
        acc_f3 = Signal(data.ArrayLayout(signed(ACC_BITS), S * F))
        step = Signal(range(S), name="step") if S > 1 else None
        last_step = Signal()
        m.d.comb += [last_step.eq(step == S - 1 if S > 1 else 1), hold.eq(fvalid3 & ~last_step)]
        with m.If(en):
            m.d.sync += [fvalid3.eq(staged2[0]), recip3.eq(recip2), lead3.eq(staged2[1]),
                         acc_f3.eq(staged2[2].as_value())]
            if S > 1:
                m.d.sync += step.eq(0)
        if S > 1:
            with m.Elif(en_out & fvalid3):
                m.d.sync += [acc_f3.eq(acc_f3.as_value() >> (F * ACC_BITS)), step.eq(step + 1)]
        y3 = Signal(chunk)
        # p - 1 = lead + 14: y = acc * r * 2**-(15 + p) * 2**16.
        shift3 = Signal(range(DEN_BITS))
        m.d.comb += shift3.eq(lead3 + (MANT_FRAC_BITS - 1))
        products3 = [acc_f3[i] * recip3 for i in range(F)]
        ready3, last3x = fvalid3, last_step
        if self.timing_registers:
            # --- F3x (timing_registers): the normalisation's products registered before the shift.
            (ready3, last3x), regs = _extra_stage(m, en_out, launch, "_f3x", (fvalid3, last_step),
                                                  [*products3, shift3])
            products3, shift3 = regs[:F], regs[F]
        for i in range(F):
            m.d.comb += y3[i].eq(round_shift(products3[i], shift3))

        # --- F4: requantize F lanes to int8; the last chunk completes the output register -------------
        fvalid4, last_f4 = Signal(name="fvalid4"), Signal(name="last_f4")
        y4 = Signal(chunk)
        with m.If(en_out):
            m.d.sync += [fvalid4.eq(ready3), last_f4.eq(last3x), y4.eq(y3)]
        products = [y4[i] * out_mult for i in range(F)]
        ready4, last4x = fvalid4, last_f4
        if self.timing_registers:
            # --- F4x (timing_registers): the products registered before the shift and clamp.
            (ready4, last4x), products = _extra_stage(m, en_out, launch, "_f4x", (fvalid4, last_f4), products)
        out8 = Signal(data.ArrayLayout(signed(8), F))
        for i in range(F):
            m.d.comb += out8[i].eq(round_saturate8(products[i], out_shift))
        # The earlier chunks of the head, oldest in the low lanes (none when S == 1).
        assembly = Signal(8 * F * (S - 1)) if S > 1 else None
        row_bits = Cat(assembly, out8) if S > 1 else out8.as_value()
        with m.If(en_out):
            m.d.sync += self.out.valid.eq(ready4 & last4x)
            with m.If(ready4):
                if S > 1:
                    m.d.sync += assembly.eq(row_bits[8 * F:])
                with m.If(last4x):
                    m.d.sync += self.out.payload.eq(row_bits[:8 * D])

        return fvalid1, fvalid2, fvalid3, fvalid4, step
