"""Formal harnesses of the decode-attention unit (:mod:`hdl.attention`) on a small configuration."""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.asserts import AnyConst
from amaranth.hdl import Assert, Assume, Cover, Mux, Signal

from hdl.attention import AttentionUnit
from sim.machine.cycles import attention_cycles

from .harness import Harness, Probe, StreamMonitor, busy_done_rules, free, popcount

__all__ = ["SMALL", "AttentionControl", "AttentionCycles", "attention_invariants", "calls"]

#: The unit the proofs run on: rows of 2 lanes, KV caches of up to 3 positions, up to 2 query heads
#: (every counter a few bits wide; the control does not depend on the lanes' values).
SMALL = {"head_dim": 2, "max_context": 3, "max_heads": 2}


def calls(unit: AttentionUnit) -> list[tuple[int, int, int]]:
    """Every (kv_len, n_kv_heads, group) the unit runs: the host's checks
    (:func:`sim.flows.attention.plan_attention`): 1 <= kv_len <= max_context, n_kv_heads >= 1,
    group >= 1, n_kv_heads * group <= max_heads."""
    H = unit.max_heads
    return [(t, g, j) for t in range(1, unit.max_context + 1) for g in range(1, H + 1) for j in range(1, H + 1)
            if g * j <= H]


def _legal(unit, kv_len, n_kv, group):
    fits = 0
    for t, g, j in calls(unit):
        fits = fits | ((kv_len == t) & (n_kv == g) & (group == j))
    return fits


class AttentionControl(Harness):
    """AttentionUnit, any start pulses with any legal call (:func:`calls`), any q/K/V streams that keep
    the stream rules, any back-pressure on ``out`` (proven by induction):

    * ``busy`` the cycle after a start, ``done`` only after one, never both, ``done`` held until the
      next start, ``busy`` ends only with ``done``; ``cycles`` unchanged while idle;
    * ``out``: a beat offered and not taken stays offered, unchanged; ``out`` is quiet while idle;
    * K and V beats are taken together, only while busy, exactly ``n_kv_heads * kv_len`` of each a
      call: the count taken equals the issue position (KV head x kv_len + position, + 1 once the row is
      held for the group's later heads): none lost, none taken twice;
    * q beats: taken only while busy, ``q_count`` of them, never more than ``n_heads``, all of them by
      the end of the call; a head issues only once its query row is in;
    * ``out`` beats: exactly ``n_heads`` a call; ``busy`` falls with the last one taken.

    Invariants added for induction: the issue counters in range (position < kv_len, head < group,
    KV head <= n_kv_heads, ``more`` = KV heads left, base = KV head x group); q rows in >= heads issued;
    the heads whose last position has issued = heads out + heads in flight (last-position beats in
    S1 .. S4, F1 .. F4, the output register); idle: the pipeline empty and every head out.
    """

    def __init__(self, **params):
        super().__init__()
        self.params = {**SMALL, **params}

    def build(self, m):
        unit = AttentionUnit(**self.params)
        probe = Probe(unit)
        m.submodules.dut = probe.fragment
        for port in (unit.start, unit.kv_len, unit.n_kv_heads, unit.group, unit.score_mult, unit.score_shift,
                     unit.out_mult, unit.out_shift, unit.out.ready, unit.q.valid, unit.q.payload, unit.k.valid,
                     unit.k.payload, unit.v.valid, unit.v.payload):
            free(m, port)
        with m.If(unit.start & ~unit.busy):
            m.d.comb += Assume(_legal(unit, unit.kv_len, unit.n_kv_heads, unit.group))
        a = attention_invariants(m, unit, probe)
        for name in ("q", "k", "v"):
            a.monitors[name].assume_sent_by_environment(m)
        p, was_done = a.p, a.was_done
        m.d.comb += Cover(unit.done & (p["n_kv"] == 2) & (p["kv_len"] == 2))
        m.d.comb += Cover(unit.out.valid & ~unit.out.ready & p["fvalid2"])     # two heads in flight, held
        m.d.comb += Cover(was_done & unit.busy & (p["group"] == 2))


def attention_invariants(m, unit: AttentionUnit, probe: Probe) -> SimpleNamespace:
    """The attention unit's promises and the invariants that make them inductive (see
    :class:`AttentionControl`), stated on ``unit`` (its ports) and ``probe`` (its registers), wherever the
    unit is instantiated. The caller states what the unit asks of its environment: a call the host allows
    at each start, the stream rules on q, K and V (the returned ``monitors``)."""
    monitors = {name: StreamMonitor(m, getattr(unit, name), name=f"att_{name}s") for name in ("q", "k", "v")}
    out = StreamMonitor(m, unit.out, name="att_outs")
    out.sender_rules(m)
    p = {n: probe[n] for n in ("running", "kv_len", "n_kv", "group", "n_heads", "q_count", "more", "pos",
                               "head_j", "kv_g", "base", "out_count", "valid1", "valid2", "valid3", "valid4",
                               "last1", "last2", "last3", "last4", "fvalid1", "fvalid2", "fvalid3", "fvalid4",
                               "last_f4")}
    S = unit.finish_steps
    step = probe["step"] if S > 1 else None
    launch = unit.start & ~unit.busy

    # busy / done / cycles
    rules = busy_done_rules(m, unit, launch=launch, running=p["running"])
    started, was_done = rules.started, rules.was_done

    # The latched call is one the host allows (it was assumed at the launch).
    kv_len, n_kv, group, n_heads = p["kv_len"], p["n_kv"], p["group"], p["n_heads"]
    with m.If(started):
        m.d.comb += [Assume(_legal(unit, kv_len, n_kv, group)), Assert(n_heads == n_kv * group)]
    with m.If(~started):
        m.d.comb += Assert(n_heads == 0)

    # The issue counters.
    more, pos, head_j, kv_g, base = p["more"], p["pos"], p["head_j"], p["kv_g"], p["base"]
    q_count, out_count = p["q_count"], p["out_count"]
    m.d.comb += [Assert(kv_g <= n_kv), Assert(base == kv_g * group), Assert(q_count <= n_heads),
                 Assert(more == (unit.busy & (kv_g != n_kv)))]
    with m.If(more):
        m.d.comb += [Assert(pos < kv_len), Assert(head_j < group),
                     Assert(q_count >= base + Mux(pos != 0, group, head_j))]
    with m.Else():
        m.d.comb += [Assert(pos == 0), Assert(head_j == 0)]
    with m.If(unit.busy & ~more):
        m.d.comb += Assert(q_count == n_heads)

    # Streams in: q only while busy; K and V together.
    for name in ("q", "k", "v"):
        with m.If(~unit.busy):
            m.d.comb += Assert(~getattr(unit, name).ready)
    m.d.comb += Assert(monitors["k"].fire == monitors["v"].fire)
    k_beats = Signal(range(unit.max_heads * unit.max_context + 2))
    with m.If(launch):
        m.d.sync += k_beats.eq(0)
    with m.Elif(monitors["k"].fire):
        m.d.sync += k_beats.eq(k_beats + 1)
    with m.If(more):
        m.d.comb += Assert(k_beats == kv_g * kv_len + pos + (head_j != 0))
    with m.Elif(started):
        m.d.comb += Assert(k_beats == n_kv * kv_len)

    # Heads in flight: a head's last position through S1 .. S4, F1 .. F4 and the output register.
    last_done = Mux(more, base + Mux(pos == kv_len - 1, head_j, 0), n_heads)
    # At P heads a step, a last beat of S1 .. S4 carries its step's live lanes, of which the hand-off
    # has sent ``sel`` to F1 already (S4 only).
    P = unit.heads_per_step
    if P > 1:
        lanes = [probe[f"lanes{k}"] for k in range(1, 5)]
        sel = probe["sel"]
        m.d.comb += Assert(sel < P)
        for k in range(1, 5):
            with m.If(p[f"valid{k}"] & p[f"last{k}"]):
                m.d.comb += [Assert(lanes[k - 1] >= 1), Assert(lanes[k - 1] <= P)]
        with m.If(p["valid4"] & p["last4"]):
            m.d.comb += Assert(sel < lanes[3])
        with m.Else():
            m.d.comb += Assert(sel == 0)
        heads = [Mux(p[f"valid{k}"] & p[f"last{k}"], lanes[k - 1], 0) for k in range(1, 4)]
        heads.append(Mux(p["valid4"] & p["last4"], lanes[3] - sel, 0))
    else:
        heads = [p[f"valid{k}"] & p[f"last{k}"] for k in range(1, 5)]
    stages = heads + [p["fvalid1"], p["fvalid2"], p["fvalid3"], p["fvalid4"] & p["last_f4"], unit.out.valid]
    inflight = popcount(stages)
    m.d.comb += Assert(last_done == out_count + inflight)
    # A position beat without ``last`` once every beat has issued: a head's last beat follows it in
    # an earlier stage (the stages move together, so the order holds); so such beats run only while busy.
    for k in range(1, 5):
        behind = 0
        for j in range(1, k):
            behind = behind | (p[f"valid{j}"] & p[f"last{j}"])
        with m.If(p[f"valid{k}"] & ~p[f"last{k}"] & ~more):
            m.d.comb += Assert(behind)
        with m.If(p[f"valid{k}"]):
            m.d.comb += Assert(unit.busy)
    if S > 1:
        m.d.comb += Assert(step < S)
        with m.If(~p["fvalid3"]):
            m.d.comb += Assert(step == 0)
        with m.If(p["fvalid4"] & ~p["last_f4"]):
            m.d.comb += [Assert(p["fvalid3"]), Assert(step != 0)]
    else:
        m.d.comb += Assert(p["last_f4"] | ~p["fvalid4"])
    with m.If(unit.busy):
        m.d.comb += Assert(out_count < n_heads)
    with m.Else():
        m.d.comb += [Assert(out_count == n_heads), Assert(~p["fvalid4"])]

    return SimpleNamespace(monitors=monitors, out=out, p=p, was_done=was_done)


class AttentionCycles(Harness):
    """AttentionUnit started once on any legal call (``AnyConst``), q, K, V always valid, ``out`` always
    ready (bounded): it finishes, raising ``done`` exactly when ``cycles`` equals the cycle model's
    prediction (:func:`sim.machine.cycles.attention_cycles`), never before; ``busy`` never lasts longer
    than the slowest call's prediction (the bounded response the depth runs past)."""

    def __init__(self, **params):
        super().__init__()
        self.params = {**SMALL, **params}

    def _unit(self):
        return AttentionUnit(**self.params)

    def predicted(self, unit, call) -> int:
        t, g, j = call
        return attention_cycles(n_heads=g * j, kv_len=t, head_dim=unit.head_dim, finish_lanes=unit.finish_lanes,
                                n_kv_heads=g, heads_per_step=unit.heads_per_step,
                                timing_registers=unit.timing_registers,
                                rescale_register=unit.rescale_register).total

    def depth(self) -> int:
        """The BMC depth that reaches the slowest call's ``done``, and two cycles past it."""
        unit = self._unit()
        unit._MustUse__silence = True
        return max(self.predicted(unit, c) for c in calls(unit)) + 3

    def build(self, m):
        m.submodules.dut = unit = self._unit()
        kv_len, n_kv, group = AnyConst(len(unit.kv_len)), AnyConst(len(unit.n_kv_heads)), AnyConst(len(unit.group))
        m.d.comb += Assume(_legal(unit, kv_len, n_kv, group))
        first = Signal(init=1)
        m.d.sync += first.eq(0)
        for port in (unit.score_mult, unit.score_shift, unit.out_mult, unit.out_shift, unit.q.payload,
                     unit.k.payload, unit.v.payload):
            free(m, port)
        m.d.comb += [unit.start.eq(first), unit.kv_len.eq(kv_len), unit.n_kv_heads.eq(n_kv), unit.group.eq(group),
                     unit.q.valid.eq(1), unit.k.valid.eq(1), unit.v.valid.eq(1), unit.out.ready.eq(1)]
        want = Signal.like(unit.cycles)
        for call in calls(unit):
            t, g, j = call
            with m.If((kv_len == t) & (n_kv == g) & (group == j)):
                m.d.comb += want.eq(self.predicted(unit, call))
        with m.If(unit.done):
            m.d.comb += Assert(unit.cycles == want)
        with m.If(unit.busy):
            m.d.comb += Assert(unit.cycles < want)
        with m.If(~first):
            m.d.comb += Assert(unit.busy | unit.done)
        m.d.comb += Cover(unit.done & (kv_len == unit.max_context) & (n_kv * group == unit.max_heads))
