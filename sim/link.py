"""The host side of the link: one :class:`Link` over a byte transport, a board's serial port or the RTL's pins.

:class:`Link` speaks the frames of :mod:`sim.protocol` (load memories, set registers, start, poll,
read the cycle counter and the results). It is written once, async, against a transport with
``send(bytes)``, ``recv(n)`` and ``idle()``:

* :class:`SerialTransport`: a board on a serial port (pyserial); drive it with ``asyncio.run``;
* :class:`SimUartTransport`: a simulated design's ``rx``/``tx`` pins over :class:`sim.bus.Bus`,
  bit-banged cycle by cycle inside the simulator (cocotb on Verilator/Icarus, or Amaranth's).

Every wait has a limit: a reply that does not start or stops half-way raises :class:`LinkTimeout`
(cycles for a simulated link, seconds for a serial port), and polling for ``done`` gives up after a
stated number of polls. Nothing waits forever.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hdl.link import GEMM_REGS, MAX_FRAME_PAYLOAD, REPLY_SYNC, default_timeout_cycles

from .protocol import (
    STATUSES,
    Command,
    DeviceInfo,
    FrameError,
    Status,
    Target,
    decode_reply,
    encode_request,
    read_mem_payload,
    write_mem_payload,
    write_reg_payload,
)

__all__ = [
    "Link", "LinkError", "LinkStatus", "LinkTimeout", "SerialTransport", "SimUartTransport", "FLOWS", "CHECKS",
    "run_gemm_over_link", "run_gemm_on_port",
]


class LinkError(RuntimeError):
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
    """The far end of a simulated design's UART, over :class:`sim.bus.Bus`.

    Drives ``rx`` (8N1, ``clocks_per_bit`` cycles per bit) and decodes ``tx``, which it samples
    once per cycle (``tx`` is a register output, so it is settled after every tick). ``recv``
    raises :class:`LinkTimeout` when no byte completes within ``reply_timeout_cycles``;
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
        self._count = 0       # cycles to the next sample; 0 = waiting for a start bit
        self._bit = 0         # -1: start bit, 0..7: data bits, 8: stop bit
        self._value = 0

    def describe(self) -> str:
        return f"simulated UART at {self.cpb} cycles per bit"

    async def _tick(self):
        await self.bus.tick()
        self.cycles += 1
        level = self.bus.get(self.tx)
        if self._count == 0:
            if level == 0:
                self._count, self._bit, self._value = self.cpb // 2, -1, 0
            return
        self._count -= 1
        if self._count:
            return
        if self._bit == -1:
            if level:
                return            # a glitch; _count is 0 again: hunt for a start bit
            self._bit, self._count = 0, self.cpb
        elif self._bit < 8:
            self._value |= level << self._bit
            self._bit += 1
            self._count = self.cpb
        else:
            if level:
                self._got.append(self._value)
            else:
                self.framing_errors += 1

    async def send(self, data: bytes):
        for byte in data:
            for bit in [0, *((byte >> i) & 1 for i in range(8)), 1]:
                self.bus.set(self.rx, bit)
                for _ in range(self.cpb):
                    await self._tick()

    async def recv(self, n: int) -> bytes:
        waited = 0
        have = len(self._got)
        while len(self._got) < n:
            await self._tick()
            if len(self._got) != have or self._count:
                have, waited = len(self._got), 0
            else:
                waited += 1
                if waited > self.reply_timeout_cycles:
                    raise LinkTimeout(f"no reply byte on {self.tx} within {self.reply_timeout_cycles} cycles "
                                      f"(got {len(self._got)} of {n} bytes)")
        out = bytes(self._got[:n])
        del self._got[:n]
        return out

    async def idle(self):
        self.bus.set(self.rx, 1)
        for _ in range(self.idle_cycles):
            await self._tick()
        self._got.clear()


class SerialTransport:
    """A board on a serial port, through pyserial: ``SerialTransport("/dev/ttyUSB1", baud=115200)``.

    ``port`` may also be an already open pyserial object (or any object with ``write``, ``read``
    and ``reset_input_buffer``; pyserial's ``serial_for_url("loop://")`` works for tests).
    ``timeout`` (seconds) bounds every wait for reply bytes.
    """

    def __init__(self, port, *, baud: int = 115200, timeout: float = 2.0, idle_seconds: float = 0.1):
        if isinstance(port, str):
            try:
                import serial
            except ImportError as exc:  # pragma: no cover - pyserial is in the fpga extra
                raise LinkError("pyserial is not installed: pip install pyserial") from exc
            try:
                port = serial.Serial(port, baudrate=baud, timeout=timeout)
            except (OSError, ValueError, serial.SerialException) as exc:
                raise LinkError(f"cannot open serial port {port!r}: {exc}") from None
        self.serial, self.timeout, self.idle_seconds = port, timeout, idle_seconds
        self.name = getattr(port, "port", None) or getattr(port, "name", None) or repr(port)
        if hasattr(port, "timeout"):
            port.timeout = timeout

    def describe(self) -> str:
        return f"serial port {self.name}"

    async def send(self, data: bytes):
        self.serial.write(bytes(data))
        if hasattr(self.serial, "flush"):
            self.serial.flush()

    async def recv(self, n: int) -> bytes:
        data = self.serial.read(n)
        if len(data) < n:
            raise LinkTimeout(f"no reply from {self.name} within {self.timeout} s (got {len(data)} of {n} bytes)")
        return bytes(data)

    async def idle(self):
        await asyncio.sleep(self.idle_seconds)
        self.serial.reset_input_buffer()

    def close(self):
        self.serial.close()


# --- the link ------------------------------------------------------------------------------------

class Link:
    """Requests and replies over ``transport``; raises :class:`LinkError` on any refused request."""

    def __init__(self, transport, *, poll_limit: int = 1000):
        self.transport = transport
        self.poll_limit = poll_limit
        self.device: DeviceInfo | None = None
        self.bytes_sent = self.bytes_received = 0

    async def exchange(self, frame: bytes) -> tuple[Status, bytes]:
        """Send raw request bytes (any bytes: tests send corrupted frames) and return the reply."""
        await self.transport.send(frame)
        self.bytes_sent += len(frame)
        header = await self.transport.recv(4)
        if header[0] != REPLY_SYNC:
            await self.transport.idle()
            raise LinkError(f"reply from {self.transport.describe()} starts with 0x{header[0]:02X}, "
                            f"not the sync byte 0x{REPLY_SYNC:02X}")
        length = int.from_bytes(header[2:4], "little")
        rest = await self.transport.recv(length + 2)
        self.bytes_received += 4 + length + 2
        try:
            return decode_reply(header + rest)
        except FrameError as exc:
            await self.transport.idle()
            raise LinkError(f"corrupted reply from {self.transport.describe()}: {exc}") from None

    async def transact(self, command: Command, payload: bytes = b"") -> bytes:
        status, reply = await self.exchange(encode_request(command, payload))
        if status != Status.OK:
            await self.transport.idle()   # let the bridge's frame timer run out before the next request
            raise LinkError(f"device refused {command.name} with {status.name}: {STATUSES[status]}", status)
        return reply

    async def info(self) -> DeviceInfo:
        self.device = DeviceInfo.decode(await self.transact(Command.INFO))
        return self.device

    async def _device(self) -> DeviceInfo:
        return self.device or await self.info()

    def _check_range(self, dev: DeviceInfo, mem: int, addr: int, count: int):
        if not 0 <= mem < dev.mem_count:
            raise ValueError(f"memory must be below {dev.mem_count}, not {mem}")
        if addr < 0 or addr + count > 1 << dev.addr_bits:
            raise ValueError(f"words {addr}..{addr + count - 1} lie outside the device's "
                             f"{1 << dev.addr_bits}-word address space")

    async def load_memory(self, mem: int, words, *, addr: int = 0):
        """Write ``words`` (unsigned ints of the device's write-word width) from word ``addr`` on."""
        dev = await self._device()
        words = [int(w) for w in words]
        self._check_range(dev, int(mem), addr, len(words))
        limit = 1 << (8 * dev.wdata_bytes)
        for w in words:
            if not 0 <= w < limit:
                raise ValueError(f"memory word must fit {8 * dev.wdata_bytes} unsigned bits, not {w}")
        step = dev.max_write_words
        for i in range(0, len(words), step):
            await self.transact(Command.WRITE_MEM,
                                write_mem_payload(int(mem), addr + i, words[i:i + step], dev.wdata_bytes))

    async def read_memory(self, mem: int, addr: int, count: int) -> list[int]:
        dev = await self._device()
        self._check_range(dev, int(mem), addr, count)
        out = []
        step = dev.max_read_words
        for i in range(0, count, step):
            n = min(step, count - i)
            data = await self.transact(Command.READ_MEM, read_mem_payload(int(mem), addr + i, n))
            if len(data) != n * dev.rdata_bytes:
                raise LinkError(f"READ_MEM reply holds {len(data)} bytes, not {n * dev.rdata_bytes}")
            b = dev.rdata_bytes
            out += [int.from_bytes(data[j * b:(j + 1) * b], "little") for j in range(n)]
        return out

    async def write_reg(self, reg: int, value: int):
        dev = await self._device()
        if not 0 <= reg < dev.reg_count:
            raise ValueError(f"register must be below {dev.reg_count}, not {reg}")
        if not 0 <= value < 1 << 32:
            raise ValueError(f"register value must fit 32 unsigned bits, not {value}")
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
    from hdl.gemm import HostMem

    from .gemm import _check_operands, act_words, unpack_results, weight_words

    a, w = _check_operands(plan, a, w)
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


# --- simulator flows (registered in sim.flows) ----------------------------------------------------

def link_params(job: dict) -> dict:
    """The ``linked_gemm`` design's link parameters, checked, with defaults filled in."""
    from hdl.config import check_positive_int
    from hdl.uart import MIN_CLOCKS_PER_BIT

    link = dict(job.get("link") or {})
    unknown = sorted(set(link) - {"clocks_per_bit", "timeout_cycles", "max_payload"})
    if unknown:
        raise ValueError(f"link: unknown parameter {unknown[0]!r}")
    cpb = check_positive_int("clocks_per_bit", link.get("clocks_per_bit", 8), minimum=MIN_CLOCKS_PER_BIT)
    timeout = link.get("timeout_cycles") or default_timeout_cycles(cpb)
    max_payload = link.get("max_payload", 256)
    if not 0 < max_payload <= MAX_FRAME_PAYLOAD:
        raise ValueError(f"max_payload must be 1..{MAX_FRAME_PAYLOAD}, not {max_payload}")
    return {"clocks_per_bit": cpb, "timeout_cycles": timeout, "max_payload": max_payload}


def design_params(config, **link) -> dict:
    """Parameters of the ``linked_gemm`` design (see :data:`sim.designs.DESIGNS`)."""
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


def _check_link_gemm(job):
    from .flows import _check_gemm_job

    link_params(job)
    return _check_gemm_job(job)


async def _link_gemm(bus, job):
    """``job``: ``config``, ``link`` (clocks_per_bit, ...), ``cases`` ({m, k, n, a, w}), optional
    ``hold_reset``. Each case runs through :func:`run_gemm_over_link` on the simulated UART."""
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


async def _link_frames(bus, job):
    """``job``: ``config``, ``link`` and ``steps``, run in order: ``{"frame": hex}`` sends raw bytes
    and records the reply, ``{"gemm": case}`` runs :func:`run_gemm_over_link`, ``{"wait_done": 1}``
    polls until the target is done.

    Returns ``{"replies": [...]}``, one per step (``{"status": name, "payload": hex}`` for a frame);
    the host idles for the bridge's frame timeout after every error reply, as :class:`Link` does.
    """
    from hdl.config import Config

    from .gemm import plan_gemm

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
CHECKS = {"link_gemm": _check_link_gemm, "link_frames": link_params}


def _linked_gemm(params):
    from hdl.config import Config
    from hdl.link import LinkedGemm

    p = link_params({"link": {k: v for k, v in params.items() if k != "config"}})
    return LinkedGemm(Config.from_dict(params["config"]), **p)


DESIGNS = {"linked_gemm": _linked_gemm}
