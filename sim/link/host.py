"""The host side of the link: one :class:`Link` over a byte transport, a board's serial port or the RTL's pins.

:class:`Link` speaks the frames of :mod:`sim.link.protocol` (load memories, set registers, start, poll,
read the cycle counter and the results). It is written once, async, against a transport with
``send(bytes)``, ``recv(n)`` and ``idle()``:

* :class:`SerialTransport`: a board on a serial port (pyserial); drive it with ``asyncio.run``;
* :class:`SimUartTransport`: a simulated design's ``rx``/``tx`` pins over :class:`sim.engine.bus.Bus`,
  bit-banged cycle by cycle inside the simulator (cocotb on Verilator/Icarus, or Amaranth's).

Every wait has a limit: a reply that does not start or stops half-way raises :class:`LinkTimeout`
(cycles for a simulated link, seconds for a serial port), and polling for ``done`` gives up after a
stated number of polls. Nothing waits forever.
"""

from __future__ import annotations

import asyncio
import os
import select
import time
from dataclasses import dataclass
from typing import NotRequired, TypedDict

from golden.errors import InputError, LockstepError
from golden.numerics import ceil_div
from hdl.config import Config, check_positive_int
from hdl.gemm import HostMem
from hdl.link import (
    DECODE_REGS,
    GEMM_REGS,
    MAX_FRAME_PAYLOAD,
    REPLY_SYNC,
    TOKEN_BYTES,
    LinkedDecode,
    LinkedGemm,
    default_timeout_cycles,
)
from hdl.top import DecodeTop, TopMem
from hdl.uart import MIN_CLOCKS_PER_BIT

from ..flows.decode import IMAGE_MEMORIES, check_job, drive_steps
from ..flows.decode_steps import DecodeImages, DecodeJob
from ..flows.gemm import act_words, check_operands, plan_gemm, unpack_results, weight_words
from ..flows.gemm_jobs import GemmCase, check_gemm_job
from .protocol import (
    STATUSES,
    Command,
    DeviceInfo,
    FrameError,
    Status,
    Target,
    decode_reply,
    encode_request,
    read_logits_payload,
    read_mem_payload,
    write_mem_payload,
    write_reg_payload,
)

__all__ = [
    "Link", "LinkDecoder", "LinkError", "LinkStatus", "LinkTimeout", "SerialTransport", "SimUartTransport", "FLOWS",
    "CHECKS", "JOBS", "LinkDecodeJob", "LinkFramesJob", "LinkGemmJob", "LinkPtyJob", "run_gemm_over_link",
    "run_gemm_on_port",
]


class LinkError(LockstepError, RuntimeError):
    """The device refused a request (``status`` says why) or its reply was malformed."""

    def __init__(self, message: str, status: Status | None = None):
        super().__init__(message)
        self.status = status


class LinkTimeout(LinkError):
    """The device did not answer, or stopped answering, within the transport's time limit."""


@dataclass(frozen=True)
class LinkStatus:
    busy: bool
    done: bool
    last_error: Status
    rejected: int

    @classmethod
    def decode(cls, payload: bytes) -> LinkStatus:
        if len(payload) != 4:
            raise LinkError(f"STATUS reply holds {len(payload)} bytes, not 4")
        try:
            last = Status(payload[1])
        except ValueError:
            raise LinkError(f"STATUS reply names an unknown last error 0x{payload[1]:02X}") from None
        return cls(bool(payload[0] & 1), bool(payload[0] & 2), last, int.from_bytes(payload[2:4], "little"))


# --- transports ----------------------------------------------------------------------------------

class SimUartTransport:
    """The far end of a simulated design's UART, over :class:`sim.engine.bus.Bus`.

    Drives ``rx`` (8N1, ``clocks_per_bit`` cycles per bit) and decodes ``tx``. ``tx`` is a register
    output, settled after every tick. The simulator is woken once per bit, not once per cycle,
    except while hunting for a start bit, so a frame costs about ten wake-ups a byte: while
    sending, ``tx`` is checked at every bit boundary (a start bit lasts a whole bit time, so a reply
    that begins while the request is still being sent is always seen, and raises
    :class:`LinkError`, since one request at a time is the protocol); while receiving, the start
    bit's first low cycle is found cycle by cycle, then each bit is sampled in its middle.
    ``recv`` raises :class:`LinkTimeout` when no start bit comes within ``reply_timeout_cycles``;
    ``idle()`` keeps the line high for ``idle_cycles`` (the device's frame timeout and a margin).
    """

    def __init__(self, bus, *, clocks_per_bit: int, reply_timeout_cycles: int, idle_cycles: int,
                 rx: str = "rx", tx: str = "tx"):
        self.bus, self.cpb = bus, clocks_per_bit
        self.reply_timeout_cycles, self.idle_cycles = reply_timeout_cycles, idle_cycles
        self.rx, self.tx = rx, tx
        self.cycles = 0
        self.framing_errors = 0
        self._got = bytearray()

    def describe(self) -> str:
        return f"simulated UART at {self.cpb} cycles per bit"

    async def _ticks(self, n: int):
        await self.bus.ticks(n)
        self.cycles += n

    async def send(self, data: bytes):
        for byte in data:
            for bit in [0, *((byte >> i) & 1 for i in range(8)), 1]:
                self.bus.set(self.rx, bit)
                await self._ticks(self.cpb)
                if not self.bus.get(self.tx):
                    raise LinkError(f"{self.tx} started a reply while the request was still being sent")

    async def _byte(self):
        """Decode one byte whose start bit was first seen low on the last tick; False on a glitch."""
        await self._ticks(self.cpb // 2)
        if self.bus.get(self.tx):
            return False
        value = 0
        for i in range(8):
            await self._ticks(self.cpb)
            value |= self.bus.get(self.tx) << i
        await self._ticks(self.cpb)
        if self.bus.get(self.tx):
            self._got.append(value)
        else:
            self.framing_errors += 1
        return True

    async def recv(self, n: int) -> bytes:
        waited = 0
        while len(self._got) < n:
            await self._ticks(1)
            if self.bus.get(self.tx):
                waited += 1
                if waited > self.reply_timeout_cycles:
                    raise LinkTimeout(f"no reply byte on {self.tx} within {self.reply_timeout_cycles} cycles "
                                      f"(got {len(self._got)} of {n} bytes)")
            elif await self._byte():
                waited = 0
        out = bytes(self._got[:n])
        del self._got[:n]
        return out

    async def idle(self):
        await self.pause(self.idle_cycles)
        self._got.clear()

    def discard(self):
        """Drop reply bytes nobody asked for (a frame timer's reply to earlier garbage)."""
        self._got.clear()

    async def pause(self, cycles: int):
        """Let ``cycles`` clock cycles pass with the line idle (between frames: nothing to decode)."""
        self.bus.set(self.rx, 1)
        await self._ticks(int(cycles))


class SimLine:
    """A simulated design's UART pins as a board's wire sees them: both directions at once.

    Bytes given to :meth:`write` go out on ``rx`` back to back (8N1, ``clocks_per_bit`` cycles a
    bit) as soon as they are given; whatever the design sends on ``tx`` is decoded into
    :attr:`received` whenever it comes, also while ``rx`` is sending and also when no request asked
    for it (a frame timer's ERR_TIMEOUT). :meth:`advance` runs the design a stated number of
    cycles and may be called with any count: the line's state carries over between calls. While
    ``tx`` is idle its start bit is awaited on the signal's edge (:meth:`sim.engine.bus.Bus.watch`), so an
    idle line costs no Python per cycle; a byte costs a wake-up a bit.
    """

    def __init__(self, bus, *, clocks_per_bit: int, rx: str = "rx", tx: str = "tx"):
        self.bus, self.cpb, self.rx, self.tx = bus, clocks_per_bit, rx, tx
        self.cycles = 0
        self.pending = bytearray()     # bytes still to go out on rx
        self.received = bytearray()    # bytes decoded from tx, not yet taken
        self.framing_errors = 0
        self._bits: list[int] = []     # the rest of the byte on rx, after the bit on the line now
        self._bit_ends: int | None = None   # cycle at which rx's current bit ends (None: rx idle)
        self._sample: int | None = None     # cycle of tx's next sample (None: hunting a start bit)
        self._index = 0                # tx: 0 start bit, 1..8 data bits, 9 stop bit
        self._value = 0

    def write(self, data: bytes):
        self.pending += data

    @property
    def busy(self) -> bool:
        """A byte is on either wire, or waits to go out."""
        return bool(self.pending) or self._bit_ends is not None or self._sample is not None

    def take(self) -> bytes:
        out = bytes(self.received)
        self.received.clear()
        return out

    def _events(self):
        now = self.cycles
        if self._sample == now:
            level = self.bus.get(self.tx)
            if self._index == 0:
                self._sample, self._index, self._value = (None, 0, 0) if level else (now + self.cpb, 1, 0)
            elif self._index <= 8:
                self._value |= level << (self._index - 1)
                self._index += 1
                self._sample = now + self.cpb
            else:
                if level:
                    self.received.append(self._value)
                else:
                    self.framing_errors += 1
                self._sample, self._index = None, 0
        if self._bit_ends == now or (self._bit_ends is None and self.pending):
            if not self._bits and self.pending:
                byte = self.pending.pop(0)
                self._bits = [0, *((byte >> i) & 1 for i in range(8)), 1]
            if self._bits:
                self.bus.set(self.rx, self._bits.pop(0))
                self._bit_ends = now + self.cpb
            else:
                self._bit_ends = None   # the stop bit is over and nothing waits: rx stays high

    async def advance(self, cycles: int):
        """Run the design ``cycles`` clock cycles, sending and receiving as the line's state says."""
        end = self.cycles + int(cycles)
        while True:
            self._events()
            if self.cycles >= end:
                return
            until = min(t for t in (end, self._bit_ends, self._sample) if t is not None)
            if self._sample is not None:
                await self.bus.ticks(until - self.cycles)
                self.cycles = until
                continue
            passed = await self.bus.watch(self.tx, 0, until - self.cycles)
            if passed is None:
                self.cycles = until
            else:   # a start bit, first seen low now: sample its middle, then each bit's
                self.cycles += passed
                self._sample, self._index = self.cycles + self.cpb // 2, 0


try:   # a port whose far end has gone fails in termios calls with termios.error, not an OSError
    import termios

    _PORT_ERRORS: tuple[type[Exception], ...] = (OSError, termios.error)
except ImportError:  # pragma: no cover - not a POSIX system
    _PORT_ERRORS = (OSError,)


class SerialTransport:
    """A board on a serial port, through pyserial: ``SerialTransport("/dev/ttyUSB1", baud=115200)``.

    ``port`` may also be an already open pyserial object (or any object with ``write``, ``read``
    and ``reset_input_buffer``; pyserial's ``serial_for_url("loop://")`` works for tests).
    ``timeout`` (seconds) bounds every wait for reply bytes and for room to send; every failure of
    the port is a :class:`LinkError` (a wait that ran out, :class:`LinkTimeout`) naming it.
    """

    def __init__(self, port, *, baud: int = 115200, timeout: float = 2.0, idle_seconds: float = 0.1,
                 clock_hz: float | None = None):
        if isinstance(port, str):
            try:
                import serial
            except ImportError as exc:  # pragma: no cover - pyserial is in the fpga extra
                raise LinkError("pyserial is not installed: pip install pyserial") from exc
            try:
                port = serial.Serial(port, baudrate=baud, timeout=timeout, write_timeout=timeout)
            except (OSError, ValueError, serial.SerialException) as exc:
                raise LinkError(f"cannot open serial port {port!r}: {exc}") from None
        self.serial, self.timeout, self.idle_seconds = port, timeout, idle_seconds
        self.clock_hz = clock_hz
        self.name = getattr(port, "port", None) or getattr(port, "name", None) or repr(port)
        if hasattr(port, "timeout"):
            port.timeout = timeout
        if hasattr(port, "write_timeout"):
            port.write_timeout = timeout

    def describe(self) -> str:
        return f"serial port {self.name}"

    def _failed(self, exc: Exception) -> LinkError:
        if type(exc).__name__ == "SerialTimeoutException":
            return LinkTimeout(f"could not send to {self.name} within {self.timeout} s (the port takes no more bytes)")
        return LinkError(f"serial port {self.name} failed: {exc}")

    async def send(self, data: bytes):
        try:
            self.serial.write(bytes(data))
            if hasattr(self.serial, "flush"):
                self.serial.flush()
        except _PORT_ERRORS as exc:   # pyserial's SerialException is an OSError
            raise self._failed(exc) from None

    async def recv(self, n: int) -> bytes:
        try:
            data = self.serial.read(n)
        except _PORT_ERRORS as exc:
            raise self._failed(exc) from None
        if len(data) < n:
            raise LinkTimeout(f"no reply from {self.name} within {self.timeout} s (got {len(data)} of {n} bytes)")
        return bytes(data)

    def discard(self):
        """Drop reply bytes nobody asked for (a frame timer's reply to earlier garbage)."""
        try:
            self.serial.reset_input_buffer()
        except _PORT_ERRORS as exc:
            raise self._failed(exc) from None

    async def idle(self):
        await asyncio.sleep(self.idle_seconds)
        self.discard()

    async def pause(self, cycles: int):
        """Wait about ``cycles`` of the board's clock (nothing when the clock is not known)."""
        if self.clock_hz:
            await asyncio.sleep(cycles / self.clock_hz)

    def close(self):
        self.serial.close()


# --- the link ------------------------------------------------------------------------------------

#: Statuses that say a request was damaged on its way (nothing ran): :meth:`Link.transact` sends it again.
LINE_ERRORS = (Status.ERR_TIMEOUT, Status.ERR_LENGTH, Status.ERR_CRC)


class Link:
    """Requests and replies over ``transport``; raises :class:`LinkError` on any refused request.

    The link stays in step with the device whatever happens on the line: before each request it
    drops reply bytes nobody asked for (a frame timer's answer to earlier garbage), and after any
    error (a refusal, a malformed reply, a timeout) it lets the line idle for the bridge's frame
    timeout and drops what came in meanwhile, so the next request starts on a clean line. A request
    refused with a line error (:data:`LINE_ERRORS`: it never ran) is sent again, up to ``retries``
    more times; :attr:`resent` counts those.
    """

    def __init__(self, transport, *, poll_limit: int = 1000, retries: int = 2):
        self.transport = transport
        self.poll_limit = poll_limit
        self.retries = retries
        self.resent = 0
        self.device: DeviceInfo | None = None
        self.bytes_sent = self.bytes_received = 0

    async def exchange(self, frame: bytes) -> tuple[Status, bytes]:
        """Send raw request bytes (any bytes: tests send corrupted frames) and return the reply.
        Raises :class:`LinkError` (:class:`LinkTimeout` for a reply that does not come) after
        idling the line."""
        self.transport.discard()
        await self.transport.send(frame)
        self.bytes_sent += len(frame)
        try:
            header = await self.transport.recv(4)
            if header[0] != REPLY_SYNC:
                raise LinkError(f"reply from {self.transport.describe()} starts with 0x{header[0]:02X}, "
                                f"not the sync byte 0x{REPLY_SYNC:02X}")
            length = int.from_bytes(header[2:4], "little")
            rest = await self.transport.recv(length + 2)
            self.bytes_received += 4 + length + 2
            try:
                return decode_reply(header + rest)
            except FrameError as exc:
                raise LinkError(f"corrupted reply from {self.transport.describe()}: {exc}") from None
        except LinkError:
            await self.transport.idle()   # whatever is still in flight ends and is dropped
            raise

    async def transact(self, command: Command, payload: bytes = b"") -> bytes:
        frame = encode_request(command, payload)
        for attempt in range(self.retries + 1):
            status, reply = await self.exchange(frame)
            if status == Status.OK:
                return reply
            await self.transport.idle()   # let the bridge's frame timer run out before the next request
            if status not in LINE_ERRORS or attempt == self.retries:
                break
            self.resent += 1
        tries = f" (sent {attempt + 1} times)" if attempt else ""
        raise LinkError(f"device refused {command.name} with {status.name}: {STATUSES[status]}{tries}", status)

    async def info(self) -> DeviceInfo:
        self.device = DeviceInfo.decode(await self.transact(Command.INFO))
        return self.device

    async def device_info(self) -> DeviceInfo:
        """The device's INFO reply, asked for once and kept."""
        return self.device or await self.info()

    def _check_range(self, dev: DeviceInfo, mem: int, addr: int, count: int):
        if not 0 <= mem < dev.mem_count:
            raise InputError(f"memory must be below {dev.mem_count}, not {mem}")
        if addr < 0 or addr + count > 1 << dev.addr_bits:
            raise InputError(f"words {addr}..{addr + count - 1} lie outside the device's "
                             f"{1 << dev.addr_bits}-word address space")

    async def load_memory(self, mem: int, words, *, addr: int = 0):
        """Write ``words`` (unsigned ints of the device's write-word width) from word ``addr`` on."""
        dev = await self.device_info()
        words = [int(w) for w in words]
        self._check_range(dev, int(mem), addr, len(words))
        limit = 1 << (8 * dev.wdata_bytes)
        for w in words:
            if not 0 <= w < limit:
                raise InputError(f"memory word must fit {8 * dev.wdata_bytes} unsigned bits, not {w}")
        step = dev.max_write_words
        for i in range(0, len(words), step):
            await self.transact(Command.WRITE_MEM,
                                write_mem_payload(int(mem), addr + i, words[i:i + step], dev.wdata_bytes))

    async def read_memory(self, mem: int, addr: int, count: int) -> list[int]:
        dev = await self.device_info()
        self._check_range(dev, int(mem), addr, count)
        out = []
        step = dev.read_chunk_words
        for i in range(0, count, step):
            n = min(step, count - i)
            data = await self.transact(Command.READ_MEM, read_mem_payload(int(mem), addr + i, n))
            if len(data) != n * dev.rdata_bytes:
                raise LinkError(f"READ_MEM reply holds {len(data)} bytes, not {n * dev.rdata_bytes}")
            b = dev.rdata_bytes
            out += [int.from_bytes(data[j * b:(j + 1) * b], "little") for j in range(n)]
        return out

    async def write_reg(self, reg: int, value: int):
        dev = await self.device_info()
        if not 0 <= reg < dev.reg_count:
            raise InputError(f"register must be below {dev.reg_count}, not {reg}")
        if not 0 <= value < 1 << 32:
            raise InputError(f"register value must fit 32 unsigned bits, not {value}")
        await self.transact(Command.WRITE_REG, write_reg_payload(reg, value))

    async def start(self, regs: dict[int, int] | None = None):
        """Write the run's parameter registers (``{index: value}``), then pulse start."""
        for reg, value in (regs or {}).items():
            await self.write_reg(reg, value)
        await self.transact(Command.START)

    async def read_status(self) -> LinkStatus:
        return LinkStatus.decode(await self.transact(Command.STATUS))

    async def wait_done(self, max_polls: int | None = None) -> int:
        """Poll STATUS until the target is done and idle; return the polls taken."""
        limit = self.poll_limit if max_polls is None else max_polls
        for polls in range(1, limit + 1):
            status = await self.read_status()
            if status.done and not status.busy:
                return polls
        raise LinkTimeout(f"the target did not finish within {limit} STATUS polls")

    async def read_token(self) -> int:
        """READ_TOKEN: the token the decode target's last step chose."""
        data = await self.transact(Command.READ_TOKEN)
        if len(data) != TOKEN_BYTES:
            raise LinkError(f"READ_TOKEN reply holds {len(data)} bytes, not {TOKEN_BYTES}")
        return int.from_bytes(data, "little")

    async def read_logits(self, addr: int, count: int) -> list[int]:
        """READ_LOGITS: ``count`` logits-buffer words from word ``addr`` (each ``rdata_bytes`` long)."""
        dev = await self.device_info()
        out = []
        for i in range(0, count, dev.read_chunk_words):
            n = min(dev.read_chunk_words, count - i)
            data = await self.transact(Command.READ_LOGITS, read_logits_payload(addr + i, n))
            if len(data) != n * dev.rdata_bytes:
                raise LinkError(f"READ_LOGITS reply holds {len(data)} bytes, not {n * dev.rdata_bytes}")
            b = dev.rdata_bytes
            out += [int.from_bytes(data[j * b:(j + 1) * b], "little") for j in range(n)]
        return out

    async def read_cycles(self) -> int:
        data = await self.transact(Command.CYCLES)
        if len(data) != 8:
            raise LinkError(f"CYCLES reply holds {len(data)} bytes, not 8")
        return int.from_bytes(data, "little")


# --- a GEMM over the link ---------------------------------------------------------------------------

async def run_gemm_over_link(link: Link, plan, a, w) -> dict:
    """Load A and W, start, poll for done, read the cycle counter and the results, all over ``link``.

    Returns ``{"out": M x N list, "cycles": the counter read over the link, "polls": STATUS polls}``.
    Raises LinkError when the device is not a GEMM target of ``plan``'s configuration.
    """
    a, w = check_operands(plan, a, w)
    c = plan.config
    dev = await link.info()
    want = (Target.GEMM.value, c.host_data_bits // 8, c.array_cols * c.acc_bits // 8)
    if (dev.target, dev.wdata_bytes, dev.rdata_bytes) != want:
        raise LinkError(f"the device is target {dev.target} with {dev.wdata_bytes}-byte write and "
                        f"{dev.rdata_bytes}-byte read words; the {c.array_rows}x{c.array_cols} GEMM needs "
                        f"target {want[0]} with {want[1]} and {want[2]}")
    await link.load_memory(HostMem.WEIGHTS.value, weight_words(plan, w))
    await link.load_memory(HostMem.ACTS.value, act_words(plan, a))
    regs = {"m": plan.m, "kt": plan.kt, "nt": plan.nt}
    await link.start({i: regs[name] for i, name in enumerate(GEMM_REGS)})
    polls = await link.wait_done()
    cycles = await link.read_cycles()
    words = await link.read_memory(HostMem.RESULTS.value, 0, plan.m * plan.nt)
    return {"out": unpack_results(plan, words).tolist(), "cycles": cycles, "polls": polls}


def run_gemm_on_port(port, plan, a, w, *, baud: int = 115200, timeout: float = 2.0) -> dict:
    """:func:`run_gemm_over_link` on a board: the same code path, over pyserial."""
    transport = SerialTransport(port, baud=baud, timeout=timeout)
    try:
        return asyncio.run(run_gemm_over_link(Link(transport), plan, a, w))
    finally:
        transport.close()


# --- decode steps over the link --------------------------------------------------------------------

def _runs(entries):
    """``[address, word]`` pairs (sorted by address) as runs of consecutive addresses: (start, words)."""
    runs = []
    for addr, word in sorted(entries):
        if runs and runs[-1][0] + len(runs[-1][1]) == addr:
            runs[-1][1].append(word)
        else:
            runs.append((addr, [word]))
    return runs


class LinkDecoder:
    """A compiled model on a decode target (:class:`hdl.link.LinkedDecode`), driven over ``link``.

    The one host code path of the ``serial`` runtime backend and of the simulated-UART tests:
    :meth:`connect` checks the device, :meth:`load` writes the memory images
    (:func:`sim.flows.decode.images`) once per run, :meth:`step` runs one decode step: token and position
    registers, START, STATUS polls (after waiting ``predicted`` cycles when the caller knows them),
    READ_TOKEN and CYCLES.
    """

    def __init__(self, link: Link, *, params: dict, n_kv_heads: int, group: int):
        self.link, self.params = link, params
        self.n_kv_heads, self.group = n_kv_heads, group

    async def connect(self) -> DeviceInfo:
        """INFO, checked against the design ``params`` (:func:`sim.flows.decode.top_params`) the model was
        compiled for; then the step's fixed registers (KV heads, group)."""
        dev = await self.link.info()
        want = _decode_device(self.params)
        got = (dev.target, dev.mem_count, dev.reg_count, dev.wdata_bytes, dev.rdata_bytes, dev.addr_bits)
        if got != want:
            raise LinkError(f"the device is target {dev.target} with {dev.mem_count} memories, {dev.reg_count} "
                            f"registers, {dev.wdata_bytes}/{dev.rdata_bytes}-byte words and {dev.addr_bits} "
                            f"address bits; the compiled model needs {want[1]}, {want[2]}, {want[3]}/{want[4]} "
                            f"and {want[5]} on target {want[0]} (build the board for this configuration)")
        await self.link.write_reg(DECODE_REGS.index("n_kv_heads"), self.n_kv_heads)
        await self.link.write_reg(DECODE_REGS.index("group"), self.group)
        return dev

    async def load(self, images: dict, progress=None) -> int:
        """Write every image (name -> ``[address, word]`` list) into its memory; return the words
        written. ``progress(words_done, words_total)`` is called after every frame."""
        unknown = sorted(set(images) - set(IMAGE_MEMORIES))
        if unknown:
            raise InputError(f"images: no memory for {unknown[0]!r}")
        total = sum(len(v) for v in images.values())
        done = 0
        step = (await self.link.device_info()).max_write_words
        for name, entries in images.items():
            for start, words in _runs(entries):
                for i in range(0, len(words), step):
                    chunk = words[i:i + step]
                    await self.link.load_memory(IMAGE_MEMORIES[name].value, chunk, addr=start + i)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
        return done

    async def check_loaded(self, images: dict, words: int = 64) -> int:
        """For a device loaded earlier: read the first ``words`` of its parameter memory (this model's
        requantization multipliers and shifts, norm weights, biases: the readable memory that
        differs most between models) and compare them with the image; LinkError when they differ.
        The weights are trusted to belong to the same model. Returns the words compared."""
        image = dict((addr, word) for addr, word in images["params"])
        count = min(words, max(image, default=-1) + 1)
        got = await self.link.read_memory(IMAGE_MEMORIES["params"].value, 0, count)
        for addr, value in enumerate(got):
            if image.get(addr, 0) != value:
                raise LinkError(f"the device's parameter memory differs from this model's at word {addr}: "
                                f"load the model (leave out --loaded)")
        return count

    async def step(self, token: int, position: int, *, predicted: int | None = None) -> dict:
        """One decode step; returns ``{"token_out", "cycles" (the counter, over the link), "polls"}``."""
        await self.link.write_reg(DECODE_REGS.index("token"), token)
        await self.link.write_reg(DECODE_REGS.index("position"), position)
        await self.link.transact(Command.START)
        if predicted:
            await self.link.transport.pause(predicted)
        polls = await self.link.wait_done()
        token_out = await self.link.read_token()
        cycles = await self.link.read_cycles()
        return {"token_out": token_out, "cycles": cycles, "polls": polls}


def _decode_device(params: dict) -> tuple[int, ...]:
    """What INFO reports for a decode target of the design ``params``: target, memories, registers,
    write and read word bytes, address bits."""
    top = DecodeTop(Config.from_dict(params["config"]), head_dim=params["head_dim"],
                    max_heads=params["max_heads"], max_norm_length=params["max_norm_length"])
    top._MustUse__silence = True  # built only for its sizes, never elaborated
    return (Target.DECODE.value, len(TopMem), len(DECODE_REGS), top.host_data_bits // 8, 4 * top.lanes,
            top.host_addr_bits)


# --- simulator flows (registered in sim.engine.registry) ----------------------------------------------------

class LinkGemmJob(TypedDict):
    """A ``link_gemm`` job: GEMMs, each over the simulated UART through :func:`run_gemm_over_link`."""

    #: The design's configuration (:meth:`hdl.config.Config.as_dict`).
    config: dict
    #: The GEMMs, in order (their ``budget`` is not used: the link's polls and timeouts bound them).
    cases: list[GemmCase]
    #: The link's parameters (:func:`link_params`: ``clocks_per_bit``, ``timeout_cycles``, ``max_payload``).
    link: NotRequired[dict]
    #: Hold the design in reset: a device that never answers (the watchdog test).
    hold_reset: NotRequired[bool]
    #: STATUS polls before a GEMM counts as hung (default 100).
    poll_limit: NotRequired[int]


class FrameStep(TypedDict):
    """One step of a ``link_frames`` job: exactly one of its keys."""

    #: Raw request bytes (hex) sent as they are; the reply is recorded.
    frame: NotRequired[str]
    #: A whole GEMM through :func:`run_gemm_over_link`.
    gemm: NotRequired[GemmCase]
    #: Poll STATUS until the target is done.
    wait_done: NotRequired[int]


class LinkFramesJob(TypedDict):
    """A ``link_frames`` job: raw frames and GEMMs over the simulated UART, in order."""

    #: The design's configuration (:meth:`hdl.config.Config.as_dict`).
    config: dict
    #: The steps, in order.
    steps: list[FrameStep]
    #: The link's parameters (:func:`link_params`).
    link: NotRequired[dict]
    #: Hold the design in reset (a device that never answers).
    hold_reset: NotRequired[bool]


def link_params(job: dict) -> dict:
    """The ``linked_gemm`` design's link parameters, checked, with defaults filled in."""
    link = dict(job.get("link") or {})
    unknown = sorted(set(link) - {"clocks_per_bit", "timeout_cycles", "max_payload"})
    if unknown:
        raise InputError(f"link: unknown parameter {unknown[0]!r}")
    cpb = check_positive_int("clocks_per_bit", link.get("clocks_per_bit", 8), minimum=MIN_CLOCKS_PER_BIT)
    timeout = link.get("timeout_cycles") or default_timeout_cycles(cpb)
    max_payload = link.get("max_payload", 256)
    if not 0 < max_payload <= MAX_FRAME_PAYLOAD:
        raise InputError(f"max_payload must be 1..{MAX_FRAME_PAYLOAD}, not {max_payload}")
    return {"clocks_per_bit": cpb, "timeout_cycles": timeout, "max_payload": max_payload}


def design_params(config, **link) -> dict:
    """Parameters of the ``linked_gemm`` design (see :data:`sim.engine.registry.DESIGNS`)."""
    return {"config": config.as_dict(), **link_params({"link": link})}


def _transport(bus, job):
    p = link_params(job)
    # Longest silence before a reply: a WRITE_MEM of a full buffer (3 cycles a byte) or the bridge's
    # frame timer (ERR_TIMEOUT, ERR_LENGTH), plus a few byte times.
    reply_timeout = p["timeout_cycles"] + 4 * p["max_payload"] + 40 * p["clocks_per_bit"]
    return SimUartTransport(bus, clocks_per_bit=p["clocks_per_bit"], reply_timeout_cycles=reply_timeout,
                            idle_cycles=p["timeout_cycles"] + 20 * p["clocks_per_bit"])


async def _start(bus, job):
    bus.set("rx", 1)
    await bus.reset()
    if job.get("hold_reset"):
        bus.set("rst", 1)   # a device that never answers: the watchdog test


def _check_link_gemm(job: LinkGemmJob):
    link_params(job)
    return check_gemm_job(job)


async def _link_gemm(bus, job: LinkGemmJob) -> dict:
    """Each case of the job runs through :func:`run_gemm_over_link` on the simulated UART."""
    plans = _check_link_gemm(job)
    transport = _transport(bus, job)
    await _start(bus, job)
    link = Link(transport, poll_limit=job.get("poll_limit", 100))
    results = []
    for case, plan in zip(job["cases"], plans, strict=True):
        before = transport.cycles
        result = await run_gemm_over_link(link, plan, case["a"], case["w"])
        result["link_cycles"] = transport.cycles - before
        results.append(result)
    return {"cases": results, "bytes_sent": link.bytes_sent, "bytes_received": link.bytes_received,
            "cycles": transport.cycles}


async def _link_frames(bus, job: LinkFramesJob) -> dict:
    """Run the job's steps in order (:class:`FrameStep`).

    Returns ``{"replies": [...]}``, one per step (``{"status": name, "payload": hex}`` for a frame);
    the host idles for the bridge's frame timeout after every error reply, as :class:`Link` does.
    """
    transport = _transport(bus, job)
    await _start(bus, job)
    link = Link(transport)
    replies = []
    for step in job["steps"]:
        if "gemm" in step:
            case = step["gemm"]
            plan = plan_gemm(Config.from_dict(job["config"]), case["m"], case["k"], case["n"])
            replies.append(await run_gemm_over_link(link, plan, case["a"], case["w"]))
        elif "wait_done" in step:
            replies.append({"polls": await link.wait_done()})
        else:
            status, payload = await link.exchange(bytes.fromhex(step["frame"]))
            replies.append({"status": status.name, "payload": payload.hex()})
            if status != Status.OK:
                await transport.idle()
    return {"replies": replies, "cycles": transport.cycles, "framing_errors": transport.framing_errors}


FLOWS = {"link_gemm": _link_gemm, "link_frames": _link_frames}
JOBS = {"link_gemm": LinkGemmJob, "link_frames": LinkFramesJob}
CHECKS = {"link_gemm": _check_link_gemm, "link_frames": link_params}


def _linked_gemm(params):
    p = link_params({"link": {k: v for k, v in params.items() if k != "config"}})
    return LinkedGemm(Config.from_dict(params["config"]), **p)


DESIGNS = {"linked_gemm": _linked_gemm}


# --- the decode target over the simulated UART ------------------------------------------------------

class LinkAfter(TypedDict):
    """A request of a ``link_decode`` job after its steps: exactly one of its keys."""

    #: Read the logits: ``[address, count]``.
    logits: NotRequired[list[int]]
    #: Raw request bytes (hex); the reply is recorded.
    frame: NotRequired[str]


class LinkDecodeJob(DecodeJob):
    """A ``link_decode`` job: a ``decode_top`` job (:func:`sim.flows.decode.decode_job`) on the
    ``linked_decode`` design, every step over the simulated UART, plus these keys."""

    #: The link's parameters (:func:`link_params`).
    link: NotRequired[dict]
    #: Load the images through the backdoor ports (fast) instead of over the link.
    preload: NotRequired[bool]
    #: Requests after the steps, in order.
    after: NotRequired[list[LinkAfter]]
    #: Hold the design in reset (a device that never answers).
    hold_reset: NotRequired[bool]


def _check_link_decode(job: LinkDecodeJob):
    link_params(job)
    return check_job(job)


async def _preload(bus, images: dict) -> int:
    """Write the images through the design's ``preload`` bus, a word a cycle (the backdoor)."""
    bus.set("preload.we", 1)
    n = 0
    for name, entries in images.items():
        bus.set("preload.mem", IMAGE_MEMORIES[name].value)
        for addr, word in entries:
            bus.set("preload.addr", addr)
            bus.set("preload.wdata", word)
            await bus.tick()
            n += 1
    bus.set("preload.we", 0)
    return n


def poll_cycles(clocks_per_bit: int) -> int:
    """Cycles of one STATUS poll on the wire: a 6-byte request and a 10-byte reply."""
    return 16 * 10 * clocks_per_bit


async def _link_decode(bus, job: LinkDecodeJob) -> dict:
    """A ``decode_top`` job on the ``linked_decode`` design, every step over the simulated UART through
    :class:`LinkDecoder`. Each step's STATUS polls are limited so that
    the step gets twice its predicted cycles (the watchdog), and the link's reply timeouts bound every
    frame. Returns ``{"steps": [{"position", "token_in", "token_out", "cycles", "polls"}], "load":
    "link" | "preload", "load_words", "link_cycles", "bytes_sent", "bytes_received"}``."""
    job = _check_link_decode(job)
    transport = _transport(bus, job)
    bus.set("preload.we", 0)
    await _start(bus, job)
    cpb = link_params(job)["clocks_per_bit"]
    link = Link(transport)
    decoder = LinkDecoder(link, params=job["params"], n_kv_heads=job["n_kv_heads"], group=job["group"])
    await decoder.connect()
    if job.get("preload"):
        words = await _preload(bus, job["images"])
    else:
        words = await decoder.load(job["images"])
    predicted = job.get("predicted", {})

    async def step(token, position):
        expected = predicted.get(str(position))
        link.poll_limit = max(4, ceil_div((expected or 100_000), poll_cycles(cpb)) + 4)
        r = await decoder.step(token, position, predicted=expected)
        return {"position": position, "token_in": token, **r}

    steps = await drive_steps(job, step)
    after = []
    for request in job.get("after", []):   # requests after the steps: logits reads, raw frames
        if "logits" in request:
            after.append(await link.read_logits(*request["logits"]))
        else:
            status, payload = await link.exchange(bytes.fromhex(request["frame"]))
            after.append({"status": status.name, "payload": payload.hex()})
            if status != Status.OK:
                await transport.idle()
    return {"steps": steps, "load": "preload" if job.get("preload") else "link", "load_words": words,
            "after": after, "link_cycles": transport.cycles, "bytes_sent": link.bytes_sent,
            "bytes_received": link.bytes_received}


#: The pseudo-terminal board's clock while its line is idle: the bridge's frame timeout passes in this
#: many seconds of wall time (boards: 50 ms; well inside the 100 ms a host idles after an error reply;
#: see docs/protocol.md).
PTY_TIMEOUT_SECONDS = 0.02
#: How often an idle pseudo-terminal board looks at its pty, in seconds of wall time (a byte from the
#: host wakes it at once); the simulated cycles owed by the time that passed run in one go, at most
#: :data:`PTY_MAX_OWED_SECONDS` worth.
PTY_POLL_SECONDS = 0.02
PTY_MAX_OWED_SECONDS = 0.05
#: Bytes from the design the pseudo-terminal board holds for a host that does not read them.
PTY_BACKLOG = 1 << 16


class LinkPtyJob(TypedDict):
    """A ``link_pty`` job: the simulated board behind a pseudo-terminal (:func:`_link_pty`)."""

    #: Where the flow writes the pty's name once it is open.
    pty_file: str
    #: The session ends when this file exists.
    stop_file: str
    #: The link's parameters (:func:`link_params`).
    link: NotRequired[dict]
    #: Simulated cycles per wall second while the line is idle (default: :func:`pty_idle_rate`).
    idle_rate: NotRequired[float]
    #: Simulated cycles after which the session fails (default 50,000,000).
    max_cycles: NotRequired[int]
    #: Wall seconds without a byte from the host after which the session fails (default 120).
    max_silent_seconds: NotRequired[float]
    #: Write ``images`` through the backdoor ports first.
    preload: NotRequired[bool]
    #: The memory images (with ``preload``).
    images: NotRequired[DecodeImages]
    #: Hold the design in reset (a device that never answers).
    hold_reset: NotRequired[bool]


def pty_idle_rate(job: LinkPtyJob) -> float:
    """Simulated cycles per wall second of the pseudo-terminal board while its line is idle:
    ``job["idle_rate"]``, or the rate at which the bridge's ``timeout_cycles`` last
    :data:`PTY_TIMEOUT_SECONDS` (16,000 cycles a second at 8 cycles per bit)."""
    rate = job.get("idle_rate")
    if rate is None:
        return link_params(job)["timeout_cycles"] / PTY_TIMEOUT_SECONDS
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < float("inf"):
        raise InputError(f"idle_rate must be a positive number of cycles per second, not {rate!r}")
    return float(rate)


def _check_link_pty(job: LinkPtyJob):
    if job.get("preload") and "images" not in job:
        raise InputError("link_pty job needs 'images' with 'preload'")
    pty_idle_rate(job)
    return link_params(job)


async def _link_pty(bus, job: LinkPtyJob) -> dict:
    """The simulated board behind a pseudo-terminal: a host opens the pty's name (written to
    ``pty_file``) with pyserial, as it would open a board's USB serial device, and talks to
    the RTL's UART pins through it, byte by byte as on a wire (:class:`SimLine`): every byte from
    the pty goes out on ``rx`` when it comes, every byte on ``tx`` goes to the pty when it is
    decoded, whether a request asked for it or not. The design's clock never stops: while the line
    is idle it runs at :func:`pty_idle_rate` cycles per second of wall time (looking at the pty every
    :data:`PTY_POLL_SECONDS`, sleeping in between), so a truncated or oversize request is answered
    by the bridge's own frame timer as on a board; bytes on the line run at the simulator's speed.
    ``preload`` writes the images through the backdoor first. Ends when ``stop_file``
    exists, after ``max_cycles`` simulated cycles, or after ``max_silent_seconds`` without a byte
    from the host. Returns ``{"bytes_in", "bytes_out", "cycles", "framing_errors"}``."""
    import tty

    p = link_params(job)
    rate = pty_idle_rate(job)
    max_cycles = job.get("max_cycles", 50_000_000)
    max_silent = job.get("max_silent_seconds", 120)
    line = SimLine(bus, clocks_per_bit=p["clocks_per_bit"])
    bus.set("preload.we", 0)
    await _start(bus, job)
    if job.get("preload"):
        await _preload(bus, job["images"])
    master, slave = os.openpty()
    tty.setraw(slave)
    os.set_blocking(master, False)
    with open(job["pty_file"] + ".tmp", "w") as fh:
        fh.write(os.ttyname(slave))
    os.replace(job["pty_file"] + ".tmp", job["pty_file"])
    byte_time = 10 * p["clocks_per_bit"]
    least = max(byte_time, int(rate * PTY_POLL_SECONDS))   # cycles an idle wake-up runs
    most = max(least, int(rate * PTY_MAX_OWED_SECONDS))
    out = bytearray()
    bytes_in = bytes_out = 0
    heard = quiet_since = time.monotonic()
    quiet_cycles = 0
    try:
        while not os.path.exists(job["stop_file"]):
            now = time.monotonic()
            if line.cycles > max_cycles:
                raise LinkTimeout(f"the pty session ran past {max_cycles} cycles")
            if now - heard > max_silent:
                raise LinkTimeout(f"no byte from the host on the pty for {max_silent} s")
            try:
                data = os.read(master, 4096)
            except BlockingIOError:
                data = b""
            if data:
                line.write(data)
                bytes_in += len(data)
                heard = now
            if line.busy:
                await line.advance(byte_time)
                quiet_since, quiet_cycles = time.monotonic(), 0
            else:
                owed = int((now - quiet_since) * rate) - quiet_cycles
                if owed > most:   # the simulator fell behind the wall clock: it does not catch up
                    quiet_cycles += owed - most
                    owed = most
                if owed >= least:
                    await line.advance(owed)
                    quiet_cycles += owed
                else:
                    select.select([master], [], [], (least - owed) / rate)
            out += line.take()
            if out:   # what the pty has no room for waits here; past PTY_BACKLOG it is lost, as on a board
                try:
                    sent = os.write(master, out)
                except BlockingIOError:
                    sent = 0
                bytes_out += sent
                del out[:sent]
                del out[:max(0, len(out) - PTY_BACKLOG)]
    finally:
        os.close(master)
        os.close(slave)
    return {"bytes_in": bytes_in, "bytes_out": bytes_out, "cycles": line.cycles,
            "framing_errors": line.framing_errors}


def _linked_decode(params):
    p = link_params({"link": {k: params[k] for k in ("clocks_per_bit", "timeout_cycles", "max_payload")
                              if k in params}})
    return LinkedDecode(Config.from_dict(params["config"]), head_dim=params["head_dim"],
                        max_heads=params["max_heads"], max_norm_length=params["max_norm_length"], **p)


def decode_link_params(top: dict, **link) -> dict:
    """Parameters of the ``linked_decode`` design: the top level's (:func:`sim.flows.decode.top_params`) and
    the link's."""
    return {**top, **link_params({"link": link})}


FLOWS["link_decode"] = _link_decode
CHECKS["link_decode"] = _check_link_decode
FLOWS["link_pty"] = _link_pty
CHECKS["link_pty"] = _check_link_pty
JOBS["link_decode"] = LinkDecodeJob
JOBS["link_pty"] = LinkPtyJob
DESIGNS["linked_decode"] = _linked_decode
