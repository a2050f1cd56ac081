"""The decode accelerator behind the UART bridge (:class:`hdl.link.LinkedDecode`): decode steps
over the framed protocol from :class:`sim.link.host.LinkDecoder`, the host code the ``serial`` runtime
backend runs against a board, here driving the RTL's rx/tx pins in the simulator.

* the demo model: memories preloaded through the backdoor ports (over a 115200-baud line they
  would take minutes of simulated UART), every step over the link: tokens equal the integer
  model's, the cycle counter read over the link equals the cycle model at every step;
* a one-layer model loaded entirely over the link (WRITE_MEM frames), then decoded, on Verilator;
* READ_LOGITS equal to the instruction-level model's logits; the decode-only commands' errors.
"""

import numpy as np
import pytest

from golden.int_model import generate_int
from golden.model import ModelConfig, init_weights
from golden.numerics import ceil_div
from golden.quantize import quantize_model, random_calibration
from hdl.config import PRESETS
from sim.engine.runner import run
from sim.flows.decode import decode_job, top_params
from sim.flows.gemm import unpack_lanes
from sim.link.host import decode_link_params
from sim.machine.compiler import compile_model
from sim.machine.isa_sim import IsaMachine

from .tiny_models import SMALL, SMALL_SHARED, tiny

LINK = {"clocks_per_bit": 8}


def link_job(compiled, params, **kw):
    job = decode_job(compiled, params, **kw)
    job["link"] = dict(LINK)
    return job


@pytest.fixture(scope="module")
def demo():
    from golden.checkpoint import load_demo_model
    from golden.quantize import quantize_checkpoint

    return compile_model(quantize_checkpoint(load_demo_model()), PRESETS["demo"])


@pytest.mark.slow   # the fast suite's budget: the link's decode path runs fast on the micro model
def test_demo_model_over_the_simulated_uart(demo):
    prompt, new = [5, 9, 2, 17], 8
    params = decode_link_params(top_params(demo), **LINK)
    job = link_job(demo, params, prompt=prompt, new_tokens=new)
    job["preload"] = True
    result = run("verilator", "linked_decode", params, "link_decode", job)
    steps = result["steps"]
    assert result["load"] == "preload"
    generated = [s["token_out"] for s in steps[len(prompt) - 1:]]
    assert generated == generate_int(demo.model, prompt, new)
    assert [s["cycles"] for s in steps] == [job["predicted"][str(s["position"])] for s in steps]
    assert all(s["polls"] >= 1 for s in steps)


#: A one-layer model small enough to load over the simulated UART in seconds (on the SMALL design).
MICRO = ModelConfig(family="gpt2", vocab_size=16, d_model=16, n_layers=1, n_heads=2, n_kv_heads=2, head_dim=8,
                    d_ff=16, max_context=48, tie_embeddings=True)


def test_micro_model_loaded_and_decoded_over_the_link():
    model = quantize_model(MICRO, init_weights(MICRO, seed=5, std=0.3), random_calibration(MICRO, windows=4, seed=2))
    compiled = compile_model(model, SMALL)
    params = decode_link_params(top_params(compiled, **SMALL_SHARED), **LINK)
    prompt, new = [3, 1], 3
    job = link_job(compiled, params, prompt=prompt, new_tokens=new)
    result = run("verilator", "linked_decode", params, "link_decode", job)
    assert result["load"] == "link"
    assert result["load_words"] == sum(len(v) for v in job["images"].values())
    steps = result["steps"]
    assert [s["token_out"] for s in steps[len(prompt) - 1:]] == generate_int(compiled.model, prompt, new)
    assert [s["cycles"] for s in steps] == [job["predicted"][str(s["position"])] for s in steps]


def test_read_logits_and_decode_only_errors():
    """One step, then READ_LOGITS (equal to the instruction-level model's logits) and the errors
    of the decode-only commands: a bad READ_LOGITS count or range, READ_TOKEN with arguments; a START
    with zero heads (also zero in the top level's port width) or more than max_heads is refused, not
    started (it used to hang the attention unit for good: docs/verification.md, "Findings")."""
    from hdl.link import DECODE_REGS, Command, Status
    from hdl.top import TopMem
    from sim.link.protocol import encode_request, write_reg_payload

    compiled = tiny("gpt2")
    params = decode_link_params(top_params(compiled, **SMALL_SHARED), **LINK)
    V = compiled.config.vector_lanes
    vocab = compiled.model.config.vocab_size
    words = ceil_div(vocab, V)
    job = link_job(compiled, params, steps=[(4, 0)])
    job["preload"] = True
    job["after"] = [
        {"logits": [0, words]},
        {"frame": encode_request(Command.READ_LOGITS, (0).to_bytes(4, "little") + (0).to_bytes(2, "little")).hex()},
        {"frame": encode_request(Command.READ_LOGITS, (1 << 20).to_bytes(4, "little")
                                 + (1).to_bytes(2, "little")).hex()},
        {"frame": encode_request(Command.READ_LOGITS, b"\x00" * 5).hex()},
        {"frame": encode_request(Command.READ_TOKEN, b"\x00").hex()},
        {"frame": encode_request(Command.READ_MEM, bytes([TopMem.LOGITS.value]) + (0).to_bytes(4, "little")
                                 + (1).to_bytes(2, "little")).hex()},
    ]
    n_kv, group = DECODE_REGS.index("n_kv_heads"), DECODE_REGS.index("group")
    heads_bits = SMALL_SHARED["max_heads"].bit_length()        # the port: range(max_heads + 1)
    cfg = compiled.model.config
    refused = [write_reg_payload(n_kv, 0), None, write_reg_payload(n_kv, 1 << heads_bits), None,
               write_reg_payload(n_kv, cfg.n_kv_heads), write_reg_payload(group, SMALL_SHARED["max_heads"]), None]
    for payload in refused:
        request = encode_request(Command.START) if payload is None else encode_request(Command.WRITE_REG, payload)
        job["after"].append({"frame": request.hex()})
    job["after"].append({"frame": encode_request(Command.STATUS).hex()})
    result = run("verilator", "linked_decode", params, "link_decode", job)
    machine = IsaMachine(compiled)
    token = machine.run(4, 0)
    assert result["steps"][0]["token_out"] == token
    logits_words, *replies = result["after"]
    logits = [v for w in logits_words for v in unpack_lanes(w, 32, V)]
    assert np.array_equal(logits[:vocab], machine.logits[:vocab])
    replies, starts, status = replies[:5], replies[5:-1], replies[-1]
    assert [r["status"] for r in replies] == ["ERR_ARGUMENT", "ERR_ARGUMENT", "ERR_ARGUMENT", "ERR_ARGUMENT", "OK"]
    # READ_MEM of the logits memory gives the same first word as READ_LOGITS
    assert int.from_bytes(bytes.fromhex(replies[-1]["payload"]), "little") == logits_words[0]
    assert [r["status"] for r in starts] == ["OK", "ERR_ARGUMENT", "OK", "ERR_ARGUMENT", "OK", "OK", "ERR_ARGUMENT"]
    # After the refused STARTs: idle, still done (the step's), the last error named.
    flags = bytes.fromhex(status["payload"])
    assert status["status"] == "OK" and flags[0] == 2 and flags[1] == Status.ERR_ARGUMENT.value, status


@pytest.fixture(scope="module")
def pty_board(demo, tmp_path_factory):
    """The demo model's ``linked_decode`` design served on a pseudo-terminal by the simulator (the
    ``link_pty`` flow), its memories preloaded: a simulated board a host opens like a USB serial
    device. Yields ``(port name, design parameters, the server's outcome)``; the session ends
    after the module's tests, and must end without an error."""
    import threading
    import time
    from pathlib import Path

    tmp = tmp_path_factory.mktemp("pty")
    params = decode_link_params(top_params(demo), **LINK)
    job = {"link": dict(LINK), "preload": True, "images": decode_job(demo, params, steps=[])["images"],
           "pty_file": str(tmp / "pty"), "stop_file": str(tmp / "stop")}
    outcome = {}

    def serve():
        try:
            outcome["result"] = run("verilator", "linked_decode", params, "link_pty", job)
        except BaseException as exc:
            outcome["error"] = exc

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        deadline = time.monotonic() + 1800    # the first run builds the model
        while not Path(job["pty_file"]).exists():
            assert server.is_alive(), outcome.get("error")
            assert time.monotonic() < deadline, "the simulated board never opened its pty"
            time.sleep(0.2)
        yield Path(job["pty_file"]).read_text(), params, outcome
    finally:
        Path(job["stop_file"]).touch()
        server.join(timeout=120)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"]["framing_errors"] == 0 and outcome["result"]["bytes_out"] > 0


def test_the_pty_board_answers_bad_frames_as_a_board_does(pty_board):
    """Through the pty, as a host on a board's serial port: a truncated request, stray bytes and an
    oversize length are answered by the RTL's own frame timer (ERR_TIMEOUT, ERR_LENGTH: the board's
    clock runs while the line is idle), and the good requests after each succeed; the host's
    ``Link`` resends a request that a stray byte spoiled and drops a reply nobody asked for."""
    import asyncio
    import time

    from hdl.link import Target
    from sim.link.host import Link, SerialTransport
    from sim.link.protocol import Command, Status, encode_request, write_reg_payload

    port, _, _ = pty_board
    transport = SerialTransport(port, timeout=5.0)
    link = Link(transport)

    def raw(frame):
        status, payload = asyncio.run(link.exchange(frame))
        return status

    def status():
        return asyncio.run(link.read_status())

    try:
        before = status()
        assert not before.busy
        # A truncated request: the bridge's timer ends it.
        assert raw(encode_request(Command.WRITE_REG, write_reg_payload(0, 1))[:5]) == Status.ERR_TIMEOUT
        assert asyncio.run(link.info()).target == Target.DECODE.value
        after = status()
        assert (after.last_error, after.rejected) == (Status.ERR_TIMEOUT, before.rejected + 1)
        # A stray byte other than the sync byte is dropped: the request behind it is served.
        assert raw(b"\x00" + encode_request(Command.STATUS)) == Status.OK
        # A stray sync byte starts a frame, which the timer ends.
        assert raw(b"\xa5") == Status.ERR_TIMEOUT
        assert status().rejected == before.rejected + 2
        # An oversize length: ERR_LENGTH once the line is idle; the next requests work.
        oversize = bytes([0xA5, Command.WRITE_MEM.value]) + (300).to_bytes(2, "little") + bytes(range(20))
        assert raw(oversize) == Status.ERR_LENGTH
        after = status()
        assert (after.last_error, after.rejected) == (Status.ERR_LENGTH, before.rejected + 3)
        # Good requests sent right behind an oversize one are dropped with it (one reply); the
        # six after it all work.
        assert raw(oversize + encode_request(Command.STATUS) * 3) == Status.ERR_LENGTH
        assert [status().rejected for _ in range(6)] == [before.rejected + 4] * 6
        assert asyncio.run(link.read_cycles()) >= 0
        # Two requests back to back: the bridge answers the first while the second arrives, and
        # drops the second (the wire carries both directions at once); one reply comes.
        assert raw(encode_request(Command.STATUS) * 2) == Status.OK
        time.sleep(0.3)
        assert transport.serial.in_waiting == 0

        class StrayByteFirst(SerialTransport):
            """A port whose next request goes out behind a stray sync byte."""
            strays = 1

            async def send(self, data):
                await super().send(b"\xa5" * self.strays + data)
                self.strays = 0

        spoiled = Link(StrayByteFirst(transport.serial, timeout=5.0))
        got = asyncio.run(spoiled.read_status())
        assert spoiled.resent == 1      # the swallowed request came back ERR_TIMEOUT and went again
        assert (got.last_error, got.rejected) == (Status.ERR_TIMEOUT, before.rejected + 5)
        # A reply nobody asked for (to a stray sync byte) waiting in the port's buffer is dropped.
        transport.serial.write(b"\xa5")
        time.sleep(0.5)
        assert transport.serial.in_waiting == 6
        resent = link.resent
        got = status()
        assert (got.last_error, got.rejected, link.resent) == (Status.ERR_TIMEOUT, before.rejected + 6, resent)
    finally:
        transport.close()


def test_decode_steps_over_the_pty_survive_stray_bytes(demo, pty_board):
    """LinkDecoder (the serial backend's code) over a port that puts a stray sync byte before every
    third request: each spoiled request (a START too) is refused with a line error (ERR_TIMEOUT,
    ERR_LENGTH or ERR_CRC, by what the stray byte makes of it) and sent again, and the steps'
    tokens and cycle counters are still exact."""
    import asyncio

    from sim.link.host import Link, LinkDecoder, SerialTransport

    class Noisy(SerialTransport):
        sent = 0

        async def send(self, data):
            self.sent += 1
            await super().send((b"\xa5" if self.sent % 3 == 0 else b"") + data)

    port, params, _ = pty_board
    transport = Noisy(port, timeout=5.0)
    link = Link(transport)
    mc = demo.model.config
    decoder = LinkDecoder(link, params=params, n_kv_heads=mc.n_kv_heads, group=mc.n_heads // mc.n_kv_heads)
    prompt = [5, 9, 2]

    async def steps():
        await decoder.connect()
        return [await decoder.step(token, position) for position, token in enumerate(prompt)]

    try:
        got = asyncio.run(steps())
    finally:
        transport.close()
    assert got[-1]["token_out"] == generate_int(demo.model, prompt, 1)[0]
    assert [s["cycles"] for s in got] == [decode_job(demo, params, steps=[(0, p)])["predicted"][str(p)]
                                          for p in range(len(prompt))]
    # every spoiled request was sent again, once; each step has at least one (a step is >= 3 requests)
    assert link.resent == transport.sent // 3 >= len(prompt)


def test_lockstep_run_serial_drives_the_simulated_board(demo, pty_board):
    """``lockstep run --backend serial --port PTY``, the command that drives a board, against the RTL:
    the simulator serves the design's UART pins on a pseudo-terminal; the CLI opens it with pyserial."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    port, params, outcome = pty_board
    prompt, new = [5, 9, 2, 17], 3
    lockstep = str(Path(sys.executable).parent / "lockstep")
    out = subprocess.run([lockstep, "run", "--backend", "serial", "--port", port, "--loaded",
                          "--prompt-ids", ",".join(map(str, prompt)), "--tokens", str(new), "--json"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["generated"] == generate_int(demo.model, prompt, new)
    assert report["cycle_exact"] is True
    positions = range(len(prompt) + new - 1)
    assert report["measured_cycles"] == [decode_job(demo, params, steps=[(0, p)])["predicted"][str(p)]
                                         for p in positions]
