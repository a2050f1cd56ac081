"""The host link's frames, on the host side: encoding, decoding, the CRC, and the protocol's documentation.

The opcodes, statuses and constants come from :mod:`hdl.link` (the RTL bridge uses the same
definitions); this module adds what a host needs to speak them and :func:`protocol_markdown`,
which writes ``docs/protocol.md`` (a test keeps the file equal to its output).
"""

from __future__ import annotations

from dataclasses import dataclass

from golden.errors import InputError
from hdl.link import (
    CRC,
    CYCLE_BITS,
    DECODE_REGS,
    MAX_FRAME_PAYLOAD,
    MEM_ARG_BYTES,
    PROTOCOL_VERSION,
    REG_BITS,
    REPLY_SYNC,
    REQUEST_SYNC,
    Command,
    Status,
    Target,
)

__all__ = [
    "COMMANDS", "CRC", "CRC_NAME", "Command", "DeviceInfo", "FrameError", "PROTOCOL_VERSION", "REPLY_SYNC",
    "REQUEST_SYNC", "STATUSES", "Status", "Target", "crc16", "decode_reply", "decode_request",
    "encode_reply", "encode_request", "protocol_markdown", "request_bytes", "reply_bytes",
]

CRC_NAME = "CRC-16/IBM-3740 (CCITT-FALSE): poly 0x1021, init 0xFFFF, no reflection, no final XOR"
#: Bytes of a frame besides its payload: sync, command or status, length (2), CRC (2).
FRAME_OVERHEAD = 6


def _crc_table():
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
        table.append(crc & 0xFFFF)
    return table


_TABLE = _crc_table()


def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/IBM-3740 of ``data`` (``crc16(b"123456789") == 0x29B1``); a test checks it against
    :data:`hdl.link.CRC`, the Amaranth catalogue entry the RTL uses."""
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


class FrameError(InputError):
    """Bytes that are not a well-formed frame; the message says which part is wrong."""


def _frame(sync: int, code: int, payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME_PAYLOAD:
        raise InputError(f"frame payload must be at most {MAX_FRAME_PAYLOAD} bytes, not {len(payload)}")
    body = bytes([code]) + len(payload).to_bytes(2, "little") + bytes(payload)
    return bytes([sync]) + body + crc16(body).to_bytes(2, "big")


def encode_request(command: Command | int, payload: bytes = b"") -> bytes:
    """One request frame. ``command`` may be any byte (tests send unknown opcodes on purpose)."""
    code = command.value if isinstance(command, Command) else int(command)
    if not 0 <= code <= 0xFF:
        raise InputError(f"command must be a byte, not {code}")
    return _frame(REQUEST_SYNC, code, payload)


def encode_reply(status: Status, payload: bytes = b"") -> bytes:
    return _frame(REPLY_SYNC, Status(status).value, payload)


def _decode(frame: bytes, sync: int, what: str) -> tuple[int, bytes]:
    if len(frame) < FRAME_OVERHEAD:
        raise FrameError(f"{what} of {len(frame)} bytes is too short: a frame has at least {FRAME_OVERHEAD}")
    if frame[0] != sync:
        raise FrameError(f"{what} starts with 0x{frame[0]:02X}, not the sync byte 0x{sync:02X}")
    length = int.from_bytes(frame[2:4], "little")
    if len(frame) != FRAME_OVERHEAD + length:
        raise FrameError(f"{what} says {length} payload bytes but holds {len(frame) - FRAME_OVERHEAD}")
    body, crc = frame[1:-2], int.from_bytes(frame[-2:], "big")
    if crc16(body) != crc:
        raise FrameError(f"{what} CRC is 0x{crc:04X}, the bytes give 0x{crc16(body):04X}")
    return frame[1], bytes(frame[4:-2])


def decode_request(frame: bytes) -> tuple[int, bytes]:
    return _decode(frame, REQUEST_SYNC, "request")


def decode_reply(frame: bytes) -> tuple[Status, bytes]:
    code, payload = _decode(frame, REPLY_SYNC, "reply")
    try:
        status = Status(code)
    except ValueError:
        raise FrameError(f"reply status 0x{code:02X} is not one of the protocol's statuses") from None
    return status, payload


def request_bytes(payload_len: int) -> int:
    return FRAME_OVERHEAD + payload_len


reply_bytes = request_bytes


# --- payloads ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeviceInfo:
    """The INFO reply: what the bridge serves, so the host needs no configuration of its own."""

    version: int
    target: int
    mem_count: int
    reg_count: int
    wdata_bytes: int
    rdata_bytes: int
    addr_bits: int
    max_payload: int

    SIZE = 9

    @classmethod
    def decode(cls, payload: bytes) -> DeviceInfo:
        if len(payload) != cls.SIZE:
            raise FrameError(f"INFO reply holds {len(payload)} bytes, not {cls.SIZE}")
        return cls(*payload[:7], int.from_bytes(payload[7:9], "little"))

    def encode(self) -> bytes:
        return bytes([self.version, self.target, self.mem_count, self.reg_count, self.wdata_bytes,
                      self.rdata_bytes, self.addr_bits]) + self.max_payload.to_bytes(2, "little")

    @property
    def max_write_words(self) -> int:
        """Most data words one WRITE_MEM frame carries."""
        return (self.max_payload - MEM_ARG_BYTES) // self.wdata_bytes

    @property
    def max_read_words(self) -> int:
        """Most words one READ_MEM reply may carry (its length field is 16 bits)."""
        return MAX_FRAME_PAYLOAD // self.rdata_bytes

    @property
    def read_chunk_words(self) -> int:
        """Words a host asks for per READ_MEM: replies no longer than the device's request buffer,
        so no reply keeps a slow line busy for long."""
        return max(1, min(self.max_read_words, self.max_payload // self.rdata_bytes))


def write_mem_payload(mem: int, addr: int, words: list[int], wdata_bytes: int) -> bytes:
    return (bytes([mem]) + addr.to_bytes(4, "little")
            + b"".join(int(w).to_bytes(wdata_bytes, "little") for w in words))


def read_mem_payload(mem: int, addr: int, count: int) -> bytes:
    return bytes([mem]) + addr.to_bytes(4, "little") + count.to_bytes(2, "little")


def write_reg_payload(reg: int, value: int) -> bytes:
    return bytes([reg]) + int(value).to_bytes(4, "little")


# --- documentation -------------------------------------------------------------------------------

#: Per command: (request payload, reply payload, needs the target idle, what it does).
COMMANDS: dict[Command, tuple[str, str, bool, str]] = {
    Command.INFO: ("empty", "version (1), target (1), memories (1), registers (1), write-word bytes W (1), "
                   "read-word bytes Rd (1), address bits (1), max payload (2)", False,
                   "describe the bridge and its target"),
    Command.WRITE_MEM: ("memory (1), word address (4), n >= 1 words of W bytes", "empty", True,
                        "write n consecutive words; nothing is written unless the whole frame is good"),
    Command.READ_MEM: ("memory (1), word address (4), count n (2)", "n words of Rd bytes", True,
                       "read n consecutive words"),
    Command.WRITE_REG: ("register (1), value (4)", "empty", True,
                        "set a parameter register (the targets' registers are listed below)"),
    Command.START: ("empty", "empty", True, "pulse the target's start for one cycle"),
    Command.STATUS: ("empty", "flags (1: bit 0 busy, bit 1 done), last error status (1), "
                     "rejected frames (2, saturating)", False, "poll the target"),
    Command.CYCLES: ("empty", f"cycle counter (8; {CYCLE_BITS} bits used)", False,
                     "the target's cycle counter of its last run"),
    Command.READ_TOKEN: ("empty", "token id (2)", True,
                         "decode target: the token the last step chose (ERR_UNSUPPORTED on the GEMM target)"),
    Command.READ_LOGITS: ("word address (4), count n (2)", "n words of Rd bytes", True,
                          "decode target: READ_MEM of the logits buffer, n int32 lanes per word "
                          "(ERR_UNSUPPORTED on the GEMM target)"),
}

STATUSES: dict[Status, str] = {
    Status.OK: "the command ran; the payload is its answer",
    Status.ERR_CRC: "the frame's CRC did not match; nothing ran",
    Status.ERR_TIMEOUT: "the line went idle for the timeout in the middle of a frame (a truncated frame)",
    Status.ERR_COMMAND: "unknown command byte",
    Status.ERR_LENGTH: "length above the bridge's max payload; the bridge dropped bytes until the line was idle",
    Status.ERR_ARGUMENT: "a payload length, memory, register, address range or count the command does not accept",
    Status.ERR_BUSY: "the command needs the target idle and it is busy",
    Status.ERR_UNSUPPORTED: "a command this target does not implement (READ_TOKEN, READ_LOGITS on the GEMM target)",
}


def _top_memories() -> str:
    from hdl.top import TopMem

    return ", ".join(f"{m.value} {m.name.lower()}" for m in TopMem)


def protocol_markdown() -> str:
    """``docs/protocol.md``, generated from the definitions above and in :mod:`hdl.link`."""
    import inspect

    from hdl.link import default_timeout_cycles

    from .link import LINE_ERRORS, PTY_MAX_OWED_SECONDS, PTY_POLL_SECONDS, PTY_TIMEOUT_SECONDS, Link

    line_errors = LINE_ERRORS
    retries = inspect.signature(Link).parameters["retries"].default
    lines = [
        "# Host link protocol",
        "",
        "<!-- Generated by sim.protocol.protocol_markdown(); tests/sim/test_protocol.py keeps this file",
        "     equal to its output. Edit the definitions, then run:",
        "     .venv/bin/python -c 'from sim.protocol import protocol_markdown as p; "
        "open(\"docs/protocol.md\", \"w\").write(p())' -->",
        "",
        f"Version {PROTOCOL_VERSION}. The host talks to the accelerator over a UART (8 data bits, no parity,",
        "1 stop bit, LSB first) in request/reply frames: the host sends one request and waits for its",
        "reply; the bridge (`hdl/link.py`, `LinkBridge`) answers every request with exactly one reply.",
        "The same frames come from `sim/link.py` whether the far end is a board on a serial port or",
        "the RTL's `rx`/`tx` pins in a simulator.",
        "",
        "## Frames",
        "",
        "| field | bytes | request | reply |",
        "|---|---|---|---|",
        f"| sync | 1 | `0x{REQUEST_SYNC:02X}` | `0x{REPLY_SYNC:02X}` |",
        "| code | 1 | command | status |",
        "| length | 2 | payload bytes, little-endian | payload bytes, little-endian |",
        "| payload | length | command arguments | the answer (empty on every error) |",
        "| CRC | 2 | CRC-16 of code, length, payload; high byte first | same |",
        "",
        f"CRC: {CRC_NAME}. Sent high byte first, so the CRC of a frame after its",
        "sync byte, CRC included, is zero (the bridge checks that residue).",
        f"`crc16(b\"123456789\") == 0x{crc16(b'123456789'):04X}`.",
        "",
        "Multi-byte fields are little-endian. A memory word travels as its bytes, lowest first: for",
        "the GEMM target a weight or activation word is lanes of int8 (lane 0 first), a result word",
        "lanes of int32 (layouts in `sim/gemm.py`). For the decode target every write word is W bytes",
        "(the widest memory's word, an instruction or a parameter word; narrower words are zero-extended)",
        "and every read word Rd bytes (`sim/top.py` lays the images out). "
        f"Registers are {REG_BITS} bits.",
        "",
        "## Commands",
        "",
        "| code | command | request payload | reply payload | idle only | what it does |",
        "|---|---|---|---|---|---|",
    ]
    for cmd, (req, rep, idle, what) in COMMANDS.items():
        lines.append(f"| `0x{cmd.value:02X}` | {cmd.name} | {req} | {rep} | {'yes' if idle else 'no'} | {what} |")
    lines += [
        "",
        "Every other code is answered with ERR_COMMAND. `idle only` commands are refused with",
        "ERR_BUSY while the target runs.",
        "",
        "## Statuses",
        "",
        "| code | status | meaning |",
        "|---|---|---|",
    ]
    for status, meaning in STATUSES.items():
        lines.append(f"| `0x{status.value:02X}` | {status.name} | {meaning} |")
    lines += [
        "",
        "Precedence when several apply: ERR_LENGTH, ERR_TIMEOUT, ERR_CRC, ERR_UNSUPPORTED, ERR_COMMAND,",
        "ERR_ARGUMENT, ERR_BUSY. Every error increments the rejected-frames counter that STATUS reports",
        "and sets its last-error field; after any error the bridge looks for the next sync byte.",
        "",
        "## Targets",
        "",
        "| target | code | memories | registers |",
        "|---|---|---|---|",
        f"| GEMM (`LinkedGemm`) | {Target.GEMM.value} | 0 weights, 1 activations, 2 results (reads return result "
        "words whatever the memory) | 0 m, 1 kt, 2 nt |",
        f"| decode (`LinkedDecode`) | {Target.DECODE.value} | `hdl.top.TopMem`: {_top_memories()} (reads: "
        f"scratch, logits, trace, params) | {', '.join(f'{i} {n}' for i, n in enumerate(DECODE_REGS))} |",
        "",
        "A decode step over the link (`sim/link.py`, `LinkDecoder`, the `serial` backend's code):",
        "WRITE_REG token and position, START, STATUS until done, READ_TOKEN, CYCLES (the step's",
        "cycle counter, equal to the cycle model's prediction). The memory images are written once",
        "per run with WRITE_MEM (`lockstep run --backend serial --port ...`); `--loaded` skips that",
        "for a board that holds the model already and compares its parameter memory instead.",
        "",
        "The host port behind the bridge (`HostPort` in `hdl/link.py`) is the interface every target",
        "presents: memory select, word address, write strobe and data, read data one cycle after the",
        "address, `start`, `busy`, `done`, a 48-bit cycle counter and the parameter registers.",
        "",
        "## Timing",
        "",
        "* The bit time is `clocks_per_bit` clock cycles (at least 4): boards use",
        "  `round(clock / baud)` (ULX3S 25 MHz at 115200 baud: 217), simulations 8. A byte is 10 bit times.",
        "* A request ends at its last CRC byte; the bridge then checks the CRC, runs the command",
        "  (WRITE_MEM: 3 cycles per data byte) and starts the reply at once. Reply bytes follow each",
        "  other with no gap; READ_MEM fetches each word in 2 cycles between bytes.",
        "* A request that stops early ends after `timeout_cycles` of silence (simulation: 40 bit times;",
        "  boards: 50 ms), answered by ERR_TIMEOUT. ERR_LENGTH is sent after the same silence.",
        "* Bytes that arrive while the bridge runs a command or replies are dropped: send one",
        "  request at a time. Between frames the bridge drops every byte but the sync byte; a stray",
        "  sync byte starts a frame, which ends in ERR_TIMEOUT (or takes in the next request's bytes",
        "  and ends in an error reply to it). After an error reply the host should let the line idle",
        "  for the timeout before the next request.",
        "* What `sim/link.py` (`Link`) does to stay in step: before each request it drops reply bytes",
        "  nobody asked for; after any error (a refusal, a malformed reply, a timeout) it idles the line",
        "  for the timeout and drops what came in. A request refused with a line error,",
        f"  {', '.join(s.name for s in line_errors)} (it never ran), is sent again, up to {retries} more times.",
        "* The host's watchdog: a reply that does not begin, or stops, within its time limit raises",
        "  `LinkTimeout` (a simulated link counts cycles, a serial port seconds, also for room to send);",
        "  nothing waits forever.",
        "* The simulated board on a pseudo-terminal (the `link_pty` flow: `lockstep run --backend serial",
        "  --port /dev/pts/N` against the RTL) is a wire: each byte from the pty goes out on `rx` when it",
        "  comes, each byte on `tx` goes to the pty when it is sent, a reply nobody asked for too. Its clock",
        "  never stops: while the line is idle, simulated time runs at a stated ratio to wall time, so that",
        f"  the bridge's frame timeout lasts {1000 * PTY_TIMEOUT_SECONDS:g} ms of wall time "
        f"({default_timeout_cycles(8) / PTY_TIMEOUT_SECONDS:,.0f} cycles a second at",
        "  8 cycles per bit; the job's `idle_rate` overrides it); bytes on the line run at the simulator's",
        f"  speed. An idle board looks at its pty every {1000 * PTY_POLL_SECONDS:g} ms and sleeps in "
        "between; a simulator that falls",
        f"  behind the wall clock by more than {1000 * PTY_MAX_OWED_SECONDS:g} ms does not catch up.",
        "",
    ]
    return "\n".join(lines)
