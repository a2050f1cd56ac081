"""The host link's frames, on the host side: encoding, decoding, the CRC, and the protocol's documentation.

The opcodes, statuses and constants come from :mod:`hdl.link` (the RTL bridge uses the same
definitions); this module adds what a host needs to speak them (:mod:`sim.link.protocol_doc` writes
``docs/protocol.md`` from them).
"""

from __future__ import annotations

from dataclasses import dataclass

from golden.errors import InputError
from hdl.link import (
    CRC,
    CYCLE_BITS,
    LOGITS_ARGS,
    MAX_FRAME_PAYLOAD,
    MEM_ARG_BYTES,
    MEM_ARGS,
    PROTOCOL_VERSION,
    READ_ARGS,
    REG_ARGS,
    REPLY_SYNC,
    REQUEST_SYNC,
    Command,
    Status,
    Target,
    pack_args,
)

__all__ = [
    "COMMANDS", "CRC", "CRC_NAME", "Command", "DeviceInfo", "FrameError", "PROTOCOL_VERSION", "REPLY_SYNC",
    "REQUEST_SYNC", "STATUSES", "Status", "Target", "crc16", "decode_reply", "decode_request",
    "encode_reply", "encode_request", "request_bytes", "reply_bytes",
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
    return (pack_args(MEM_ARGS, mem=mem, addr=addr)
            + b"".join(int(w).to_bytes(wdata_bytes, "little") for w in words))


def read_mem_payload(mem: int, addr: int, count: int) -> bytes:
    return pack_args(READ_ARGS, mem=mem, addr=addr, count=count)


def read_logits_payload(addr: int, count: int) -> bytes:
    return pack_args(LOGITS_ARGS, addr=addr, count=count)


def write_reg_payload(reg: int, value: int) -> bytes:
    return pack_args(REG_ARGS, reg=reg, value=value)


# --- documentation -------------------------------------------------------------------------------

_ARG_NAMES = {"mem": "memory", "addr": "word address", "count": "count n", "reg": "register", "value": "value"}


def _args(layout) -> str:
    """An argument layout as the table below spells it: ``name (bytes), ...``."""
    return ", ".join(f"{_ARG_NAMES[name]} ({f.width // 8})" for name, f in layout)


#: Per command: (request payload, reply payload, needs the target idle, what it does).
COMMANDS: dict[Command, tuple[str, str, bool, str]] = {
    Command.INFO: ("empty", "version (1), target (1), memories (1), registers (1), write-word bytes W (1), "
                   "read-word bytes Rd (1), address bits (1), max payload (2)", False,
                   "describe the bridge and its target"),
    Command.WRITE_MEM: (f"{_args(MEM_ARGS)}, n >= 1 words of W bytes", "empty", True,
                        "write n consecutive words; nothing is written unless the whole frame is good"),
    Command.READ_MEM: (_args(READ_ARGS), "n words of Rd bytes", True,
                       "read n consecutive words"),
    Command.WRITE_REG: (_args(REG_ARGS), "empty", True,
                        "set a parameter register (the targets' registers are listed below)"),
    Command.START: ("empty", "empty", True,
                    "pulse the target's start for one cycle; ERR_ARGUMENT if the target cannot run what its "
                    "registers hold (the GEMM target: m, kt or nt zero; the decode target: n_kv_heads or group "
                    "zero, or more query heads than the design's max_heads)"),
    Command.STATUS: ("empty", "flags (1: bit 0 busy, bit 1 done), last error status (1), "
                     "rejected frames (2, saturating)", False, "poll the target"),
    Command.CYCLES: ("empty", f"cycle counter (8; {CYCLE_BITS} bits used)", False,
                     "the target's cycle counter of its last run"),
    Command.READ_TOKEN: ("empty", "token id (2)", True,
                         "decode target: the token the last step chose (ERR_UNSUPPORTED on the GEMM target)"),
    Command.READ_LOGITS: (_args(LOGITS_ARGS), "n words of Rd bytes", True,
                          "decode target: READ_MEM of the logits buffer, n int32 lanes per word "
                          "(ERR_UNSUPPORTED on the GEMM target)"),
}

STATUSES: dict[Status, str] = {
    Status.OK: "the command ran; the payload is its answer",
    Status.ERR_CRC: "the frame's CRC did not match; nothing ran",
    Status.ERR_TIMEOUT: "the line went idle for the timeout in the middle of a frame (a truncated frame)",
    Status.ERR_COMMAND: "unknown command byte",
    Status.ERR_LENGTH: "length above the bridge's max payload; the bridge dropped bytes until the line was idle",
    Status.ERR_ARGUMENT: "a payload length, memory, register, address range or count the command does not accept, "
                         "or a START with registers the target cannot run (a zero GEMM size, zero decode heads)",
    Status.ERR_BUSY: "the command needs the target idle and it is busy",
    Status.ERR_UNSUPPORTED: "a command this target does not implement (READ_TOKEN, READ_LOGITS on the GEMM target)",
}
