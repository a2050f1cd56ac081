"""Formal harnesses of the vector unit (:mod:`hdl.vector`) on a small configuration."""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.asserts import AnyConst
from amaranth.hdl import Assert, Assume, Cover, Mux, Signal
from amaranth.lib import data

from golden.numerics import ceil_div
from hdl.vector import LAYER_STATS_EXTRA, NORM_STATS_CYCLES, VectorOp, VectorUnit, cmd_layout
from sim.machine.cycles import vector_cycles

from .harness import Harness, Probe, StreamMonitor, copies_equal, free, popcount

__all__ = ["SMALL", "VectorControl", "VectorCycles", "commands", "legal_vector_command", "operand_beats",
           "vector_invariants"]

#: The unit the proofs run on: 2 lanes, vectors of up to 5 elements (a partial last beat), norm rows of
#: up to 4, RoPE heads of 4 (two words, one a half), one RoPE position and one activation table.
SMALL = {"lanes": 2, "max_length": 5, "max_norm_length": 4, "max_head_dim": 4, "max_context": 1, "act_tables": 1}

_NORMS = (VectorOp.RMSNORM, VectorOp.LAYERNORM)


def _lengths(unit: VectorUnit, op: VectorOp) -> list[int]:
    """The lengths the host allows for ``op`` (:func:`sim.flows.vector.check_op`): 1 .. max_length,
    1 .. max_norm_length for the norms, a RoPE head a multiple of 2 * lanes up to max_head_dim."""
    if op in _NORMS:
        return list(range(1, unit.max_norm_length + 1))
    if op == VectorOp.ROPE:
        return list(range(2 * unit.lanes, unit.max_head_dim + 1, 2 * unit.lanes))
    return list(range(1, unit.max_length + 1))


def commands(unit: VectorUnit, *, max_heads: int = 2) -> list[tuple[VectorOp, int, int]]:
    """Every (op, length, heads) the bounded jobs run: each op at each legal length, RoPE with 1 ..
    ``max_heads`` heads (``heads`` 0 is one head too), the others with ``heads`` 1."""
    return [(op, n, h) for op in VectorOp for n in _lengths(unit, op)
            for h in (range(0, max_heads + 1) if op == VectorOp.ROPE else (1,))]


def operand_beats(unit, cmd):
    """The operand beats a command takes: W = ceil(length / lanes), 2 W for the norms, h W for RoPE's h
    heads (``heads`` 0 is one)."""
    L = unit.lanes
    w = (cmd.length + (L - 1)) // L
    is_norm = (cmd.op == VectorOp.RMSNORM) | (cmd.op == VectorOp.LAYERNORM)
    heads = Mux(cmd.op == VectorOp.ROPE, Mux(cmd.heads == 0, 1, cmd.heads), 1)
    return Mux(is_norm, 2 * w, heads * w)


def legal_vector_command(unit, cmd):
    """The command's op and length as the host checks them (any heads)."""
    fits = 0
    for op in VectorOp:
        ok = 0
        for n in _lengths(unit, op):
            ok = ok | (cmd.length == n)
        fits = fits | ((cmd.op == op) & ok)
    return fits & (cmd.table < unit.act_tables) & (cmd.position < unit.max_context)


class VectorControl(Harness):
    """VectorUnit, any commands the host allows (any op, any legal length, any RoPE head count), any
    operand stream that keeps the stream rules, any back-pressure on ``out``, any table writes (proven by
    induction):

    * ``cmd`` is taken only while idle; ``busy`` the cycle after, until the cycle after the beat with
      ``last`` is taken; ``busy`` falls only then; ``inp`` taken only while busy; ``out`` quiet while idle;
    * ``out``: a beat offered and not taken stays offered, unchanged;
    * no beat lost or duplicated: a command takes exactly W = ceil(length / lanes) operand beats (2 W
      for the norms, h W for RoPE's h heads) and sends exactly W result beats (1 for ARGMAX, h W for
      RoPE), ``last`` on the final one only;
    * the norms' statistics chain resumes the second pass exactly once (one token in the chain while a
      norm waits, none otherwise).

    Invariants added for induction: the issue slot's counters agree (base = w x lanes, remaining =
    length - base >= 1); the beats issued (a closed form of the slot's state) = beats taken, and the
    result beats issued = beats sent + result beats in the stages (three; five with product_register)
    and the output register; once the final slot has issued, every beat in flight has the final beat
    at its stage or behind it; the latched command is one the host allows.
    """

    def __init__(self, **params):
        super().__init__()
        self.params = {**SMALL, **params}

    def build(self, m):
        unit = VectorUnit(**self.params)
        probe = Probe(unit)
        m.submodules.dut = probe.fragment
        for port in (unit.cmd.valid, unit.cmd.payload, unit.inp.valid, unit.inp.payload, unit.out.ready,
                     unit.tbl_we, unit.tbl_sel, unit.tbl_addr, unit.tbl_data):
            free(m, port)
        with m.If(unit.cmd.valid):
            m.d.comb += Assume(legal_vector_command(unit, unit.cmd.payload))
        v = vector_invariants(m, unit, probe)
        v.cmd.assume_sent_by_environment(m)
        v.inp.assume_sent_by_environment(m)
        c, was_busy, busy, st = v.c, v.was_busy, unit.busy, v.st
        is_norm = (c.op == VectorOp.RMSNORM) | (c.op == VectorOp.LAYERNORM)
        m.d.comb += Cover(was_busy & ~busy & is_norm & (c.length == 3))
        m.d.comb += Cover(was_busy & ~busy & (c.op == VectorOp.ROPE) & (c.heads == 2))
        m.d.comb += Cover(unit.out.valid & ~unit.out.ready & st[3, "valid"] & st[2, "valid"])


def vector_invariants(m, unit: VectorUnit, probe: Probe) -> SimpleNamespace:
    """The vector unit's promises and the invariants that make them inductive (see :class:`VectorControl`),
    stated on ``unit`` (its ports) and ``probe`` (its registers), wherever the unit is instantiated. The
    caller states what the unit asks of its environment: commands the host allows on ``cmd``, the
    stream rules on ``cmd`` and ``inp`` (the returned monitors ``cmd``, ``inp``)."""
    L = unit.lanes
    layout = cmd_layout(unit.max_length, unit.max_context, unit.act_tables)
    cmd_s = StreamMonitor(m, unit.cmd, name="vec_cmds")
    inp = StreamMonitor(m, unit.inp, name="vec_inps")
    out = StreamMonitor(m, unit.out, name="vec_outs")
    out.sender_rules(m)
    busy = unit.busy
    c = data.View(layout, probe["c"])
    # each lane's copy of the opcode and of the norms' shift (hdl.fanout)
    copies_equal(m, probe, "lane_op", L, c.op)
    copies_equal(m, probe, "stats/k_shift_lane", L, probe["stats/k_shift"])
    p = {n: probe[n] for n in ("issuing", "pass2", "remaining", "w", "base", "heads_left")}
    # The stages a beat crosses before the output register, in order: 1, M and A1 (with
    # product_register), 2, 3, the output stage's product (with product_register).
    reg = unit.product_register
    names = ["p1", *(["pm", "pa"] if reg else []), "p2", "p3", *(["pq"] if reg else [])]
    stages = range(1, len(names) + 1)
    st = {(k, f): probe[f"{n}_{f}"] for k, n in zip(stages, names, strict=True)
          for f in ("valid", "final", "pass2", "s1_end")}
    tokens = [probe[f"stats/stats_token{i}"]
              for i in range(NORM_STATS_CYCLES + (LAYER_STATS_EXTRA if unit.product_register else 0))]

    # busy, cmd
    fire_cmd = cmd_s.fire
    started, was_fire, was_busy = Signal(), Signal(), Signal()
    last_fire = out.fire & unit.out.payload.last
    was_last = Signal()
    m.d.sync += [was_fire.eq(fire_cmd), was_busy.eq(busy), was_last.eq(last_fire)]
    with m.If(fire_cmd):
        m.d.sync += started.eq(1)
    m.d.comb += Assert(unit.cmd.ready == ~busy)
    with m.If(was_fire):
        m.d.comb += Assert(busy)
    with m.If(was_busy & ~busy):
        m.d.comb += Assert(was_last)
    with m.If(was_last):
        m.d.comb += Assert(~busy)
    with m.If(~busy):
        m.d.comb += [Assert(~unit.inp.ready), Assert(~unit.out.valid)]
    with m.If(busy):
        m.d.comb += [Assert(started), Assume(legal_vector_command(unit, c))]

    # The running command's decoded op and its sizes.
    is_norm = (c.op == VectorOp.RMSNORM) | (c.op == VectorOp.LAYERNORM)
    is_rope = c.op == VectorOp.ROPE
    is_argmax = c.op == VectorOp.ARGMAX
    two_pass = is_norm | is_rope
    W = Signal(range(ceil_div(unit.max_length, L) + 1))
    m.d.comb += W.eq((c.length + (L - 1)) // L)
    H = Signal.like(p["heads_left"])
    m.d.comb += H.eq(Mux(c.heads == 0, 1, c.heads))

    # The issue slot.
    issuing, pass2, w, heads_left = p["issuing"], p["pass2"], p["w"], p["heads_left"]
    done_issue = Signal()            # the command's final slot has issued
    with m.If(fire_cmd):
        m.d.sync += done_issue.eq(0)
    with m.Elif(probe["issue"] & probe["final"]):
        m.d.sync += done_issue.eq(1)
    with m.If(busy):
        m.d.comb += [Assert(p["base"] == w * L), Assert(p["remaining"] == c.length - p["base"]),
                     Assert(p["remaining"] >= 1), Assert(heads_left >= 1), Assert(heads_left <= H)]
        with m.If(pass2):
            m.d.comb += Assert(two_pass)
        with m.If(~is_rope):
            m.d.comb += Assert(heads_left == H)
        with m.If(done_issue):
            m.d.comb += [Assert(~issuing), Assert(w == 0), Assert(pass2 == two_pass)]
            with m.If(is_rope):
                m.d.comb += Assert(heads_left == 1)
        with m.If(~issuing & ~done_issue):
            m.d.comb += [Assert(is_norm), Assert(pass2), Assert(w == 0)]
    with m.Else():
        m.d.comb += Assert(~issuing)

    # The statistics chain: one token while a norm waits for it, none otherwise.
    waiting = busy & ~issuing & ~done_issue
    # (the stages up to the one the sums are taken from: 2, A1 with product_register)
    markers = [st[k, "valid"] & st[k, "s1_end"] for k in stages[:names.index("pa" if reg else "p2") + 1]] + tokens
    m.d.comb += Assert(popcount(markers) == waiting)

    # Beats issued (a closed form of the slot's state), taken and sent.
    heads_done = H - heads_left
    in_issued = Signal(range(2 * unit.max_length * unit.max_length + 2))
    out_issued = Signal.like(in_issued)
    m.d.comb += [
        in_issued.eq(Mux(done_issue, operand_beats(unit, c),
                     Mux(is_rope, heads_done * W + Mux(pass2, W, w), Mux(pass2, W + w, w)))),
        out_issued.eq(Mux(done_issue, Mux(is_argmax, 1, Mux(is_rope, H, 1) * W),
                      Mux(is_rope, heads_done * W + Mux(pass2, w, 0),
                      Mux(is_norm, Mux(pass2, w, 0), Mux(is_argmax, 0, w))))),
    ]
    taken, sent = Signal.like(in_issued), Signal.like(in_issued)
    with m.If(fire_cmd):
        m.d.sync += [taken.eq(0), sent.eq(0)]
    with m.Else():
        m.d.sync += [taken.eq(taken + inp.fire), sent.eq(sent + out.fire)]

    def emits(k):
        return st[k, "valid"] & Mux(two_pass, st[k, "pass2"], Mux(is_argmax, st[k, "final"], 1))

    inflight = popcount([*(emits(k) for k in stages), unit.out.valid])
    with m.If(busy):
        m.d.comb += [Assert(taken == in_issued), Assert(sent + inflight == out_issued)]
        with m.If(unit.out.valid & unit.out.payload.last):
            m.d.comb += Assert(sent + 1 == out_issued)
    # Order: once the final slot has issued, a beat in flight has the final beat at its stage or
    # behind it; the final beat is the last one in flight, and ``last`` marks it alone.
    finals = [st[k, "valid"] & st[k, "final"] for k in stages]
    for k in stages:
        behind = 0
        for j in range(1, k + 1):
            behind = behind | finals[j - 1]
        with m.If(st[k, "valid"] & ~(busy & ~done_issue)):
            m.d.comb += Assert(behind)
        with m.If(finals[k - 1]):
            m.d.comb += [Assert(busy & done_issue), Assert(emits(k))]
            for j in range(1, k):
                m.d.comb += Assert(~st[j, "valid"])
        with m.If(st[k, "valid"] & ~finals[k - 1]):
            m.d.comb += Assert(busy)
    with m.If(unit.out.valid & unit.out.payload.last):
        m.d.comb += [Assert(~st[k, "valid"]) for k in stages]
        m.d.comb += Assert(done_issue)
    with m.If(unit.out.valid & ~unit.out.payload.last):
        m.d.comb += Assert(popcount(finals) == done_issue)
    with m.If(busy & done_issue & ~(unit.out.valid & unit.out.payload.last)):
        m.d.comb += Assert(popcount(finals) == 1)
    with m.If(was_busy & ~busy):
        m.d.comb += [Assert(taken == in_issued), Assert(sent == out_issued)]
    return SimpleNamespace(cmd=cmd_s, inp=inp, out=out, c=c, st=st, was_busy=was_busy, taken=taken)


class VectorCycles(Harness):
    """VectorUnit given one command (any of :func:`commands`, ``AnyConst``), operands always valid,
    ``out`` always ready (bounded): ``busy`` falls exactly when ``cycles`` reaches the cycle model's
    prediction (:func:`sim.machine.cycles.vector_cycles`), never before, and the unit then takes the
    next command: the bounded response the depth runs past."""

    def __init__(self, *, max_heads: int = 2, **params):
        super().__init__()
        self.params = {**SMALL, **params}
        self.max_heads = max_heads

    def _unit(self):
        return VectorUnit(**self.params)

    def predicted(self, unit, command) -> int:
        op, n, h = command
        return vector_cycles(op, n, unit.lanes, heads=max(h, 1), product_register=unit.product_register).total

    def depth(self) -> int:
        unit = self._unit()
        unit._MustUse__silence = True
        return max(self.predicted(unit, c) for c in commands(unit, max_heads=self.max_heads)) + 3

    def build(self, m):
        m.submodules.dut = unit = self._unit()
        layout = cmd_layout(unit.max_length, unit.max_context, unit.act_tables)
        cmd = Signal(layout)
        m.d.comb += cmd.as_value().eq(AnyConst(layout.size))
        known = 0
        for op, n, h in commands(unit, max_heads=self.max_heads):
            known = known | ((cmd.op == op) & (cmd.length == n) & (cmd.heads == h))
        m.d.comb += Assume(known & (cmd.table < unit.act_tables) & (cmd.position < unit.max_context))
        first = Signal(init=1)
        m.d.sync += first.eq(0)
        for port in (unit.inp.payload, unit.tbl_we, unit.tbl_sel, unit.tbl_addr, unit.tbl_data):
            free(m, port)
        m.d.comb += [unit.cmd.valid.eq(first), unit.cmd.payload.eq(cmd), unit.inp.valid.eq(1), unit.out.ready.eq(1)]
        want = Signal.like(unit.cycles)
        for command in commands(unit, max_heads=self.max_heads):
            op, n, h = command
            with m.If((cmd.op == op) & (cmd.length == n) & (cmd.heads == h)):
                m.d.comb += want.eq(self.predicted(unit, command))
        was_busy = Signal()
        m.d.sync += was_busy.eq(unit.busy)
        with m.If(was_busy & ~unit.busy):
            m.d.comb += Assert(unit.cycles == want)
        with m.If(unit.busy):
            m.d.comb += Assert(unit.cycles < want)
        finished = Signal()
        with m.If(was_busy & ~unit.busy):
            m.d.sync += finished.eq(1)
        with m.If(finished):
            m.d.comb += [Assert(~unit.busy), Assert(unit.cycles == want)]
        with m.If(~first):
            m.d.comb += Assert(unit.busy | finished | was_busy)
        m.d.comb += Cover(was_busy & ~unit.busy & (cmd.op == VectorOp.LAYERNORM) & (cmd.length == 4))
