"""Formal harnesses of the systolic array and its processing element (:mod:`hdl.array`)."""

from __future__ import annotations

from amaranth.asserts import AnyConst
from amaranth.hdl import Assert, Assume, Cat, Cover, Signal, signed

from golden.numerics import ACC_BITS
from hdl.array import ProcessingElement, SystolicArray

from .harness import Harness, Probe, StreamMonitor, any_of, free, popcount

__all__ = ["ArrayMac", "ArrayStreams", "PeMac"]


def _mac_chain(m, a, w, j):
    """``sum_i a[i] * w[i][j]`` in the PE's own form: 16-bit products added down the column, each sum
    wrapped to 32 bits (the same value: two int8 products never overflow 32 bits before R = 2**17; the
    same form lets the solver match the array's adders term for term)."""
    total = Signal(signed(ACC_BITS), name=f"spec_col{j}_0")
    m.d.comb += total.eq(0)
    for i, x in enumerate(a):
        product = Signal(signed(16), name=f"spec_p{i}_{j}")
        nxt = Signal(signed(ACC_BITS), name=f"spec_col{j}_{i + 1}")
        m.d.comb += [product.eq(x * w[i][j]), nxt.eq(total + product)]
        total = nxt
    return total


class ArrayStreams(Harness):
    """SystolicArray, any inputs and any back-pressure (proven by induction):

    * ``sums``: a beat offered and not taken stays offered, unchanged, the next cycle;
    * no activation beat is lost or duplicated: beats accepted minus sums delivered equals the beats
      inside the array (its valid pipeline), never more than the latency ``R + C``;
    * no tile is lost, overwritten or used twice: tiles fired (the weight beat that completes a tile)
      minus tiles finished (the activation beat marked ``last``) equals the banks marked loaded, at most
      two; a tile fires only into a free bank and an activation is accepted only from a loaded one;
      the weight bank, the activation bank and the loaded mask agree (one loaded bank is the activation
      bank, the other the weight bank);
    * the weight-beat counter stays below ``R / G`` and counts the beats of the harness's own count.

    The beat, tile and bank equalities are the invariants that make the stream rules inductive.
    """

    def __init__(self, *, rows: int = 2, cols: int = 2, rows_per_beat: int = 1):
        super().__init__()
        self.rows, self.cols, self.rows_per_beat = rows, cols, rows_per_beat

    def build(self, m):
        R, C, G = self.rows, self.cols, self.rows_per_beat
        array = SystolicArray(rows=R, cols=C, rows_per_beat=G)
        probe = Probe(array)
        m.submodules.dut = probe.fragment
        L, beats = array.latency, R // G
        valid = [probe[f"valid{k}"] for k in range(L)]
        loaded, wbank, abank = probe["loaded"], probe["wbank"], probe["abank"]
        for port in (array.weights.valid, array.weights.payload, array.acts.valid, array.acts.payload,
                     array.sums.ready):
            free(m, port)

        sums = StreamMonitor(m, array.sums, name="sums")
        sums.sender_rules(m)
        w_fire = array.weights.valid & array.weights.ready
        a_fire = array.acts.valid & array.acts.ready
        a_last = a_fire & array.acts.payload.last

        # Beats: accepted - delivered == inside.
        inflight = Signal(range(2 * L + 2))
        m.d.sync += inflight.eq(inflight + a_fire - sums.fire)
        m.d.comb += [Assert(inflight == popcount(valid)), Assert(inflight <= L)]

        # Tiles: the harness counts weight beats itself.
        hbeat = Signal(range(beats))
        tile_fire = Signal()
        m.d.comb += tile_fire.eq(w_fire & (hbeat == beats - 1))
        if beats > 1:
            wbeat = probe["wbeat"]
            with m.If(w_fire):
                m.d.sync += hbeat.eq(hbeat + 1)
                with m.If(hbeat == beats - 1):
                    m.d.sync += hbeat.eq(0)
            m.d.comb += [Assert(wbeat < beats), Assert(wbeat == hbeat)]
        tiles = Signal(3)
        m.d.sync += tiles.eq(tiles + tile_fire - a_last)
        m.d.comb += [Assert(tiles == loaded[0] + loaded[1]), Assert(tiles <= 2)]
        with m.If(tile_fire):
            m.d.comb += Assert(~loaded.bit_select(wbank, 1))
        with m.If(a_fire):
            m.d.comb += Assert(loaded.bit_select(abank, 1))
        with m.If(tiles == 1):
            m.d.comb += [Assert(loaded == Cat(abank == 0, abank == 1)), Assert(wbank != abank)]
        with m.Else():
            m.d.comb += Assert(wbank == abank)

        m.d.comb += Cover(inflight == L)
        m.d.comb += Cover(tiles == 2)
        m.d.comb += Cover(sums.fire & array.sums.payload.last)


class ArrayMac(Harness):
    """SystolicArray against the int8 MAC specification, bounded: ``tiles`` tiles of any int8 weights
    (``AnyConst``), ``m`` activation rows of any int8 values per tile, fed with any gaps and drained
    with any back-pressure; every sums beat is ``sum_i a[r][i] * W[t][i][j]`` for its row, in order,
    with ``last`` on each tile's final row, and no beat beyond the ``tiles * m`` expected."""

    def __init__(self, *, rows: int = 2, cols: int = 2, rows_per_beat: int = 1, tiles: int = 2, m: int = 2,
                 gaps: bool = True, values: tuple[int, ...] | None = None):
        super().__init__()
        self.values = values
        self.rows, self.cols, self.rows_per_beat, self.tiles, self.m = rows, cols, rows_per_beat, tiles, m
        self.gaps = gaps

    def build(self, m):
        R, C, G, T, M = self.rows, self.cols, self.rows_per_beat, self.tiles, self.m
        m.submodules.dut = array = SystolicArray(rows=R, cols=C, rows_per_beat=G)
        W = [[[AnyConst(signed(8)) for _ in range(C)] for _ in range(R)] for _ in range(T)]
        A = [[[AnyConst(signed(8)) for _ in range(R)] for _ in range(M)] for _ in range(T)]
        if self.values is not None:
            for x in [v for tile in W + A for row in tile for v in row]:
                m.d.comb += Assume(any_of(x == v for v in self.values))
        beats = R // G
        wb = Signal(range(T * beats + 1))
        ab = Signal(range(T * M + 1))
        ob = Signal(range(T * M + 1))
        w_go, a_go = Signal(), Signal()
        if self.gaps:
            free(m, w_go)
            free(m, a_go)
            free(m, array.sums.ready)
        else:
            m.d.comb += [w_go.eq(1), a_go.eq(1), array.sums.ready.eq(1)]
        m.d.comb += [array.weights.valid.eq(w_go & (wb < T * beats)), array.acts.valid.eq(a_go & (ab < T * M))]
        for t in range(T):
            for b in range(beats):
                with m.If(wb == t * beats + b):
                    m.d.comb += array.weights.payload.eq(Cat(*(W[t][b * G + g][j] for g in range(G)
                                                              for j in range(C))))
            for r in range(M):
                with m.If(ab == t * M + r):
                    m.d.comb += [array.acts.payload.data.eq(Cat(*A[t][r])), array.acts.payload.last.eq(r == M - 1)]
        with m.If(array.weights.valid & array.weights.ready):
            m.d.sync += wb.eq(wb + 1)
        with m.If(array.acts.valid & array.acts.ready):
            m.d.sync += ab.eq(ab + 1)
        s_fire = array.sums.valid & array.sums.ready
        with m.If(s_fire):
            m.d.sync += ob.eq(ob + 1)
            m.d.comb += Assert(ob < T * M)
            for t in range(T):
                for r in range(M):
                    with m.If(ob == t * M + r):
                        m.d.comb += Assert(array.sums.payload.last == (r == M - 1))
                        for j in range(C):
                            m.d.comb += Assert(array.sums.payload.data[j] == _mac_chain(m, A[t][r], W[t], j))
        m.d.comb += Cover(ob == T * M)


class PeMac(Harness):
    """One ProcessingElement against its specification, any inputs (by induction): with ``en`` the next
    ``psum_out`` is ``psum_in + a_in * w[bank_in]`` (32-bit wrap) and ``a_out``/``bank_out`` follow, where
    ``w`` is a reference pair of weight registers written as the PE's contract says; without ``en``
    nothing changes. Invariant: the PE's weight registers equal the reference pair."""

    def build(self, m):
        pe = ProcessingElement()
        probe = Probe(pe)
        m.submodules.dut = probe.fragment
        for port in (pe.en, pe.a_in, pe.bank_in, pe.psum_in, pe.w_we, pe.w_bank, pe.w_data):
            free(m, port)
        w = [Signal(signed(8), name="ref_w0"), Signal(signed(8), name="ref_w1")]
        want = Signal(signed(ACC_BITS))
        want_a, want_bank = Signal(signed(8)), Signal()
        with m.If(pe.en):
            m.d.sync += [want.eq(pe.psum_in + pe.a_in * Cat(w[0], w[1]).word_select(pe.bank_in, 8).as_signed()),
                         want_a.eq(pe.a_in), want_bank.eq(pe.bank_in)]
            with m.If(pe.w_we):
                m.d.sync += w[0].eq(pe.w_data)
                with m.If(pe.w_bank):
                    m.d.sync += [w[0].eq(w[0]), w[1].eq(pe.w_data)]
        m.d.comb += [Assert(pe.psum_out == want), Assert(pe.a_out == want_a), Assert(pe.bank_out == want_bank)]
        m.d.comb += [Assert(probe["w0"] == w[0]), Assert(probe["w1"] == w[1])]     # the invariant
        m.d.comb += Cover((pe.psum_out == -(2 ** 31)) & (want_a == -128))
