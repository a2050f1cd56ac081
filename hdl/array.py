"""The weight-stationary int8 systolic array.

Dataflow (R rows x C columns of processing elements, all moving together on one enable):

* Activation rows enter on the left, one beat of R int8 values per step. Lane ``i`` is delayed
  by ``i`` steps (input skew), so PE(i, j) sees activation row ``m`` in step ``s + 1 + i + j``
  when the beat was accepted in step ``s``. Activations move right, partial sums move down.
* PE(i, j) holds two int8 weights (bank 0 and bank 1). Every activation beat carries the bank
  it multiplies with, so a new tile can be loaded into the idle bank while the current one
  computes, and the switch moves through the array with the data.
* A weight beat is G rows of a tile (G * C int8 values, G = ``rows_per_beat``, dividing R): a tile
  is R / G beats. The first R / G - 1 beats of a tile wait in staging registers; the beat that
  completes the tile *fires* it into the array. Row ``i`` of a fired tile is written ``i`` steps
  after the fire and column ``j`` ``j`` steps later still: PE(i, j) gets its weight in step
  ``f + i + j``, the same wavefront the activations have. That is what lets the next tile fire the
  step after the last activation of the tile before it in that bank, with no bubble, and at G = R
  lets a whole tile enter every step.
* Partial sums leaving the bottom are de-skewed so that one output beat holds all C int32
  sums of one activation row, ``R + C`` steps after that row entered (``Config.array_latency``).

Flow control: the whole array advances when its output is empty or taken (``en``). A weight
beat that completes a tile is accepted only while its bank is free (the tile before in that bank
has had its last activation accepted; the other beats only fill the staging registers); an
activation beat only while its bank holds a complete tile (from the step after the fire). So weights
and activations may arrive with any gaps and the output may be back-pressured at will: the
results do not change, only the timing.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.errors import InputError
from golden.numerics import ACC_BITS

from .arith import product as arith_product
from .config import MAX_BUILD_ARRAY, check_positive_int, checked_constructor

__all__ = ["ProcessingElement", "SystolicArray", "act_layout", "sum_layout", "weight_layout"]


def weight_layout(cols: int, rows: int = 1) -> data.ArrayLayout:
    """A weight beat: ``rows`` tile rows of ``cols`` int8, row ``r`` column ``j`` at ``r * cols + j``."""
    return data.ArrayLayout(signed(8), rows * cols)


def act_layout(rows: int) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(signed(8), rows), "last": unsigned(1)})


def sum_layout(cols: int) -> data.StructLayout:
    return data.StructLayout({"data": data.ArrayLayout(signed(ACC_BITS), cols), "last": unsigned(1)})


class ProcessingElement(wiring.Component):
    """One multiply-accumulate cell with a double-buffered weight.

    In every step with ``en`` high: ``psum_out <= psum_in + a_in * w[bank_in]`` (32-bit wrap),
    ``a_out <= a_in``, ``bank_out <= bank_in``; and if ``w_we``, ``w[w_bank] <= w_data``.
    Latency one step for both outputs. ``fabric``: the product built from adders
    (:func:`hdl.arith.fabric_product`) instead of a hard multiplier.
    """

    en: In(1)
    a_in: In(signed(8))
    bank_in: In(1)
    psum_in: In(signed(ACC_BITS))
    w_we: In(1)
    w_bank: In(1)
    w_data: In(signed(8))
    a_out: Out(signed(8))
    bank_out: Out(1)
    psum_out: Out(signed(ACC_BITS))

    def __init__(self, *, fabric: bool = False):
        self.fabric = bool(fabric)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        w0 = Signal(signed(8))
        w1 = Signal(signed(8))
        product = Signal(signed(16))
        # A Mux rather than an Array lookup: it becomes a continuous assign, which Icarus
        # evaluates at time 0 (a case block may never run there: amaranth #1629).
        m.d.comb += product.eq(arith_product(self.a_in, Mux(self.bank_in, w1, w0), fabric=self.fabric))
        with m.If(self.en):
            # Assigning the 33-bit sum to a 32-bit register drops the carry: the adder wraps.
            m.d.sync += [
                self.psum_out.eq(self.psum_in + product),
                self.a_out.eq(self.a_in),
                self.bank_out.eq(self.bank_in),
            ]
            with m.If(self.w_we & self.w_bank):
                m.d.sync += w1.eq(self.w_data)
            with m.If(self.w_we & ~self.w_bank):
                m.d.sync += w0.eq(self.w_data)
        return m


class SystolicArray(wiring.Component):
    """R x C weight-stationary systolic array with valid/ready streams at its boundaries.

    Ports
    -----
    weights : In(stream of G * C int8)
        G tile rows a beat (``rows_per_beat``, dividing R), R / G beats per tile, rows 0 .. G - 1
        first. Tiles alternate between the two weight banks.
    acts : In(stream of {data: R int8, last})
        Activation rows for the most recently completed tile; ``last`` marks the final row of
        that tile, after which the next tile's weights are used.
    sums : Out(stream of {data: C int32, last})
        ``sums[j] = sum_i acts[i] * W[i][j]`` for every activation row, in order, with the
        row's ``last`` flag. Latency ``R + C`` steps; a step is a cycle in which ``sums`` is
        empty or taken.

    ``fabric_products`` (``Config.fabric_products``): every PE's product built from adders
    (:func:`hdl.arith.fabric_product`), not a hard multiplier; the same sums.

    Raises TypeError / ValueError for sizes that are not positive integers.
    """

    @checked_constructor
    def __init__(self, *, rows: int, cols: int, rows_per_beat: int = 1, fabric_products: bool = False):
        self.rows = check_positive_int("array rows", rows)
        self.cols = check_positive_int("array cols", cols)
        for name, value in (("rows", rows), ("cols", cols)):
            if value > MAX_BUILD_ARRAY:
                raise InputError(f"array {name} must be at most {MAX_BUILD_ARRAY} to build, not {value}")
        self.rows_per_beat = check_positive_int("array rows_per_beat", rows_per_beat)
        self.fabric_products = bool(fabric_products)
        if rows % rows_per_beat:
            raise InputError(f"array rows_per_beat must divide the array's rows ({rows}), not {rows_per_beat}")
        super().__init__({
            "weights": In(stream.Signature(weight_layout(cols, rows_per_beat))),
            "acts": In(stream.Signature(act_layout(rows))),
            "sums": Out(stream.Signature(sum_layout(cols))),
        })

    @property
    def latency(self) -> int:
        return self.rows + self.cols

    def elaborate(self, platform):
        m = Module()
        R, C, L = self.rows, self.cols, self.latency

        en = Signal()
        # Per-beat control moving alongside the data: valid and last, L stages.
        valid = [Signal(name=f"valid{k}") for k in range(L)]
        last = [Signal(name=f"last{k}") for k in range(L)]
        m.d.comb += en.eq(~valid[-1] | self.sums.ready)

        # Bank bookkeeping: which bank the next tile / activation goes to, which banks hold a tile.
        G = self.rows_per_beat
        beats = R // G
        wbank = Signal()
        abank = Signal()
        # which beat of its tile the offered one is (no counter when one beat is a whole tile)
        wbeat = Signal(range(beats), name="wbeat") if beats > 1 else 0
        loaded = Signal(2)

        completes = Signal()             # the offered beat is its tile's last
        w_take = Signal()
        w_fire = Signal()                # a whole tile enters the array this step
        a_fire = Signal()
        m.d.comb += [
            completes.eq(wbeat == beats - 1) if beats > 1 else completes.eq(1),
            self.weights.ready.eq(en & (~completes | ~loaded.bit_select(wbank, 1))),
            self.acts.ready.eq(en & loaded.bit_select(abank, 1)),
            w_take.eq(self.weights.valid & self.weights.ready),
            w_fire.eq(w_take & completes),
            a_fire.eq(self.acts.valid & self.acts.ready),
        ]
        a_last = Signal()
        m.d.comb += a_last.eq(a_fire & self.acts.payload.last)
        if beats > 1:
            with m.If(w_take):
                m.d.sync += wbeat.eq(Mux(completes, 0, wbeat + 1))
        with m.If(w_fire):
            m.d.sync += wbank.eq(~wbank)
        with m.If(a_last):
            m.d.sync += abank.eq(~abank)
        set_mask = Signal(2)
        clr_mask = Signal(2)
        m.d.comb += [
            set_mask.eq(Cat(w_fire & (wbank == 0), w_fire & (wbank == 1))),
            clr_mask.eq(Cat(a_last & (abank == 0), a_last & (abank == 1))),
        ]
        m.d.sync += loaded.eq((loaded | set_mask) & ~clr_mask)

        # The valid/last pipeline.
        with m.If(en):
            m.d.sync += [valid[0].eq(a_fire), last[0].eq(self.acts.payload.last)]
            for k in range(1, L):
                m.d.sync += [valid[k].eq(valid[k - 1]), last[k].eq(last[k - 1])]

        # Input skew: lane i passes i + 1 registers (with the bank bit) before PE(i, 0).
        lane_a = []
        lane_bank = []
        for i in range(R):
            regs_a = [Signal(signed(8), name=f"skew{i}_{k}") for k in range(i + 1)]
            regs_b = [Signal(name=f"skewbank{i}_{k}") for k in range(i + 1)]
            with m.If(en):
                m.d.sync += [regs_a[0].eq(self.acts.payload.data[i]), regs_b[0].eq(abank)]
                for k in range(1, i + 1):
                    m.d.sync += [regs_a[k].eq(regs_a[k - 1]), regs_b[k].eq(regs_b[k - 1])]
            lane_a.append(regs_a[-1])
            lane_bank.append(regs_b[-1])

        w_we, w_bank, w_data = self._weight_wavefront(m, en, w_take, w_fire, wbeat, wbank)

        # The grid.
        pes = [[ProcessingElement(fabric=self.fabric_products) for _ in range(C)] for _ in range(R)]
        for i in range(R):
            for j in range(C):
                pe = pes[i][j]
                m.submodules[f"pe_{i}_{j}"] = pe
                m.d.comb += [
                    pe.en.eq(en),
                    pe.a_in.eq(lane_a[i] if j == 0 else pes[i][j - 1].a_out),
                    pe.bank_in.eq(lane_bank[i] if j == 0 else pes[i][j - 1].bank_out),
                    pe.psum_in.eq(0 if i == 0 else pes[i - 1][j].psum_out),
                    pe.w_we.eq(w_we[i][j]),
                    pe.w_bank.eq(w_bank[i][j]),
                    pe.w_data.eq(w_data[i][j][0]),
                ]

        # Output de-skew: column j passes C - 1 - j more registers.
        for j in range(C):
            prev = pes[R - 1][j].psum_out
            for k in range(C - 1 - j):
                reg = Signal(signed(ACC_BITS), name=f"deskew{j}_{k}")
                with m.If(en):
                    m.d.sync += reg.eq(prev)
                prev = reg
            m.d.comb += self.sums.payload.data[j].eq(prev)
        m.d.comb += [self.sums.valid.eq(valid[-1]), self.sums.payload.last.eq(last[-1])]
        return m

    def _weight_wavefront(self, m, en, w_take, w_fire, wbeat, wbank):
        """The staging registers and the write wavefront of fired tiles: per row ``i`` and column
        ``j``, the write enable, bank and weight PE(i, j) takes (``[i][j]``, data ``[i][j][0]``)."""
        R, C, G = self.rows, self.cols, self.rows_per_beat
        beats = R // G
        # Staging: the first R / G - 1 beats of a tile wait here; the beat that completes the tile
        # is used as it arrives.
        stage = [Signal(8 * G * C, name=f"wstage{b}") for b in range(beats - 1)]
        for b, reg in enumerate(stage):
            with m.If(w_take & (wbeat == b)):
                m.d.sync += reg.eq(self.weights.payload)
        tile_bits = Cat(*stage, self.weights.payload.as_value())

        # Weight write wavefront: row i of a fired tile waits i steps, then column j of it is written
        # j steps later (stage 0 of each chain is written at the end of the step it is reached).
        w_we, w_bank, w_data = [], [], []
        for i in range(R):
            we = w_fire
            bank = wbank
            row = [tile_bits[8 * (i * C + j):8 * (i * C + j + 1)].as_signed() for j in range(C)]
            for k in range(i):
                we_k = Signal(name=f"wrow{i}_we{k}")
                bank_k = Signal(name=f"wrow{i}_bank{k}")
                row_k = [Signal(signed(8), name=f"wrow{i}_{k}_{j}") for j in range(C)]
                with m.If(en):
                    m.d.sync += [we_k.eq(we), bank_k.eq(bank)] + [d.eq(p) for d, p in zip(row_k, row, strict=True)]
                we, bank, row = we_k, bank_k, row_k
            chain_we, chain_bank, chain_data = [we], [bank], [row]
            for k in range(1, C):
                we_k = Signal(name=f"wskew{i}_we{k}")
                bank_k = Signal(name=f"wskew{i}_bank{k}")
                data_k = [Signal(signed(8), name=f"wskew{i}_{k}_{j}") for j in range(k, C)]
                with m.If(en):
                    m.d.sync += [we_k.eq(chain_we[-1]), bank_k.eq(chain_bank[-1])]
                    m.d.sync += [d.eq(p) for d, p in zip(data_k, chain_data[-1][1:], strict=True)]
                chain_we.append(we_k)
                chain_bank.append(bank_k)
                chain_data.append(data_k)
            w_we.append(chain_we)
            w_bank.append(chain_bank)
            w_data.append(chain_data)
        return w_we, w_bank, w_data
