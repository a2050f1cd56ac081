"""The host link on the RTL: a GEMM over the simulated UART, corrupted frames, and the watchdog.

One design (a 4x4 GEMM unit behind the bridge, 8 clocks per bit) serves every test, so Verilator
builds it once. The UART is bit-banged cycle by cycle by :class:`sim.link.host.SimUartTransport`.
"""

import numpy as np
import pytest

from golden.numerics import gemm_int8
from hdl.config import PRESETS
from sim.engine.runner import SimulationError, run
from sim.flows.gemm import act_words, plan_gemm, unpack_results, weight_words
from sim.link.host import design_params
from sim.link.protocol import Command, Status, encode_request, read_mem_payload, write_mem_payload, write_reg_payload

from ..conftest import SIMULATORS

CONFIG = PRESETS["4x4"]
LINK = {"clocks_per_bit": 8}
PARAMS = design_params(CONFIG, **LINK)


def case(m, k, n, seed, extremes=False):
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, (m, k))
    w = rng.integers(-128, 128, (k, n))
    if extremes:
        a[0, :], w[:, 0] = -128, -128
        a[-1, -1], w[-1, -1] = 127, 127
    return {"m": m, "k": k, "n": n, "a": a.tolist(), "w": w.tolist()}


# Every simulator gets a tiny GEMM; Verilator also the README's 8x24x20 and one at max_m.
CASES = {
    "verilator": [case(2, 5, 6, 1, True), case(8, 24, 20, 2), case(CONFIG.max_m, 9, 7, 3, True)],
    "icarus": [case(2, 5, 6, 1, True)],
    "amaranth": [case(2, 5, 6, 1, True)],
}


def check_gemm(c, got):
    plan = plan_gemm(CONFIG, c["m"], c["k"], c["n"])
    assert np.array_equal(np.array(got["out"], dtype=np.int64), gemm_int8(c["a"], c["w"])), (c["m"], c["k"], c["n"])
    assert got["cycles"] == plan.predicted_cycles   # the RTL's counter, read over the link


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_gemm_over_the_link_is_bit_exact_and_cycle_exact(simulator):
    cases = CASES[simulator]
    result = run(simulator, "linked_gemm", PARAMS, "link_gemm",
                 {"config": CONFIG.as_dict(), "link": LINK, "cases": cases})
    assert len(result["cases"]) == len(cases)
    for c, got in zip(cases, result["cases"], strict=True):
        check_gemm(c, got)
        assert got["polls"] >= 1


def frame(command, payload=b""):
    return {"frame": encode_request(command, payload).hex()}


def corrupted_steps():
    """(steps, expected statuses per frame step): every kind of bad frame, each followed by good ones."""
    good_status = frame(Command.STATUS)
    bad_crc = bytearray(encode_request(Command.WRITE_REG, write_reg_payload(0, 5)))
    bad_crc[-1] ^= 0x40
    oversize = bytes([0xA5, Command.WRITE_MEM.value]) + (300).to_bytes(2, "little") + bytes(range(20))
    gemm = case(3, 7, 5, 4, True)
    plan = plan_gemm(CONFIG, 3, 7, 5)
    zeros = [0] * len(weight_words(plan, gemm["w"]))
    wbytes = CONFIG.host_data_bits // 8
    corrupt_write = bytearray(encode_request(Command.WRITE_MEM, write_mem_payload(0, 0, zeros, wbytes)))
    corrupt_write[10] ^= 0x01
    steps = [
        (good_status, "OK"),
        ({"frame": bytes(bad_crc).hex()}, "ERR_CRC"),
        (frame(Command.INFO), "OK"),
        ({"frame": encode_request(Command.WRITE_REG, write_reg_payload(0, 1))[:5].hex()}, "ERR_TIMEOUT"),
        (good_status, "OK"),
        (frame(0x7E), "ERR_COMMAND"),
        (good_status, "OK"),
        ({"frame": oversize.hex()}, "ERR_LENGTH"),
        (good_status, "OK"),
        (frame(Command.READ_TOKEN), "ERR_UNSUPPORTED"),
        (frame(Command.READ_LOGITS), "ERR_UNSUPPORTED"),
        (frame(Command.WRITE_REG, b"\x00\x01\x00\x00"), "ERR_ARGUMENT"),        # 4 bytes, not 5
        (frame(Command.WRITE_REG, write_reg_payload(3, 1)), "ERR_ARGUMENT"),    # no register 3
        (frame(Command.READ_MEM, read_mem_payload(3, 0, 1)), "ERR_ARGUMENT"),   # no memory 3
        (frame(Command.READ_MEM, read_mem_payload(2, 0, 0)), "ERR_ARGUMENT"),   # zero words
        (frame(Command.READ_MEM, read_mem_payload(2, (1 << CONFIG.host_addr_bits) - 1, 2)), "ERR_ARGUMENT"),
        # A write may end at the last address, not past it (the receiver counts whole words received).
        (frame(Command.WRITE_MEM, write_mem_payload(1, (1 << CONFIG.host_addr_bits) - 1, [7], wbytes)), "OK"),
        (frame(Command.WRITE_MEM, write_mem_payload(1, (1 << CONFIG.host_addr_bits) - 1, [7, 8], wbytes)),
         "ERR_ARGUMENT"),
        (frame(Command.WRITE_MEM, write_mem_payload(0, 0, [1], wbytes)[:-1]), "ERR_ARGUMENT"),  # part of a word
        (frame(Command.STATUS, b"\x00"), "ERR_ARGUMENT"),
        # A long GEMM on whatever the memories hold, to catch the unit busy.
        (frame(Command.WRITE_REG, write_reg_payload(0, CONFIG.max_m)), "OK"),
        (frame(Command.WRITE_REG, write_reg_payload(1, 16)), "OK"),
        (frame(Command.WRITE_REG, write_reg_payload(2, 16)), "OK"),
        (frame(Command.START), "OK"),
        (frame(Command.START), "ERR_BUSY"),
        (frame(Command.WRITE_MEM, write_mem_payload(0, 0, [1], wbytes)), "ERR_BUSY"),
        ({"wait_done": 1}, None),
        # A zero size (also one that is zero in the unit's port width) is refused, not started: the
        # unit used to stay busy forever. The GEMM after them still runs.
        (frame(Command.WRITE_REG, write_reg_payload(0, 0)), "OK"),
        (frame(Command.START), "ERR_ARGUMENT"),
        (good_status, "OK"),
        (frame(Command.WRITE_REG, write_reg_payload(0, 1 << CONFIG.max_m.bit_length())), "OK"),
        (frame(Command.START), "ERR_ARGUMENT"),
        (frame(Command.WRITE_REG, write_reg_payload(0, 1)), "OK"),
        (frame(Command.WRITE_REG, write_reg_payload(1, 0)), "OK"),
        (frame(Command.START), "ERR_ARGUMENT"),
        (frame(Command.WRITE_REG, write_reg_payload(1, 1)), "OK"),
        (frame(Command.WRITE_REG, write_reg_payload(2, 0)), "OK"),
        (frame(Command.START), "ERR_ARGUMENT"),
        (good_status, "OK"),
        # The next good frames work: a whole GEMM, then a corrupted WRITE_MEM that must write
        # nothing (the re-run's results still match), then a rerun read back by raw frames.
        ({"gemm": gemm}, None),
        ({"frame": bytes(corrupt_write).hex()}, "ERR_CRC"),
        (frame(Command.START), "OK"),
        ({"wait_done": 1}, None),
        (frame(Command.READ_MEM, read_mem_payload(2, 0, plan.m * plan.nt)), "OK"),
        (good_status, "OK"),
    ]
    return [s for s, _ in steps], [e for _, e in steps], gemm, plan


@pytest.mark.parametrize("simulator", SIMULATORS)
def test_corrupted_frames_are_rejected_and_the_next_good_frame_works(simulator):
    steps, expected, gemm, plan = corrupted_steps()
    result = run(simulator, "linked_gemm", PARAMS, "link_frames",
                 {"config": CONFIG.as_dict(), "link": LINK, "steps": steps})
    replies = result["replies"]
    assert len(replies) == len(steps)
    got = [r.get("status") for r in replies]
    assert got == expected
    # INFO describes the 4x4 target.
    info = bytes.fromhex(replies[2]["payload"])
    assert info[1] == 1 and info[4] == CONFIG.host_data_bits // 8 and info[5] == CONFIG.array_cols * 4
    # STATUS counts the rejected frames and names the last error.
    first = bytes.fromhex(replies[0]["payload"])
    last = bytes.fromhex(replies[-1]["payload"])
    rejected = sum(1 for e in expected if e not in (None, "OK"))
    assert first == bytes(4)
    assert last[1] == Status.ERR_CRC.value and int.from_bytes(last[2:4], "little") == rejected
    assert last[0] & 2  # done
    # After a refused zero-size START: idle, still done (the long GEMM's), the last error named.
    status_step = {"frame": encode_request(Command.STATUS).hex()}
    for i in (steps.index(status_step, steps.index({"wait_done": 1})), steps.index({"gemm": gemm}) - 1):
        status = bytes.fromhex(replies[i]["payload"])
        assert status[0] == 2 and status[1] == Status.ERR_ARGUMENT.value, (i, status.hex())
    # The GEMM after all the bad frames, and its re-run after the corrupted write: both exact.
    check_gemm(gemm, replies[steps.index({"gemm": gemm})])
    raw = bytes.fromhex(replies[-2]["payload"])
    b = CONFIG.array_cols * 4
    words = [int.from_bytes(raw[i:i + b], "little") for i in range(0, len(raw), b)]
    assert np.array_equal(unpack_results(plan, words), gemm_int8(gemm["a"], gemm["w"]))
    assert result["framing_errors"] == 0
    assert act_words(plan, gemm["a"])  # the layouts the host sent are the ones sim.flows.gemm defines


def test_watchdog_a_device_that_never_answers_fails_cleanly():
    job = {"config": CONFIG.as_dict(), "link": LINK, "cases": [case(1, 1, 1, 5)], "hold_reset": True}
    with pytest.raises(SimulationError, match=r"LinkTimeout: no reply byte on tx within \d+ cycles \(got 0 of 4"):
        run("verilator", "linked_gemm", PARAMS, "link_gemm", job)


def test_link_job_is_checked_before_any_simulator_starts():
    job = {"config": CONFIG.as_dict(), "link": {"clocks_per_bit": 2}, "cases": [case(1, 1, 1, 5)]}
    with pytest.raises(ValueError, match=r"^clocks_per_bit must be an integer >= 4, not 2$"):
        run("verilator", "linked_gemm", PARAMS, "link_gemm", job)
    job = {"config": CONFIG.as_dict(), "link": {"baud": 9600}, "cases": []}
    with pytest.raises(ValueError, match=r"^link: unknown parameter 'baud'$"):
        run("verilator", "linked_gemm", PARAMS, "link_gemm", job)
    for rate in (0, -1.0, float("nan"), "fast", True):
        with pytest.raises(ValueError, match=r"^idle_rate must be a positive number of cycles per second, not "):
            run("verilator", "linked_gemm", PARAMS, "link_pty",
                {"link": LINK, "idle_rate": rate, "pty_file": "pty", "stop_file": "stop"})
