"""The host link: a framed request/reply protocol over a UART, bridged onto an accelerator's host port.

The command set, the statuses and the frame constants are defined here once; the host side
(:mod:`sim.link.protocol`, :mod:`sim.link.host`), the tests and ``docs/protocol.md`` take them from here.

Frames (multi-byte fields little-endian, the CRC big-endian):

* request: ``0xA5``, command, length (2 bytes), payload (``length`` bytes), CRC-16 (2 bytes);
* reply:   ``0x5A``, status,  length (2 bytes), payload (``length`` bytes), CRC-16 (2 bytes).

The CRC is CRC-16/IBM-3740 (a.k.a. CCITT-FALSE: polynomial 0x1021, initial value 0xFFFF, no
reflection, no final XOR) over everything after the sync byte; sent high byte first, so the CRC of
a whole frame after its sync byte (CRC included) is zero.

The host port (:class:`HostPort`) is what the bridge drives: the target's memory window
(:class:`hdl.host.HostBus`: a memory select, a word address, a write strobe and data, read data one
cycle after the address; every target presents it as its ``host`` member and a linked design joins
the two with ``wiring.connect``), ``start``, ``start_ok``, ``busy``, ``done``, a cycle counter and a
file of 32-bit parameter registers.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.crc import catalog
from amaranth.lib.wiring import In, Out

from golden.errors import InputError, InputTypeError

from .config import STEP_CYCLE_BITS, Config, check_positive_int, checked_constructor
from .gemm import GemmUnit
from .host import HostBus, ParamSignature
from .top import DecodeTop, TopMem
from .uart import MIN_CLOCKS_PER_BIT, UartRx, UartTx

__all__ = [
    "CRC", "DECODE_REGS", "GEMM_REGS", "MAX_FRAME_PAYLOAD", "PROTOCOL_VERSION", "REPLY_SYNC", "REQUEST_SYNC",
    "Command", "HostPort", "LinkBridge", "LinkReceiver", "LinkReplier", "LinkedDecode", "LinkedGemm", "Status",
    "Target", "TOKEN_BYTES", "default_timeout_cycles", "reply_layout", "request_layout",
    "ARG_BYTES", "LOGITS_ARGS", "LOGITS_ARG_BYTES", "MEM_ARGS", "MEM_ARG_BYTES", "READ_ARGS", "READ_ARG_BYTES",
    "REG_ARGS", "REG_ARG_BYTES", "arg_field", "pack_args", "unpack_args",
]

REQUEST_SYNC = 0xA5
REPLY_SYNC = 0x5A
PROTOCOL_VERSION = 1
#: The CRC of every frame (see the module docstring).
CRC = catalog.CRC16_IBM_3740
#: The length field is 16 bits.
MAX_FRAME_PAYLOAD = 0xFFFF
#: The arguments of the commands that take any, byte 0 first, each field little-endian: the one
#: definition the bridge slices and :mod:`sim.link.protocol` packs and unpacks (:func:`pack_args`).
#: WRITE_MEM: memory, word address, then the data words.
MEM_ARGS = data.StructLayout({"mem": unsigned(8), "addr": unsigned(32)})
#: READ_MEM: memory, word address, word count.
READ_ARGS = data.StructLayout({"mem": unsigned(8), "addr": unsigned(32), "count": unsigned(16)})
#: READ_LOGITS: word address, word count (the memory is the target's logits buffer).
LOGITS_ARGS = data.StructLayout({"addr": unsigned(32), "count": unsigned(16)})
#: WRITE_REG: register, value.
REG_ARGS = data.StructLayout({"reg": unsigned(8), "value": unsigned(32)})
#: Bytes of WRITE_MEM arguments before the data.
MEM_ARG_BYTES = MEM_ARGS.size // 8
#: Bytes of READ_MEM's, READ_LOGITS's and WRITE_REG's arguments.
READ_ARG_BYTES = READ_ARGS.size // 8
LOGITS_ARG_BYTES = LOGITS_ARGS.size // 8
REG_ARG_BYTES = REG_ARGS.size // 8
#: Payload bytes the bridge keeps as arguments (the longest argument layout).
ARG_BYTES = max(MEM_ARG_BYTES, READ_ARG_BYTES, REG_ARG_BYTES)
CYCLE_BITS = STEP_CYCLE_BITS
REG_BITS = 32


class Command(enum.Enum, shape=unsigned(8)):
    """Request opcodes. READ_TOKEN and READ_LOGITS serve the decode target only."""

    INFO = 0x01
    WRITE_MEM = 0x10
    READ_MEM = 0x11
    WRITE_REG = 0x20
    START = 0x21
    STATUS = 0x22
    CYCLES = 0x23
    READ_TOKEN = 0x30
    READ_LOGITS = 0x31


class Status(enum.Enum, shape=unsigned(8)):
    """Reply statuses. Every error reply has an empty payload."""

    OK = 0x00
    ERR_CRC = 0x01
    ERR_TIMEOUT = 0x02
    ERR_COMMAND = 0x03
    ERR_LENGTH = 0x04
    ERR_ARGUMENT = 0x05
    ERR_BUSY = 0x06
    ERR_UNSUPPORTED = 0x07


class Target(enum.Enum, shape=unsigned(8)):
    """What sits behind the bridge, as INFO reports it."""

    GEMM = 1
    DECODE = 2


#: Parameter registers of the GEMM target, by index.
GEMM_REGS = ("m", "kt", "nt")
#: Parameter registers of the decode target, by index (the inputs of one decode step).
DECODE_REGS = ("token", "position", "n_kv_heads", "group")
#: READ_TOKEN's reply: the token id, little-endian.
TOKEN_BYTES = 2

#: Commands refused with ERR_BUSY while the target is busy.
_IDLE_ONLY = (Command.WRITE_MEM, Command.READ_MEM, Command.WRITE_REG, Command.START, Command.READ_TOKEN,
              Command.READ_LOGITS)
#: Commands only the decode target serves; the GEMM target answers them with ERR_UNSUPPORTED.
_DECODE_ONLY = (Command.READ_TOKEN, Command.READ_LOGITS)


def default_timeout_cycles(clocks_per_bit: int) -> int:
    """Idle time that ends a frame early: four byte times (a simulation's choice; boards pass their own)."""
    return 40 * clocks_per_bit


class HostPort(ParamSignature):
    """The host port, seen from the host side (the bridge); a target uses ``HostPort(...).flip()``.

    Members: ``bus`` (the target's memory window, a :class:`hdl.host.HostBus`: ``mem``, ``addr``,
    ``we``, ``wdata``, and ``rdata`` ``read_latency`` cycles after ``addr``), ``start``
    (one-cycle pulse), ``start_ok`` (the target can run what ``regs`` hold: a START while it is low is
    refused with ERR_ARGUMENT; the GEMM target's is low for a zero size), ``busy``, ``done``,
    ``cycles`` (48 bits), ``regs`` (``reg_count`` 32-bit registers, held by the host side, truncated
    by the target to the widths it needs); with
    ``token_bits`` > 0 also ``token`` (the decode target's last generated token, for READ_TOKEN).
    """

    def __init__(self, *, mem_count: int, addr_bits: int, wdata_bits: int, rdata_bits: int, reg_count: int,
                 read_latency: int = 1, token_bits: int = 0):
        for name, value in (("reg_count", reg_count), ("read_latency", read_latency)):
            check_positive_int(name, value)
        bus = HostBus(mem_count=mem_count, addr_bits=addr_bits, wdata_bits=wdata_bits, rdata_bits=rdata_bits)
        if reg_count > 256:
            raise InputError(f"reg_count must be at most 256, not {reg_count}")
        if not isinstance(token_bits, int) or not 0 <= token_bits <= 8 * TOKEN_BYTES:
            raise InputError(f"token_bits must be 0 (no token) .. {8 * TOKEN_BYTES}, not {token_bits!r}")
        self.mem_count, self.addr_bits = mem_count, addr_bits
        self.wdata_bits, self.rdata_bits = wdata_bits, rdata_bits
        self.reg_count, self.read_latency = reg_count, read_latency
        self.token_bits = token_bits
        token = {"token": In(token_bits)} if token_bits else {}
        super().__init__({**token,
            "bus": Out(bus),
            "start": Out(1),
            "start_ok": In(1),
            "busy": In(1),
            "done": In(1),
            "cycles": In(CYCLE_BITS),
            "regs": Out(data.ArrayLayout(unsigned(REG_BITS), reg_count)),
        })

    def params(self) -> dict:
        return {"mem_count": self.mem_count, "addr_bits": self.addr_bits, "wdata_bits": self.wdata_bits,
                "rdata_bits": self.rdata_bits, "reg_count": self.reg_count, "read_latency": self.read_latency,
                "token_bits": self.token_bits}


class LinkBridge(wiring.Component):
    """Serves request frames from ``rx`` with reply frames on ``tx`` by driving ``host``.

    One frame at a time: the host sends a request and waits for its reply. Each request gets
    exactly one reply, sent after the request's last byte (or, for a request that stops early, after
    ``timeout_cycles`` of silence). A request is checked whole before it acts: its payload is held
    in a ``max_payload``-byte buffer until the CRC has matched, so a corrupted WRITE_MEM writes
    nothing. Errors, in order of precedence: ERR_LENGTH (length above ``max_payload``; the bridge
    drops bytes until the line has been idle ``timeout_cycles``), ERR_TIMEOUT (the line went idle
    mid-frame), ERR_CRC, ERR_COMMAND (unknown opcode), ERR_UNSUPPORTED (READ_TOKEN or READ_LOGITS on a
    target without them), ERR_ARGUMENT (a payload length, memory, register, address or count the
    command does not accept, or a START while the target's ``start_ok`` is low), ERR_BUSY (a command
    that needs the target idle). After any error the bridge looks for the next request's sync byte.

    ``INFO`` reports the parameters below, so the host needs no configuration of its own.
    """

    @checked_constructor
    def __init__(self, *, port: HostPort, clocks_per_bit: int, timeout_cycles: int | None = None,
                 max_payload: int = 256, target: Target = Target.GEMM, logits_mem: int | None = None):
        if not isinstance(port, HostPort):
            raise InputTypeError(f"port must be a HostPort, not {type(port).__name__}")
        self.target = Target(target)
        if self.target == Target.DECODE:
            # READ_TOKEN and READ_LOGITS: the token comes from the port, the logits from one of its memories.
            if not port.token_bits:
                raise InputError("the decode target's host port needs token_bits > 0 (READ_TOKEN)")
            if not isinstance(logits_mem, int) or not 0 <= logits_mem < port.mem_count:
                raise InputError(f"logits_mem must be a memory of the port (0..{port.mem_count - 1}), "
                                 f"not {logits_mem!r}")
        elif logits_mem is not None:
            raise InputError(f"logits_mem is for the decode target only, not {self.target.name}")
        self.logits_mem = logits_mem
        self.clocks_per_bit = check_positive_int("clocks_per_bit", clocks_per_bit, minimum=MIN_CLOCKS_PER_BIT)
        if timeout_cycles is None:
            timeout_cycles = default_timeout_cycles(clocks_per_bit)
        self.timeout_cycles = check_positive_int("timeout_cycles", timeout_cycles)
        if timeout_cycles < 20 * clocks_per_bit:
            raise InputError(f"timeout_cycles must be at least two byte times ({20 * clocks_per_bit} cycles), "
                             f"not {timeout_cycles}")
        least = max(ARG_BYTES, MEM_ARG_BYTES + port.wdata_bits // 8)
        self.max_payload = check_positive_int("max_payload", max_payload, minimum=least)
        if max_payload > MAX_FRAME_PAYLOAD:
            raise InputError(f"max_payload must be at most {MAX_FRAME_PAYLOAD}, not {max_payload}")
        self.port = port
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "host": Out(port)})

    def info_bytes(self) -> bytes:
        """The INFO reply's payload (see :mod:`sim.link.protocol` for the field names)."""
        p = self.port
        return bytes([PROTOCOL_VERSION, self.target.value, p.mem_count, p.reg_count, p.wdata_bits // 8,
                      p.rdata_bits // 8, p.addr_bits]) + self.max_payload.to_bytes(2, "little")

    def elaborate(self, platform):
        m = Module()
        p = self.port
        host = self.host
        wbytes, rbytes = p.wdata_bits // 8, p.rdata_bits // 8
        info = self.info_bytes()

        m.submodules.receiver = rcv = LinkReceiver(
            port=p, clocks_per_bit=self.clocks_per_bit, timeout_cycles=self.timeout_cycles,
            max_payload=self.max_payload, target=self.target, logits_mem=self.logits_mem)
        m.submodules.replier = rep = LinkReplier(
            clocks_per_bit=self.clocks_per_bit, pay_bytes=max(len(info), 8), rdata_bits=p.rdata_bits,
            read_latency=p.read_latency)
        req = rcv.request.payload
        job = rep.reply.payload
        m.d.comb += [rcv.rx.eq(self.rx), self.tx.eq(rep.tx), rcv.busy.eq(host.busy), rcv.start_ok.eq(host.start_ok),
                     rcv.reply_done.eq(rep.done), rep.rdata.eq(host.bus.rdata)]

        # --- host port registers ------------------------------------------------------------------
        mem = Signal.like(host.bus.mem)
        addr = Signal(p.addr_bits)
        wword = Signal(p.wdata_bits)
        ptr = Signal(range(self.max_payload + 1))
        phase = Signal(range(wbytes))  # WRITE_MEM: byte position in the current data word
        start = Signal()
        m.d.sync += start.eq(0)
        m.d.comb += [host.bus.mem.eq(mem), host.bus.addr.eq(addr), host.bus.wdata.eq(wword), host.start.eq(start),
                     rcv.buf_addr.eq(ptr)]
        with m.If(rep.fetched):
            m.d.sync += addr.eq(addr + 1)

        # --- a checked request acts on the host port and hands its reply on --------------------------
        a_mem, a_addr, a_count = (arg_field(req.args, READ_ARGS, name) for name in ("mem", "addr", "count"))
        a_reg, a_value = (arg_field(req.args, REG_ARGS, name) for name in ("reg", "value"))
        ok = Signal()
        m.d.comb += [ok.eq(rcv.request.valid & (req.status == Status.OK)),
                     rep.reply.valid.eq(rcv.request.valid & ~(ok & (req.cmd == Command.WRITE_MEM))),
                     job.status.eq(req.status)]
        with m.If(ok):
            m.d.sync += [mem.eq(a_mem), addr.eq(a_addr), ptr.eq(MEM_ARG_BYTES)]
            with m.Switch(req.cmd):
                with m.Case(Command.INFO):
                    m.d.comb += [job.pay.eq(int.from_bytes(info, "little")), job.pay_bytes.eq(len(info)),
                                 job.length.eq(len(info))]
                with m.Case(Command.STATUS):
                    flags = Cat(host.busy, host.done, Const(0, 6))
                    m.d.comb += [job.pay.eq(Cat(flags, rcv.last_error.as_value(), rcv.rejected)),
                                 job.pay_bytes.eq(4), job.length.eq(4)]
                with m.Case(Command.CYCLES):
                    m.d.comb += [job.pay.eq(host.cycles), job.pay_bytes.eq(8), job.length.eq(8)]
                with m.Case(Command.START):
                    m.d.sync += start.eq(1)
                with m.Case(Command.WRITE_REG):
                    for i in range(p.reg_count):
                        with m.If(a_reg == i):
                            m.d.sync += host.regs[i].eq(a_value)
                with m.Case(Command.READ_MEM, Command.READ_LOGITS):
                    m.d.comb += [job.fetch.eq(1), job.words.eq(a_count), job.length.eq(a_count * rbytes)]
                if self.target == Target.DECODE:
                    with m.Case(Command.READ_TOKEN):
                        m.d.comb += [job.pay.eq(host.token), job.pay_bytes.eq(TOKEN_BYTES),
                                     job.length.eq(TOKEN_BYTES)]

        # --- WRITE_MEM: buffer -> host port, one word at a time; then its (empty) reply -------------
        with m.FSM():
            with m.State("IDLE"), m.If(ok & (req.cmd == Command.WRITE_MEM)):
                m.next = "WM_FETCH"
            with m.State("WM_FETCH"):
                m.next = "WM_SHIFT"     # the buffer's read address is ptr; its data is there next cycle
            with m.State("WM_SHIFT"):
                m.d.sync += [wword.eq(Cat(wword[8:], rcv.buf_data)), ptr.eq(ptr + 1)]
                with m.If(phase == wbytes - 1):
                    m.d.sync += phase.eq(0)
                    m.next = "WM_WRITE"
                with m.Else():
                    m.d.sync += phase.eq(phase + 1)
                    m.next = "WM_FETCH"
            with m.State("WM_WRITE"):
                m.d.comb += host.bus.we.eq(1)
                m.d.sync += addr.eq(addr + 1)
                with m.If(ptr == req.length):
                    m.d.comb += [rep.reply.valid.eq(1), job.status.eq(Status.OK)]
                    m.next = "IDLE"
                with m.Else():
                    m.next = "WM_FETCH"
        return m


def arg_field(args, layout: data.StructLayout, name: str):
    """Field ``name`` of the argument bytes ``args`` (a hardware value) read through ``layout``."""
    f = layout[name]
    return args[f.offset:f.offset + f.width]


def pack_args(layout: data.StructLayout, **values) -> bytes:
    """The argument bytes of ``layout`` holding ``values`` (every field; InputError if one does not fit)."""
    word = 0
    for name, f in layout:
        value = int(values[name])
        if not 0 <= value < (1 << f.width):
            raise InputError(f"{name} must be in [0, {(1 << f.width) - 1}], not {value}")
        word |= value << f.offset
    return word.to_bytes(layout.size // 8, "little")


def unpack_args(layout: data.StructLayout, payload: bytes) -> dict:
    """Inverse of :func:`pack_args`: name -> value of the first ``layout.size // 8`` bytes of ``payload``."""
    word = int.from_bytes(payload[:layout.size // 8], "little")
    return {name: (word >> f.offset) & ((1 << f.width) - 1) for name, f in layout}


def request_layout() -> data.StructLayout:
    """A received request as :class:`LinkReceiver` hands it on: ``status`` (OK, or the error its
    reply carries), ``cmd``, ``length`` and ``args`` (payload bytes 0 .. ARG_BYTES - 1, the arguments
    of every command; READ_LOGITS's start at byte 1, after a memory byte of ``logits_mem``)."""
    return data.StructLayout({"status": Status, "cmd": unsigned(8), "length": unsigned(16),
                              "args": unsigned(8 * ARG_BYTES)})


def reply_layout(pay_bytes: int) -> data.StructLayout:
    """A reply as :class:`LinkReplier` sends it: ``status``, ``length`` (payload bytes), and either
    ``pay`` (``pay_bytes`` bytes, low byte first) or, with ``fetch``, ``words`` words read from the
    host port's ``rdata``."""
    return data.StructLayout({"status": Status, "length": unsigned(16), "pay": unsigned(8 * pay_bytes),
                              "pay_bytes": range(pay_bytes + 1), "fetch": unsigned(1), "words": unsigned(16)})


class LinkReceiver(wiring.Component):
    """The bridge's receive side: frames from ``rx``, checked whole before they act.

    Parameters as :class:`LinkBridge`'s (checked there). A request's payload is held in a
    ``max_payload``-byte buffer until its CRC has matched; ``buf_addr``/``buf_data`` read that
    buffer (``buf_data`` one cycle after ``buf_addr``). Each request, good or bad, leaves on
    ``request`` (one beat, :func:`request_layout`, always taken): the cycle after its last byte for
    a good one; for a refused one (``status`` names the error, with the precedence
    :class:`LinkBridge` lists) a cycle later, or ``timeout_cycles`` of silence after a frame that
    stopped early or was too long. The receiver then holds the beat's ``length`` and ignores
    ``rx`` until ``reply_done``, the cycle the reply's last byte is taken. ``busy`` is the target's
    (a command that needs it idle is refused with ERR_BUSY), ``start_ok`` too (START is refused with
    ERR_ARGUMENT while it is low). ``last_error`` and ``rejected``: the
    last error status and the count of refused requests (saturating), for STATUS.
    """

    def __init__(self, *, port: HostPort, clocks_per_bit: int, timeout_cycles: int, max_payload: int,
                 target: Target, logits_mem: int | None):
        self.port, self.clocks_per_bit, self.timeout_cycles = port, clocks_per_bit, timeout_cycles
        self.max_payload, self.target, self.logits_mem = max_payload, target, logits_mem
        super().__init__({
            "rx": In(1, init=1),
            "busy": In(1),
            "start_ok": In(1),
            "request": Out(stream.Signature(request_layout(), always_ready=True)),
            "reply_done": In(1),
            "buf_addr": In(range(max_payload + 1)),
            "buf_data": Out(8),
            "last_error": Out(Status),
            "rejected": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.urx = urx = UartRx(clocks_per_bit=self.clocks_per_bit)
        m.d.comb += urx.rx.eq(self.rx)
        m.submodules.rx_crc = rx_crc = CRC(8).create()
        m.submodules.buf = buf = memory.Memory(shape=unsigned(8), depth=self.max_payload, init=[])
        buf_w = buf.write_port()
        buf_r = buf.read_port()

        byte = urx.data.payload
        got = urx.data.valid

        # --- request fields -------------------------------------------------------------------
        cmd = Signal(8)
        length = Signal(16)
        hidx = Signal(2)
        idx = Signal(range(self.max_payload + 1))
        args = Signal(8 * ARG_BYTES)   # the first payload bytes: the arguments of every command
        phase = Signal(range(self.port.wdata_bits // 8))  # WRITE_MEM: byte position in the current data word
        words = Signal(16)             # WRITE_MEM: whole data words received
        crc_idx = Signal()
        status = Signal(Status)

        # --- idle timer: a frame that stops early ends after timeout_cycles of silence ----------
        idle = Signal(range(self.timeout_cycles + 1))
        timed_out = Signal()
        receiving = Signal()
        m.d.comb += timed_out.eq(idle == self.timeout_cycles)
        with m.If(~receiving | got | urx.busy):
            m.d.sync += idle.eq(0)
        with m.Elif(~timed_out):
            m.d.sync += idle.eq(idle + 1)

        m.d.comb += [
            rx_crc.data.eq(byte),
            buf_w.addr.eq(idx), buf_w.data.eq(byte), buf_r.addr.eq(self.buf_addr), self.buf_data.eq(buf_r.data),
            self.request.payload.cmd.eq(cmd), self.request.payload.length.eq(length),
            self.request.payload.args.eq(args),
        ]
        is_cmd = {c: Signal(name=f"is_{c.name.lower()}") for c in Command}
        for c, s in is_cmd.items():
            m.d.comb += s.eq(cmd == c.value)
        logits = is_cmd[Command.READ_LOGITS] if self.target == Target.DECODE else Const(0)
        known, reserved, arg_ok, busy_bad = self._checks(m, is_cmd, cmd, length, args, phase, words, logits)

        with m.FSM():
            self._receive(m, got, byte, timed_out, receiving, rx_crc, buf_w, status, cmd, length, hidx, idx,
                          args, phase, words, crc_idx, logits)
            with m.State("CHECK"):
                with m.If(~rx_crc.match_detected):
                    m.d.sync += status.eq(Status.ERR_CRC)
                    m.next = "ERROR"
                with m.Elif(reserved):
                    m.d.sync += status.eq(Status.ERR_UNSUPPORTED)
                    m.next = "ERROR"
                with m.Elif(~known):
                    m.d.sync += status.eq(Status.ERR_COMMAND)
                    m.next = "ERROR"
                with m.Elif(~arg_ok):
                    m.d.sync += status.eq(Status.ERR_ARGUMENT)
                    m.next = "ERROR"
                with m.Elif(busy_bad):
                    m.d.sync += status.eq(Status.ERR_BUSY)
                    m.next = "ERROR"
                with m.Else():
                    m.d.comb += [self.request.valid.eq(1), self.request.payload.status.eq(Status.OK)]
                    m.next = "REPLY"
            with m.State("ERROR"):
                m.d.comb += [self.request.valid.eq(1), self.request.payload.status.eq(status)]
                m.d.sync += self.last_error.eq(status)
                with m.If(self.rejected != 0xFFFF):
                    m.d.sync += self.rejected.eq(self.rejected + 1)
                m.next = "REPLY"
            with m.State("REPLY"), m.If(self.reply_done):
                m.next = "HUNT"
        return m

    def _checks(self, m, is_cmd, cmd, length, args, phase, words, logits):
        """The request checks, from the registered fields: (known, reserved, arg_ok, busy_bad)."""
        p = self.port
        wbytes, rbytes = p.wdata_bits // 8, p.rdata_bits // 8
        a_mem, a_addr, a_count = (arg_field(args, READ_ARGS, name) for name in ("mem", "addr", "count"))
        a_reg = arg_field(args, REG_ARGS, "reg")
        decode = self.target == Target.DECODE
        served = [c for c in Command if decode or c not in _DECODE_ONLY]
        known = Signal()
        reserved = Signal()
        m.d.comb += [
            known.eq(Cat(*(is_cmd[c] for c in served)).any()),
            reserved.eq(Cat(*(is_cmd[c] for c in Command if c not in served)).any()),
        ]
        # READ_LOGITS is READ_MEM of the logits memory: its arguments land one byte further on, after
        # a memory byte set to ``logits_mem`` when the header ends.
        reads = Signal()
        m.d.comb += reads.eq(is_cmd[Command.READ_MEM] | logits)
        addr_ok = Signal()
        span = Signal(34)
        m.d.comb += span.eq(a_addr + Mux(reads, a_count, words))
        m.d.comb += addr_ok.eq((a_addr[p.addr_bits:] == 0) & (span <= (1 << p.addr_bits)))
        arg_ok = Signal()
        max_read = MAX_FRAME_PAYLOAD // rbytes
        with m.Switch(cmd):
            with m.Case(Command.INFO, Command.STATUS, Command.CYCLES):
                m.d.comb += arg_ok.eq(length == 0)
            with m.Case(Command.START):
                m.d.comb += arg_ok.eq((length == 0) & self.start_ok)
            with m.Case(Command.WRITE_MEM):
                m.d.comb += arg_ok.eq((length >= MEM_ARG_BYTES + wbytes) & (phase == 0) & (a_mem < p.mem_count)
                                      & addr_ok)
            with m.Case(Command.READ_MEM):
                m.d.comb += arg_ok.eq((length == READ_ARG_BYTES) & (a_mem < p.mem_count) & (a_count != 0)
                                      & (a_count <= max_read) & addr_ok)
            with m.Case(Command.READ_LOGITS):
                m.d.comb += arg_ok.eq((length == LOGITS_ARG_BYTES) & (a_count != 0) & (a_count <= max_read)
                                      & addr_ok)
            with m.Case(Command.READ_TOKEN):
                m.d.comb += arg_ok.eq(length == 0)
            with m.Case(Command.WRITE_REG):
                m.d.comb += arg_ok.eq((length == REG_ARG_BYTES) & (a_reg < p.reg_count))
        busy_bad = Signal()
        m.d.comb += busy_bad.eq(self.busy & Cat(*(is_cmd[c] for c in _IDLE_ONLY)).any())
        return known, reserved, arg_ok, busy_bad

    def _receive(self, m, got, byte, timed_out, receiving, rx_crc, buf_w, status, cmd, length, hidx, idx, args,
                 phase, words, crc_idx, logits):
        """The receiving states: the sync byte, the header, the payload (into the buffer), the CRC."""
        wbytes = self.port.wdata_bits // 8
        with m.State("HUNT"):
            m.d.comb += rx_crc.start.eq(1)
            with m.If(got & (byte == REQUEST_SYNC)):
                m.d.sync += hidx.eq(0)
                m.next = "HEADER"
        with m.State("HEADER"):
            m.d.comb += [receiving.eq(1), rx_crc.valid.eq(got)]
            with m.If(timed_out):
                m.d.sync += status.eq(Status.ERR_TIMEOUT)
                m.next = "ERROR"
            with m.Elif(got):
                m.d.sync += hidx.eq(hidx + 1)
                with m.If(hidx == 0):
                    m.d.sync += cmd.eq(byte)
                with m.Elif(hidx == 1):
                    m.d.sync += length[0:8].eq(byte)
                with m.Else():
                    full = Cat(length[0:8], byte)
                    m.d.sync += [length[8:16].eq(byte), idx.eq(0), phase.eq(0), words.eq(0),
                                 crc_idx.eq(0), args.eq(Mux(logits, self.logits_mem or 0, 0))]
                    with m.If(full > self.max_payload):
                        m.next = "DISCARD"
                    with m.Elif(full == 0):
                        m.next = "CRC"
                    with m.Else():
                        m.next = "PAYLOAD"
        with m.State("PAYLOAD"):
            m.d.comb += [receiving.eq(1), rx_crc.valid.eq(got), buf_w.en.eq(got)]
            with m.If(timed_out):
                m.d.sync += status.eq(Status.ERR_TIMEOUT)
                m.next = "ERROR"
            with m.Elif(got):
                m.d.sync += idx.eq(idx + 1)
                slot = Signal.like(idx)
                m.d.comb += slot.eq(idx + logits)
                for i in range(ARG_BYTES):
                    with m.If(slot == i):
                        m.d.sync += args[8 * i:8 * i + 8].eq(byte)
                with m.If(idx >= MEM_ARG_BYTES):
                    with m.If(phase == wbytes - 1):
                        m.d.sync += [phase.eq(0), words.eq(words + 1)]
                    with m.Else():
                        m.d.sync += phase.eq(phase + 1)
                with m.If(idx + 1 == length):
                    m.next = "CRC"
        with m.State("CRC"):
            m.d.comb += [receiving.eq(1), rx_crc.valid.eq(got)]
            with m.If(timed_out):
                m.d.sync += status.eq(Status.ERR_TIMEOUT)
                m.next = "ERROR"
            with m.Elif(got):
                m.d.sync += crc_idx.eq(1)
                with m.If(crc_idx):
                    m.next = "CHECK"
        with m.State("DISCARD"):
            m.d.comb += receiving.eq(1)
            with m.If(timed_out):
                m.d.sync += status.eq(Status.ERR_LENGTH)
                m.next = "ERROR"


class LinkReplier(wiring.Component):
    """The bridge's reply side: one reply frame on ``tx`` per beat of ``reply`` (:func:`reply_layout`).

    ``reply`` is taken only while no reply is being sent (the bridge sends one only then); the sync
    byte starts the cycle after. With ``fetch``, each of the reply's ``words`` payload words is
    ``rdata`` from ``read_latency`` cycles after the length bytes (the first) or after the word
    before it was sent, and stays there while its bytes are sent. ``rdata`` is registered as it is
    (a word register loading every cycle, no enable), and each byte is selected from that register
    a cycle later (no shift register as wide as a word: on the FPGA a 256-bit shift register and
    its enable sat among the top level's busiest nets; and the byte select, the UART and the CRC
    straight after the target's memory select were the routed board design's slowest path).
    ``fetched`` pulses as a word's last byte is taken, so the host port's address moves on to the
    next. ``pay`` holds the other replies' payloads
    (``pay_bytes`` bytes). ``done`` pulses in the cycle the CRC's last byte is taken.
    """

    def __init__(self, *, clocks_per_bit: int, pay_bytes: int, rdata_bits: int, read_latency: int):
        self.clocks_per_bit, self.pay_bytes = clocks_per_bit, pay_bytes
        self.rdata_bits, self.read_latency = rdata_bits, read_latency
        super().__init__({
            "tx": Out(1, init=1),
            "reply": In(stream.Signature(reply_layout(pay_bytes))),
            "rdata": In(rdata_bits),
            "fetched": Out(1),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.utx = utx = UartTx(clocks_per_bit=self.clocks_per_bit)
        m.d.comb += self.tx.eq(utx.tx)
        m.submodules.tx_crc = tx_crc = CRC(8).create()
        rbytes = self.rdata_bits // 8

        status = Signal(Status)
        reply_len = Signal(16)
        pay = Signal(8 * self.pay_bytes)
        pay_bytes = Signal(range(max(self.pay_bytes, rbytes) + 1))     # bytes left of the payload or word
        byte = Signal(range(max(rbytes, 2)))          # READ_MEM: the byte of rdata being sent
        words_left = Signal(16)
        fetch = Signal()                # READ_MEM: payload words come from rdata
        wait = Signal(range(self.read_latency + 2))
        # The host port's read data registered here: on the FPGA it comes from block RAMs through the
        # target's memory select, and the byte select, the UART's shift register and the CRC after
        # it were the board design's slowest path. A word is then shown read_latency + 1 cycles
        # after its address (it holds while the address does).
        word = Signal(self.rdata_bits)
        m.d.sync += word.eq(self.rdata)
        tx_fire = Signal()
        m.d.comb += [tx_crc.data.eq(utx.data.payload), tx_fire.eq(utx.data.valid & utx.data.ready)]

        with m.FSM():
            with m.State("IDLE"):
                job = self.reply.payload
                m.d.comb += self.reply.ready.eq(1)
                with m.If(self.reply.valid):
                    m.d.sync += [status.eq(job.status), reply_len.eq(job.length), pay.eq(job.pay),
                                 pay_bytes.eq(job.pay_bytes), fetch.eq(job.fetch), words_left.eq(job.words)]
                    m.next = "SYNC"
            with m.State("SYNC"):
                m.d.comb += [utx.data.valid.eq(1), utx.data.payload.eq(REPLY_SYNC), tx_crc.start.eq(1)]
                with m.If(tx_fire):
                    m.next = "STATUS"
            with m.State("STATUS"):
                m.d.comb += [utx.data.valid.eq(1), utx.data.payload.eq(status), tx_crc.valid.eq(tx_fire)]
                with m.If(tx_fire):
                    m.next = "LEN0"
            with m.State("LEN0"):
                m.d.comb += [utx.data.valid.eq(1), utx.data.payload.eq(reply_len[0:8]), tx_crc.valid.eq(tx_fire)]
                with m.If(tx_fire):
                    m.next = "LEN1"
            with m.State("LEN1"):
                m.d.comb += [utx.data.valid.eq(1), utx.data.payload.eq(reply_len[8:16]),
                             tx_crc.valid.eq(tx_fire)]
                with m.If(tx_fire):
                    with m.If(reply_len == 0):
                        m.next = "CRC0"
                    with m.Elif(fetch):
                        m.d.sync += wait.eq(self.read_latency + 1)
                        m.next = "FETCH"
                    with m.Else():
                        m.next = "PAY"
            with m.State("FETCH"):
                # The host port has shown the word's address since the previous state; ``word``
                # follows read_latency + 1 cycles later and holds while the address does.
                with m.If(wait != 1):
                    m.d.sync += wait.eq(wait - 1)
                with m.Else():
                    m.d.sync += [byte.eq(0), pay_bytes.eq(rbytes)]
                    m.next = "PAY"
            with m.State("PAY"):
                out = Mux(fetch, word.word_select(byte, 8), pay[0:8])
                m.d.comb += [utx.data.valid.eq(1), utx.data.payload.eq(out), tx_crc.valid.eq(tx_fire)]
                with m.If(tx_fire):
                    m.d.sync += [pay.eq(pay >> 8), byte.eq(byte + 1), pay_bytes.eq(pay_bytes - 1)]
                    with m.If(pay_bytes == 1):
                        with m.If(fetch):
                            m.d.comb += self.fetched.eq(1)
                            m.d.sync += words_left.eq(words_left - 1)
                        with m.If(fetch & (words_left != 1)):
                            m.d.sync += wait.eq(self.read_latency + 1)
                            m.next = "FETCH"
                        with m.Else():
                            m.next = "CRC0"
            with m.State("CRC0"):
                m.d.comb += [utx.data.valid.eq(1), utx.data.payload.eq(tx_crc.crc[8:16])]
                with m.If(tx_fire):
                    m.next = "CRC1"
            with m.State("CRC1"):
                m.d.comb += [utx.data.valid.eq(1), utx.data.payload.eq(tx_crc.crc[0:8])]
                with m.If(tx_fire):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
        return m


class LinkedGemm(wiring.Component):
    """A :class:`hdl.gemm.GemmUnit` behind a :class:`LinkBridge`: the whole design speaks UART.

    Memories: 0 weights, 1 activations, 2 results (reads always return result words, as the
    unit's host port does). Registers: 0 ``m``, 1 ``kt``, 2 ``nt`` (see :data:`GEMM_REGS`), truncated to
    the unit's port widths; START with any of them zero there is refused with ERR_ARGUMENT (the
    unit's ``shape_ok``).
    ``busy`` and ``done`` mirror the unit's (for LEDs on a board).
    """

    rx: In(1, init=1)
    tx: Out(1, init=1)
    busy: Out(1)
    done: Out(1)

    @checked_constructor
    def __init__(self, config: Config, *, clocks_per_bit: int, timeout_cycles: int | None = None,
                 max_payload: int = 256):
        if not isinstance(config, Config):
            raise InputTypeError(f"config must be a Config, not {type(config).__name__}")
        config.check_buildable()
        self.config = config
        self.port = HostPort(**GemmUnit.bus_for(config).params(), reg_count=len(GEMM_REGS))
        # The bridge is built here so a bad link parameter is refused by the constructor.
        self.bridge = LinkBridge(port=self.port, clocks_per_bit=clocks_per_bit, timeout_cycles=timeout_cycles,
                                 max_payload=max_payload, target=Target.GEMM)
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = bridge = self.bridge
        m.submodules.gemm = gemm = GemmUnit(self.config)
        h = bridge.host
        wiring.connect(m, h.bus, gemm.host)
        m.d.comb += [
            bridge.rx.eq(self.rx), self.tx.eq(bridge.tx),
            gemm.start.eq(h.start), h.start_ok.eq(gemm.shape_ok), h.busy.eq(gemm.busy), h.done.eq(gemm.done),
            h.cycles.eq(gemm.cycles),
            self.busy.eq(gemm.busy), self.done.eq(gemm.done),
        ]
        for i, name in enumerate(GEMM_REGS):
            m.d.comb += getattr(gemm, name).eq(h.regs[i])
        return m


class LinkedDecode(wiring.Component):
    """The decode top level (:class:`hdl.top.DecodeTop`) behind a :class:`LinkBridge`.

    Memories: those of :class:`hdl.top.TopMem` (the host port's ``mem`` is its value); write words
    are the top level's host data width, read words ``32 * lanes`` bits. Registers: see
    :data:`DECODE_REGS` (0 ``token``, 1 ``position``, 2 ``n_kv_heads``, 3 ``group``), the inputs
    START hands to the step (refused with ERR_ARGUMENT while the top level's ``start_ok`` is low: zero
    heads, or more than ``max_heads``, in its port widths). The bridge sees ``start_ok`` a cycle late,
    registered: the registers it checks are written by earlier commands, a UART frame or more before
    any START is received, and the register keeps the top level's check out of the bridge's reply
    logic (one clock cycle on the FPGA). READ_TOKEN returns the step's ``next_token``,
    READ_LOGITS reads the logits buffer. ``busy`` and ``done`` mirror the top level's (LEDs on a board).

    ``preload`` (a :class:`hdl.host.HostBus` like the bridge's) writes memories directly, bypassing
    the UART (a simulation's backdoor to load a model's hundreds of kilobytes in one word a cycle; a
    board leaves it at zero and synthesis removes it). While ``preload.we`` is high the bridge's own
    writes are ignored.
    """

    @checked_constructor
    def __init__(self, config: Config, *, head_dim: int, max_heads: int, max_norm_length: int,
                 clocks_per_bit: int, timeout_cycles: int | None = None, max_payload: int = 256):
        if not isinstance(config, Config):
            raise InputTypeError(f"config must be a Config, not {type(config).__name__}")
        if config.kv_block:     # the protocol writes no block table (nor the row table): table 0 would be zeros
            raise InputError(f"kv_block {config.kv_block}: the serial link runs fixed KV slots only (kv_block 0); "
                             f"its protocol carries no block tables")
        self.top = DecodeTop(config, head_dim=head_dim, max_heads=max_heads, max_norm_length=max_norm_length)
        self.config = config
        t = self.top
        self.port = HostPort(**t.host_bus.params(), reg_count=len(DECODE_REGS), token_bits=8 * TOKEN_BYTES)
        self.bridge = LinkBridge(port=self.port, clocks_per_bit=clocks_per_bit, timeout_cycles=timeout_cycles,
                                 max_payload=max_payload, target=Target.DECODE, logits_mem=TopMem.LOGITS.value)
        super().__init__({
            "rx": In(1, init=1), "tx": Out(1, init=1), "busy": Out(1), "done": Out(1),
            "preload": In(t.host_bus),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = bridge = self.bridge
        m.submodules.top = top = self.top
        h = bridge.host
        bus, pre = h.bus, self.preload
        for name in ("mem", "addr", "wdata"):
            m.d.comb += getattr(top.host, name).eq(Mux(pre.we, getattr(pre, name), getattr(bus, name)))
        m.d.comb += [top.host.we.eq(pre.we | bus.we), bus.rdata.eq(top.host.rdata), pre.rdata.eq(top.host.rdata)]
        regs = {name: h.regs[i] for i, name in enumerate(DECODE_REGS)}
        m.d.comb += [
            bridge.rx.eq(self.rx), self.tx.eq(bridge.tx),
            h.token.eq(top.next_token),
            top.start.eq(h.start), h.busy.eq(top.busy), h.done.eq(top.done),
            h.cycles.eq(top.cycles),
            top.token.eq(regs["token"]), top.position.eq(regs["position"]),
            top.n_kv_heads.eq(regs["n_kv_heads"]), top.group.eq(regs["group"]),
            self.busy.eq(top.busy), self.done.eq(top.done),
        ]
        m.d.sync += h.start_ok.eq(top.start_ok)
        return m
