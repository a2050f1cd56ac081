"""The link protocol on the host side: CRC, frames, payloads, the Link over fake transports, the docs."""

import asyncio
from pathlib import Path

import pytest

from hdl.link import CRC, LinkBridge, LinkedGemm, Status
from sim.link.host import Link, LinkError, LinkTimeout, SerialTransport
from sim.link.protocol import (
    Command,
    DeviceInfo,
    FrameError,
    crc16,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)
from sim.link.protocol_doc import protocol_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def test_crc_matches_the_rtl_algorithm():
    params = CRC(8)
    assert crc16(b"123456789") == 0x29B1 == params.compute(b"123456789")
    for data in (b"", b"\x00", b"\xff" * 7, bytes(range(256))):
        assert crc16(data) == params.compute(data)
    # The residue the bridge checks: a body followed by its CRC, high byte first, gives zero.
    body = b"\x10\x03\x00abc"
    assert crc16(body + crc16(body).to_bytes(2, "big")) == params.residue() == 0


def test_frames_round_trip():
    frame = encode_request(Command.WRITE_REG, b"\x01\x02\x03\x04\x05")
    assert frame[0] == 0xA5 and frame[1] == 0x20 and frame[2:4] == b"\x05\x00"
    assert decode_request(frame) == (0x20, b"\x01\x02\x03\x04\x05")
    reply = encode_reply(Status.OK, b"xyz")
    assert reply[0] == 0x5A and decode_reply(reply) == (Status.OK, b"xyz")


@pytest.mark.parametrize(("frame", "message"), [
    (b"\x5a\x00", r"^reply of 2 bytes is too short: a frame has at least 6$"),
    (b"\xa5\x00\x00\x00\x00\x00", "starts with 0xA5, not the sync byte 0x5A"),
    (encode_reply(Status.OK, b"ab")[:-3] + encode_reply(Status.OK, b"ab")[-2:], r"^reply says 2 payload bytes but "
                                                                                r"holds 1$"),
    (encode_reply(Status.OK, b"ab")[:-1] + b"\x00", r"^reply CRC is 0x8800, the bytes give 0x889B$"),
])
def test_bad_replies_are_named(frame, message):
    with pytest.raises(FrameError, match=message):
        decode_reply(frame)


def test_device_info_round_trip_and_limits():
    info = DeviceInfo(1, 1, 3, 3, 4, 16, 10, 256)
    assert DeviceInfo.decode(info.encode()) == info
    assert info.max_write_words == (256 - 5) // 4
    assert info.max_read_words == 65535 // 16
    assert info.read_chunk_words == 256 // 16


def test_bridge_info_bytes_match_the_host_decoder():
    from hdl.config import PRESETS

    design = LinkedGemm(PRESETS["8x4"], clocks_per_bit=8)
    info = DeviceInfo.decode(design.bridge.info_bytes())
    design._MustUse__silence = design.bridge._MustUse__silence = True   # built only to be asked
    assert (info.wdata_bytes, info.rdata_bytes, info.mem_count, info.reg_count) == (8, 16, 3, 3)
    assert info.max_payload == 256


@pytest.mark.parametrize(("kwargs", "error", "message"), [
    ({"clocks_per_bit": 2}, ValueError, r"^clocks_per_bit must be an integer >= 4, not 2$"),
    ({"clocks_per_bit": 8, "timeout_cycles": 100}, ValueError, r"^timeout_cycles must be at least two byte times "
                                                               r"\(160 cycles\), not 100$"),
    ({"clocks_per_bit": 8, "max_payload": 6}, ValueError, r"^max_payload must be an integer >= 9, not 6$"),
    ({"clocks_per_bit": 8, "max_payload": 70000}, ValueError, r"^max_payload must be at most 65535, not 70000$"),
    ({"clocks_per_bit": "8"}, TypeError, r"^clocks_per_bit must be an integer, not '8'$"),
])
def test_bridge_parameters_are_checked(kwargs, error, message):
    from hdl.config import PRESETS

    with pytest.raises(error, match=message):
        LinkedGemm(PRESETS["4x4"], **kwargs)


def test_bridge_needs_a_host_port():
    with pytest.raises(TypeError, match=r"^port must be a HostPort, not dict$"):
        LinkBridge(port={}, clocks_per_bit=8)


def test_every_target_presents_the_bus_its_bridge_drives():
    """The GEMM unit and the decode top level each present one ``host`` member, the bridge's
    ``HostBus`` flipped, and the linked designs join them with ``wiring.connect``."""
    from hdl.config import PRESETS
    from hdl.gemm import GemmUnit
    from hdl.host import HostBus
    from hdl.link import LinkedDecode
    from hdl.top import DecodeTop, TopMem

    config = PRESETS["4x4"]
    gemm = LinkedGemm(config, clocks_per_bit=8)
    unit = GemmUnit(config)
    assert unit.signature.members["host"].signature.flip() == gemm.port.members["bus"].signature
    decode = LinkedDecode(config, head_dim=8, max_heads=2, max_norm_length=16, clocks_per_bit=8)
    top = decode.top
    assert isinstance(top, DecodeTop)
    assert top.signature.members["host"].signature.flip() == decode.port.members["bus"].signature
    assert decode.port.members["bus"].signature == HostBus(
        mem_count=len(TopMem), addr_bits=top.host_addr_bits, wdata_bits=top.host_data_bits, rdata_bits=32 * top.lanes)
    # The simulation backdoor is the same bus.
    assert decode.signature.members["preload"].signature.flip() == decode.port.members["bus"].signature
    # connect accepts the pair (it raises on any member that differs).
    from amaranth.back import rtlil

    for design in (gemm, decode):
        assert "module" in rtlil.convert(design)
    rtlil.convert(unit)  # elaborated: no unused-elaboratable warning


@pytest.mark.parametrize("change, message", [
    ({"mem_count": 0}, r"^mem_count must be a positive integer, not 0$"),
    ({"mem_count": 300}, r"^mem_count must be at most 256, not 300$"),
    ({"addr_bits": 33}, r"^addr_bits must be at most 32, not 33$"),
    ({"wdata_bits": 12}, r"^wdata_bits must be a multiple of 8, not 12$"),
])
def test_host_bus_parameters_are_checked(change, message):
    from hdl.host import HostBus

    with pytest.raises(ValueError, match=message):
        HostBus(**{"mem_count": 2, "addr_bits": 4, "wdata_bits": 8, "rdata_bits": 8, **change})


def test_protocol_doc_is_generated_from_the_definitions():
    assert DOC.read_text() == protocol_markdown(), (
        "docs/protocol.md is stale: regenerate it with sim.link.protocol_doc.protocol_markdown()")
    for cmd in Command:
        assert f"`0x{cmd.value:02X}` | {cmd.name}" in DOC.read_text()
    for status in Status:
        assert f"`0x{status.value:02X}` | {status.name}" in DOC.read_text()


class FakePort:
    """A serial port whose far end answers from a script (or never)."""

    def __init__(self, replies=()):
        self.replies = list(replies)
        self.written = bytearray()
        self.pending = b""
        self.timeout = None

    def write(self, data):
        self.written += data
        if self.replies:
            self.pending += self.replies.pop(0)

    def read(self, n):
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def reset_input_buffer(self):
        self.pending = b""

    def close(self):
        pass


def test_link_over_a_serial_port_decodes_status_and_cycles():
    port = FakePort([encode_reply(Status.OK, b"\x02\x00\x00\x00"),
                     encode_reply(Status.OK, (1234).to_bytes(8, "little"))])
    link = Link(SerialTransport(port, timeout=0.01, idle_seconds=0))
    status = asyncio.run(link.read_status())
    assert status.done and not status.busy and status.rejected == 0
    assert asyncio.run(link.read_cycles()) == 1234
    assert port.written[:1] == b"\xa5"


def test_watchdog_a_port_that_never_answers_raises():
    link = Link(SerialTransport(FakePort(), timeout=0.01, idle_seconds=0))
    with pytest.raises(LinkTimeout, match=r"^no reply from .* within 0.01 s \(got 0 of 4 bytes\)$"):
        asyncio.run(link.read_status())


def test_watchdog_polling_gives_up():
    busy = encode_reply(Status.OK, b"\x01\x00\x00\x00")
    link = Link(SerialTransport(FakePort([busy] * 5), timeout=0.01, idle_seconds=0))
    with pytest.raises(LinkTimeout, match=r"^the target did not finish within 5 STATUS polls$"):
        asyncio.run(link.wait_done(max_polls=5))


def test_refusals_and_garbage_are_link_errors():
    link = Link(SerialTransport(FakePort([encode_reply(Status.ERR_BUSY)]), timeout=0.01, idle_seconds=0))
    with pytest.raises(LinkError, match=r"^device refused START with ERR_BUSY: the command needs the target idle and "
                                        r"it is busy$") as info:
        asyncio.run(link.transact(Command.START))
    assert info.value.status == Status.ERR_BUSY
    # A loopback port echoes the request: the host sees a request sync where a reply's belongs.
    import serial

    loop = serial.serial_for_url("loop://", timeout=0.01)
    with pytest.raises(LinkError, match="starts with 0xA5, not the sync byte 0x5A"):
        asyncio.run(Link(SerialTransport(loop, timeout=0.01, idle_seconds=0)).read_status())


def test_host_checks_ranges_before_sending():
    info = encode_reply(Status.OK, DeviceInfo(1, 1, 3, 3, 4, 16, 4, 256).encode())
    port = FakePort([info])
    link = Link(SerialTransport(port, timeout=0.01, idle_seconds=0))
    with pytest.raises(ValueError, match=r"^words 0\.\.16 lie outside the device's 16-word address space$"):
        asyncio.run(link.load_memory(0, [0] * 17))
    with pytest.raises(ValueError, match=r"^memory word must fit 32 unsigned bits, not 4294967296$"):
        asyncio.run(link.load_memory(0, [1 << 32]))
    with pytest.raises(ValueError, match=r"^register must be below 3, not 3$"):
        asyncio.run(link.write_reg(3, 0))


def test_a_request_refused_with_a_line_error_is_sent_again():
    """ERR_TIMEOUT, ERR_LENGTH and ERR_CRC say the request never ran: Link sends it again (up to
    ``retries`` more times); other refusals are final."""
    ok = encode_reply(Status.OK, b"\x02\x00\x00\x00")
    port = FakePort([encode_reply(Status.ERR_TIMEOUT), ok])
    link = Link(SerialTransport(port, timeout=0.01, idle_seconds=0))
    assert asyncio.run(link.read_status()).done
    assert link.resent == 1 and port.written == encode_request(Command.STATUS) * 2
    port = FakePort([encode_reply(Status.ERR_CRC)] * 3 + [ok])
    link = Link(SerialTransport(port, timeout=0.01, idle_seconds=0))
    with pytest.raises(LinkError, match=r"^device refused STATUS with ERR_CRC: .* \(sent 3 times\)$"):
        asyncio.run(link.read_status())
    port = FakePort([encode_reply(Status.ERR_BUSY), ok])
    with pytest.raises(LinkError, match=r"^device refused START with ERR_BUSY: [^(]*$"):
        asyncio.run(Link(SerialTransport(port, timeout=0.01, idle_seconds=0)).transact(Command.START))
    assert port.written == encode_request(Command.START)


def test_a_serial_port_bounds_every_wait_with_one_line_errors():
    """On a real pseudo-terminal whose far end never answers, never reads, then goes away."""
    import os
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)
    name = os.ttyname(slave)
    transport = SerialTransport(name, timeout=0.2, idle_seconds=0)
    link = Link(transport)
    try:
        with pytest.raises(LinkTimeout, match=rf"^no reply from {name} within 0.2 s \(got 0 of 4 bytes\)$"):
            asyncio.run(link.read_status())
        with pytest.raises(LinkTimeout, match=rf"^could not send to {name} within 0.2 s \(the port takes no more "
                                              rf"bytes\)$"):
            asyncio.run(link.transact(Command.WRITE_MEM, bytes(60_000)))
        os.close(master)
        master = None
        with pytest.raises(LinkError, match=rf"^serial port {name} failed: .*Input/output error'\)$"):
            asyncio.run(link.read_status())
    finally:
        transport.close()
        os.close(slave)
        if master is not None:
            os.close(master)


def test_lockstep_run_on_a_silent_port_fails_in_one_line():
    import os
    import re
    import subprocess
    import sys
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)
    name = os.ttyname(slave)
    try:
        lockstep = str(Path(sys.executable).parent / "lockstep")
        out = subprocess.run([lockstep, "run", "--backend", "serial", "--port", name, "--tokens", "1"],
                             capture_output=True, text=True, timeout=300)
    finally:
        os.close(master)
        os.close(slave)
    assert out.returncode == 1
    assert re.fullmatch(rf"lockstep: error: no reply from {name} within 2.0 s \(got 0 of 4 bytes\)\n", out.stderr)


@pytest.mark.parametrize("name", ["MEM_ARGS", "READ_ARGS", "LOGITS_ARGS", "REG_ARGS"])
def test_argument_layouts_are_what_the_host_packs_and_the_bridge_slices(name):
    from amaranth.hdl import Const

    import hdl.link as link

    layout = getattr(link, name)
    values = {field: (0x5A5A5A5A + i) & ((1 << f.width) - 1) for i, (field, f) in enumerate(layout)}
    payload = link.pack_args(layout, **values)
    assert len(payload) == layout.size // 8 <= link.ARG_BYTES
    assert link.unpack_args(layout, payload) == values
    # the bridge keeps the first ARG_BYTES payload bytes and slices each field out of them
    args = Const(int.from_bytes(payload, "little"), 8 * link.ARG_BYTES)
    assert {field: Const.cast(link.arg_field(args, layout, field)).value for field in values} == values


def test_an_argument_that_does_not_fit_its_field_is_refused():
    from hdl.link import REG_ARGS, pack_args

    with pytest.raises(ValueError, match=r"^reg must be in \[0, 255\], not 256$"):
        pack_args(REG_ARGS, reg=256, value=0)
