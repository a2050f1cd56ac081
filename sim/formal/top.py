"""Formal harness of the decode top level's sequencer (:class:`hdl.top.DecodeTop`) on a small design.

The whole top level is elaborated (the array, the vector and attention units, every memory); its
program memory is any program the host may have loaded (in the induction step every memory holds
anything) and every host input is free, so the properties hold for every program and every host.
"""

from __future__ import annotations

from dataclasses import replace

from amaranth.hdl import Assert, Assume, Cover, Mux, Signal
from amaranth.lib import data, wiring

from hdl.config import PRESETS, UNIT_CYCLE_BITS
from hdl.isa import GemmFlags, Opcode, instruction_layout
from hdl.top import DecodeTop, TopMem
from hdl.top import SequencerState as _S
from sim.machine.cycles import PROGRAM_FETCH, fetch_cycles

from .attention import attention_invariants
from .harness import Harness, Probe, any_of, copies_equal, free
from .vector import legal_vector_command, operand_beats, vector_invariants

__all__ = ["SMALL", "TopSequencer"]

#: The design the sequencer is proven on: the smallest the top level builds (a 4 x 4 array and 4 vector
#: lanes, one query head of 8 lanes, 2 positions, a program of 8 instructions, 2 rows a pass).
SMALL = {"config": replace(PRESETS["4x4"], weight_words=16, max_context=2, param_words=16, scratch_bytes=32,
                           kv_bytes=64, logits_words=8, program_words=8, act_tables=1, max_m=2),
         "head_dim": 8, "max_heads": 1, "max_norm_length": 8}

#: The sequencer's states that run on their own (no unit in the loop): a word a cycle until ``left``.
_COUNTED = (_S.EMBED, _S.KVW, _S.AQ, _S.AOUT)


def _host(top, name):
    """The host port's member ``name`` (``host_name`` or ``host.name``, as the top level spells it)."""
    host = getattr(top, "host", None)
    return getattr(host, name) if host is not None and hasattr(host, name) else getattr(top, f"host_{name}")


class TopSequencer(Harness):
    """DecodeTop, any program, any host activity, start pulses with any inputs (proven by induction):

    * ``start_ok`` is high exactly when ``n_kv_heads`` and ``group`` are >= 1, their product at most
      ``max_heads`` and ``rows`` at most ``max_m``; a start while it is low leaves the top level idle
      with ``done`` and ``cycles`` unchanged;
    * the sequencer is always in one of its states; ``busy`` = not idle; ``done`` only after a start,
      never with ``busy``, held until the next start; ``busy`` ends only through a HALT, with ``done``;
    * program order: a start sets ``pc`` to ``program_base``; while busy ``pc`` stays or advances by
      exactly one, and it advances exactly in an instruction's last cycle of its last row (the ISA has no
      jumps); the instruction decoded in every DECODE is the program word at ``pc`` (the program memory
      was read at ``pc`` the cycle before; with ``program_register``, its register was loaded in FETCH
      from the word read at ``pc`` in the start cycle, or in the last cycle of the instruction before
      from the word read at the next ``pc``, and held since); rows: ``cur`` < ``n_rows`` <= max_m;
    * the counters never wrap within their stated range: while the step has run fewer than
      2**``cycle_counter_bits`` cycles and no instruction lasts 2**``UNIT_CYCLE_BITS`` cycles, the step's
      cycle counter plus the running instruction's equals the cycles since the start, exactly, and
      ``cycles`` shows the step's total after HALT;
    * the self-timed micro-sequences (EMBED, KV_WRITE, the attention's query gather and output
      scatter) count ``left`` down by one a cycle from at least 1 and end at 1 (so within ``left``
      cycles: no deadlock), given EMBED's count >= 1 (the compiler's rule: a row of the table).
    """

    def __init__(self, **params):
        super().__init__()
        self.params = {**SMALL, **params}

    def build(self, m):
        P = self.params
        top = DecodeTop(P["config"], head_dim=P["head_dim"], max_heads=P["max_heads"],
                        max_norm_length=P["max_norm_length"])
        c = P["config"]
        probe = Probe(top)
        m.submodules.dut = probe.fragment
        for _path, member, value in top.signature.flatten(top):
            if member.flow == wiring.In:
                free(m, value)
        state, pc, cur, n_rows = probe["state"], probe["pc"], probe["cur"], probe["n_rows"]
        ins_cyc, step_cyc, done_ins, left = probe["ins_cyc"], probe["step_cyc"], probe["done_ins"], probe["left"]
        ins = data.View(instruction_layout(), probe["ins@sync"])
        addr, en = probe["prog_r__addr"], probe["prog_r__en"]
        # program_register: DECODE decodes a register loaded from the program port's read data
        word = probe.read("prog_r__data")
        raw = data.View(instruction_layout(), probe["raw_q"] if c.program_register else word)
        launch = top.start & ~top.busy & top.start_ok
        m.d.comb += Assert(top.start_ok == ((top.n_kv_heads >= 1) & (top.group >= 1) & (top.rows <= c.max_m)
                                            & (top.n_kv_heads * top.group <= P["max_heads"])))
        with m.If(launch):
            # the host loads the program before it starts, not in the start cycle
            m.d.comb += Assume(~(_host(top, "we") & (_host(top, "mem") == TopMem.PROGRAM.value)))
        refused, was_cycles = Signal(), Signal.like(top.cycles)
        m.d.sync += [refused.eq(top.start & ~top.busy & ~top.start_ok), was_cycles.eq(top.cycles)]
        with m.If(refused):
            m.d.comb += [Assert(~top.busy), Assert(top.cycles == was_cycles)]

        # states, busy, done
        m.d.comb += [Assert(state <= max(s.value for s in _S)), Assert(top.busy == (state != _S.IDLE))]
        started, was_launch, was_busy, was_done = Signal(), Signal(), Signal(), Signal()
        m.d.sync += [was_launch.eq(launch), was_busy.eq(top.busy), was_done.eq(top.done)]
        with m.If(launch):
            m.d.sync += started.eq(1)
        m.d.comb += Assert(~(top.busy & top.done))
        with m.If(top.busy | top.done):
            m.d.comb += Assert(started)
        first = _S.FETCH if c.program_register else _S.DECODE
        with m.If(was_launch):
            m.d.comb += [Assert(top.busy), Assert(state == first)]
        with m.If(was_done & ~was_launch):
            m.d.comb += Assert(top.done)
        with m.If(refused):
            m.d.comb += Assert(top.done == was_done)
        with m.If(was_busy & ~top.busy):
            m.d.comb += [Assert(top.done), Assert(ins.opcode == Opcode.HALT)]

        # program order
        was_pc, was_addr, was_en, was_done_ins = Signal.like(pc), Signal.like(addr), Signal(), Signal()
        was_base = Signal.like(top.program_base)
        m.d.sync += [was_pc.eq(pc), was_addr.eq(addr), was_en.eq(en), was_done_ins.eq(done_ins),
                     was_base.eq(top.program_base)]
        with m.If(was_launch):
            m.d.comb += Assert(pc == was_base)
        with m.If(was_busy & top.busy):
            with m.If(was_done_ins):
                m.d.comb += Assert(pc == was_pc + 1)
            with m.Else():
                m.d.comb += Assert(pc == was_pc)
        if c.program_register:
            # The register holds the program word at pc in every DECODE: it loads in FETCH (the word read
            # at program_base, pc, in the start cycle) and in an instruction's last cycle (the word read
            # at the next pc in the cycle before), and holds otherwise.
            was_raw, was_state_p = Signal.like(word), Signal.like(state)
            m.d.sync += [was_raw.eq(raw.as_value()), was_state_p.eq(state)]
            with m.If(state == _S.FETCH):
                m.d.comb += [Assert(was_launch), Assert(was_addr == pc), Assert(was_en), Assert(ins_cyc == 0)]
            nxt = (pc + 1)[:len(addr)]        # (past the last word: the port's address wraps, unused)
            with m.If(top.busy):
                m.d.comb += [Assert(addr == nxt), Assert(en)]
            with m.If(done_ins):
                m.d.comb += [Assert(was_addr == nxt), Assert(was_en)]
            with m.If(top.busy & (was_state_p != _S.FETCH) & ~was_done_ins & ~was_launch):
                m.d.comb += Assert(raw.as_value() == was_raw)
            with m.If(top.busy):
                m.d.comb += Assert(pc < c.program_words)
                with m.If(pc == c.program_words - 1):
                    m.d.comb += Assert((state == _S.DECODE) | (state == _S.FETCH))
        else:
            with m.If(top.busy):
                m.d.comb += [Assert(was_addr == pc), Assert(was_en), Assert(pc < c.program_words)]
                with m.If(pc == c.program_words - 1):
                    m.d.comb += Assert(state == _S.DECODE)
        # Each micro-sequence runs the instruction latched in its DECODE.
        own = {_S.EMBED: (Opcode.EMBED,), _S.GEMM: (Opcode.GEMM,), _S.KVW: (Opcode.KV_WRITE,),
               _S.AQ: (Opcode.ATTENTION,), _S.ASTART: (Opcode.ATTENTION,), _S.ARUN: (Opcode.ATTENTION,),
               _S.AOUT: (Opcode.ATTENTION,)}
        others = [op for op in Opcode if op not in (Opcode.HALT, Opcode.EMBED, Opcode.GEMM, Opcode.KV_WRITE,
                                                     Opcode.ATTENTION)]
        own[_S.VCMD] = own[_S.VRUN] = tuple(others)
        for st, ops in own.items():
            with m.If(state == st):
                m.d.comb += Assert(any_of(ins.opcode == op for op in ops) | ((ins.opcode.as_value() >= len(Opcode))
                                                                       if st in (_S.VCMD, _S.VRUN) else 0))
        # An instruction's first DECODE is ``fresh`` (after a start or the last cycle of the one before);
        # from then on until its last cycle the program port shows it still: a later row's DECODE decodes
        # the same instruction (the host cannot write the program while busy).
        # (program_register: the cycle after FETCH is the first DECODE.)
        fetched = Signal()
        m.d.sync += fetched.eq(state == _S.FETCH)
        fresh = (fetched if c.program_register else was_launch) | (was_busy & was_done_ins)
        with m.If(top.busy & ~fresh & (state != _S.FETCH)):
            m.d.comb += Assert(raw.as_value() == ins.as_value())
        with m.If(top.busy & fresh):
            # (FETCH is counted in the first instruction's cycles.)
            m.d.comb += [Assert(state == _S.DECODE), Assert(ins_cyc == Mux(fetched, PROGRAM_FETCH, 0)),
                         Assert(cur == 0)]

        # rows, heads: as latched at the start
        n_kv, group, n_heads = probe["n_kv@sync"], probe["group@sync"], probe["n_heads"]
        with m.If(started):
            m.d.comb += [Assert(n_rows >= 1), Assert(n_rows <= c.max_m), Assert(cur < n_rows),
                         Assert(n_kv >= 1), Assert(group >= 1), Assert(n_heads == n_kv * group)]

        # the cycle counters: exact while the step is shorter than 2**cycle_counter_bits cycles and every
        # instruction shorter than 2**UNIT_CYCLE_BITS (the widths' stated ranges)
        ran = Signal(c.cycle_counter_bits + 1)
        with m.If(launch):
            m.d.sync += ran.eq(0)
        with m.Elif(top.busy):
            m.d.sync += ran.eq(ran + 1)
        with m.If(top.busy):
            m.d.comb += [Assume(ran < 2 ** c.cycle_counter_bits - 1), Assume(ins_cyc < 2 ** UNIT_CYCLE_BITS - 1)]
            m.d.comb += Assert(step_cyc + ins_cyc == ran)
        # HALT's own cycle is not counted; nor, with program_register, a FETCH whose instruction is the
        # HALT (a program of no instruction takes no cycle, as the cycle model says)
        ended_one = Signal()
        with m.If(launch):
            m.d.sync += ended_one.eq(0)
        with m.Elif(done_ins):
            m.d.sync += ended_one.eq(1)
        uncounted = 1 + Mux(ended_one, 0, fetch_cycles(c))
        with m.If(started & ~ended_one):
            m.d.comb += Assert(step_cyc == 0)
        with m.If(state == _S.FETCH):
            m.d.comb += Assert(~ended_one)
        with m.If(started & ~top.busy):
            m.d.comb += Assert(top.cycles + uncounted == ran)

        # The units' handshakes: the vector unit is busy exactly in VRUN (so a VCMD's command is always
        # taken: the sequencer offers it for one cycle only); the attention unit only in ARUN, idle at
        # ASTART (so the start is never ignored), and ARUN ends with its done.
        vec_probe, att_probe = probe.submodule("vec"), probe.submodule("att")
        vec, att = vec_probe.block, att_probe.block
        vec_busy, vec_ready, att_busy, att_done = vec.busy, vec.cmd.ready, att.busy, att.done
        # The units' own invariants (proven alone by VectorControl and AttentionControl); what they ask of
        # their environment, the sequencer's feeders must give: commands the host allows (the compiler's
        # rules for the program's vector instructions, and the start's head counts), the stream rules.
        with m.If(vec.cmd.valid):
            m.d.comb += Assume(legal_vector_command(vec, vec.cmd.payload))
        v = vector_invariants(m, vec, vec_probe)
        v.inp.sender_rules(m)
        # The vector operand feeder: it offers beats only in VRUN, loads them only in VCMD / VRUN, and
        # loads what the command takes: beats loaded = beats the unit took + the one it holds.
        vpath = probe.submodule("vpath")
        f_valid, f_left = vpath["f_valid"], vpath["f_left"]
        # The lanes' copies of the feeder's phase and of ARGMAX (hdl.fanout), and the GEMM path's of
        # the BIAS flag and of "the first reduction tile": equal, and equal to what they copy.
        V = top.lanes
        copies_equal(m, vpath, "f_phase", V)
        copies_equal(m, vpath, "lane_argmax", V, ins.opcode == Opcode.ARGMAX)
        gpath = probe.submodule("gemm")
        copies_equal(m, gpath, "use_bias", V, (ins.flags & GemmFlags.BIAS.value) != 0)
        copies_equal(m, gpath, "first", V, gpath["s_kt"] == 0)
        # and its register of "the last reduction tile" equal to what it stands for
        m.d.comb += Assert(gpath["s_final"] == (gpath["s_kt"] == gpath["kt"] - 1))
        with m.If((state != _S.VCMD) & (state != _S.VRUN)):
            m.d.comb += Assert(~f_valid)
        with m.If(state == _S.VCMD):
            m.d.comb += Assert(f_left == operand_beats(vec, vec.cmd.payload))
        with m.If(state == _S.VRUN):
            m.d.comb += Assert(f_left + f_valid + v.taken == operand_beats(vec, v.c))
        a = attention_invariants(m, att, att_probe)
        for name in ("q", "k", "v"):
            a.monitors[name].sender_rules(m)
        # The attention feeders: they offer beats only in ASTART / ARUN; the beats they load = the beats
        # the unit took + the one they hold (none lost, none twice), so they are empty when it is done.
        qf_valid, qf_left, kf_valid, kf_more = probe["qf_valid"], probe["qf_left"], probe["kf_valid"], probe["kf_more"]
        kf_t, kf_g = probe["kf_t"], probe["kf_g"]
        u = {n: att_probe[n] for n in ("q_count", "n_heads", "n_kv", "kv_len", "more", "kv_g", "pos", "head_j")}
        pos = probe["pos@sync"]
        with m.If((state != _S.ASTART) & (state != _S.ARUN)):
            m.d.comb += [Assert(~qf_valid), Assert(~kf_valid)]
        with m.If((state == _S.AQ) | (state == _S.ASTART)):
            m.d.comb += [Assert(qf_left == n_heads), Assert(kf_more), Assert(kf_t == 0), Assert(kf_g == 0)]
        with m.If((state == _S.ARUN) & att_busy):
            taken = Mux(u["more"], u["kv_g"] * u["kv_len"] + u["pos"] + (u["head_j"] != 0), u["n_kv"] * u["kv_len"])
            loaded = Mux(kf_more, kf_g * u["kv_len"] + kf_t, u["n_kv"] * u["kv_len"])
            m.d.comb += [Assert(u["n_heads"] == n_heads), Assert(u["n_kv"] == n_kv), Assert(u["kv_len"] == pos + 1),
                         Assert(qf_left + qf_valid + u["q_count"] == n_heads), Assert(loaded == taken + kf_valid)]
            with m.If(kf_more):
                m.d.comb += [Assert(kf_t <= pos), Assert(kf_g < n_kv)]
        with m.If((state == _S.ARUN) & ~att_busy):
            m.d.comb += [Assert(qf_left == 0), Assert(~qf_valid), Assert(~kf_more), Assert(~kf_valid)]
        m.d.comb += Assert(vec_busy == (state == _S.VRUN))
        with m.If(state == _S.VCMD):
            m.d.comb += Assert(vec_ready)
        with m.If(att_busy):
            m.d.comb += Assert(state == _S.ARUN)
        with m.If(state == _S.ASTART):
            m.d.comb += Assert(~att_busy)
        with m.If(state == _S.ARUN):
            m.d.comb += Assert(att_busy | att_done)

        # the self-timed micro-sequences
        with m.If(state == _S.DECODE):
            m.d.comb += Assume((raw.opcode != Opcode.EMBED) | (raw.count >= 1))
            # a vector instruction's length fits the vector unit's command (the compiler's rule)
            m.d.comb += Assume(any_of(raw.opcode == op for op in (Opcode.EMBED, Opcode.GEMM, Opcode.KV_WRITE,
                                                                 Opcode.ATTENTION, Opcode.HALT))
                               | (raw.length <= top.max_length))
            # the program ends with a HALT inside the program memory (the compiler's rule)
            with m.If(pc == c.program_words - 1):
                m.d.comb += Assume(raw.opcode == Opcode.HALT)
        for s in _COUNTED:
            with m.If(state == s):
                m.d.comb += Assert(left >= 1)
        was_left, was_state = Signal.like(left), Signal.like(state)
        m.d.sync += [was_left.eq(left), was_state.eq(state)]
        # (embed_register: EMBED's leading cycles only read, and hold ``left``.)
        reading = Signal()
        if c.embed_register:
            m.d.sync += reading.eq((state == _S.EMBED) & (probe["e_lead"] != 0))
        for s in _COUNTED:
            with m.If((was_state == s) & (state == s)):
                m.d.comb += Assert(left == Mux(reading, was_left, was_left - 1))
            with m.If((was_state == s) & (state != s)):
                m.d.comb += Assert(was_left == 1)

        fin = probe["fin"]
        m.d.comb += [Cover(was_busy & ~top.busy & (top.cycles >= 3)),      # a step with an instruction
                     Cover((state == _S.DECODE) & (cur == 1)),            # a second row of a pass
                     Cover((state == _S.VRUN) & fin),                     # a vector instruction done
                     Cover((state == _S.GEMM) & fin),                     # a GEMM done
                     Cover(state == _S.AOUT)]                             # the attention unit done
