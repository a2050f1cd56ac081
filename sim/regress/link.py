"""The UART/link bridge's regression: random frames, good and bad, over the simulated UART.

The target is the GEMM unit behind the bridge (``linked_gemm``, the link tests' build: 4 x 4, 8
clocks per bit). A transaction is a short scenario that starts and ends on an idle line, so it
needs nothing from the ones before it: a whole GEMM over the link (bit-exact, cycle-exact), INFO,
a register write (values at 0, 1 and 2^32 - 1), a read of the result memory, CYCLES, a START that
the target refuses (a zero size), a long GEMM caught busy (ERR_BUSY, then polled to done), or a
bad frame between two STATUS polls: a flipped bit (ERR_CRC), an unknown code, a decode-only
command, each argument the bridge refuses, a length past the buffer (ERR_LENGTH), a frame cut
short anywhere (ERR_TIMEOUT). The ``link_frames`` flow runs a chunk in one simulator start.
The scoreboard: every reply's status; the STATUS after an error names that error and counts one
more rejected frame; INFO describes the target; a read's length; the GEMM's result and cycles.
"""

from __future__ import annotations

from golden.numerics import gemm_int8
from hdl.config import PRESETS, Config
from hdl.gemm import GemmUnit
from hdl.link import GEMM_REGS, MAX_FRAME_PAYLOAD, PROTOCOL_VERSION, REQUEST_SYNC, Command, Status, Target

from ..flows.gemm import plan_gemm
from ..link.host import design_params
from ..link.protocol import (
    DeviceInfo,
    encode_request,
    read_logits_payload,
    read_mem_payload,
    write_mem_payload,
    write_reg_payload,
)
from .block import Block, int8_values, pick_size, split_steps

#: The target (the link tests' build).
PRESET = "4x4"
LINK = {"clocks_per_bit": 8}
#: Bad frames, each answered by one error status.
BAD = {"crc_body": "ERR_CRC", "crc_check": "ERR_CRC", "crc_code": "ERR_CRC", "unknown_code": "ERR_COMMAND",
       "read_token": "ERR_UNSUPPORTED", "read_logits": "ERR_UNSUPPORTED", "reg_length": "ERR_ARGUMENT",
       "reg_index": "ERR_ARGUMENT", "read_memory": "ERR_ARGUMENT", "read_zero": "ERR_ARGUMENT",
       "read_past_end": "ERR_ARGUMENT", "write_past_end": "ERR_ARGUMENT", "write_part_word": "ERR_ARGUMENT",
       "payload_on_empty": "ERR_ARGUMENT", "oversize": "ERR_LENGTH", "cut_header": "ERR_TIMEOUT",
       "cut_payload": "ERR_TIMEOUT", "cut_crc": "ERR_TIMEOUT"}
GOOD = ("gemm", "info", "write_reg", "read_results", "cycles", "zero_start", "busy")
#: Line noise: bytes other than the request sync on an idle line, then a good frame. The bridge hunts
#: for the sync byte and ignores the rest: no reply, no error counted, the frame after is answered.
NOISE = ("noise",)
#: Noise bytes the generator favours: the reply's sync, all zeros, all ones (a line held low / high).
NOISE_EDGES = (0x5A, 0x00, 0xFF)
KNOWN = {c.value for c in Command}


def _params(simulator: str) -> dict:
    return design_params(PRESETS[PRESET], **LINK)


def _config(params) -> Config:
    return Config.from_dict(params["config"])


def _frame(command, payload=b"") -> dict:
    return {"frame": encode_request(command, payload).hex()}


def _bad_frame(rng, kind: str, c: Config, max_payload: int) -> bytes:
    wbytes, top = c.host_data_bits // 8, 1 << c.host_addr_bits
    good = encode_request(Command.WRITE_REG, write_reg_payload(rng.randrange(3), rng.getrandbits(32)))
    if kind.startswith("crc_"):
        frame = bytearray(good)
        at = {"crc_body": rng.randrange(4, len(frame) - 2), "crc_check": rng.randrange(len(frame) - 2, len(frame)),
              "crc_code": 1}[kind]
        frame[at] ^= 1 << rng.randrange(8)
        return bytes(frame)
    if kind == "unknown_code":
        code = rng.choice([c for c in range(256) if c not in KNOWN])
        return encode_request(code, bytes(rng.getrandbits(8) for _ in range(rng.randrange(4))))
    if kind == "read_token":
        return encode_request(Command.READ_TOKEN)
    if kind == "read_logits":
        return encode_request(Command.READ_LOGITS, read_logits_payload(0, 1))
    if kind == "reg_length":
        n = rng.choice([0, 1, 4, 6, 9])
        return encode_request(Command.WRITE_REG, bytes(rng.getrandbits(8) for _ in range(n)))
    if kind == "reg_index":
        return encode_request(Command.WRITE_REG, write_reg_payload(rng.randint(3, 255), 1))
    if kind == "read_memory":
        return encode_request(Command.READ_MEM, read_mem_payload(rng.randint(3, 255), 0, 1))
    if kind == "read_zero":
        return encode_request(Command.READ_MEM, read_mem_payload(2, rng.randrange(top), 0))
    if kind == "read_past_end":
        count = rng.randint(2, 8)
        return encode_request(Command.READ_MEM, read_mem_payload(2, top - rng.randint(1, count - 1), count))
    if kind == "write_past_end":
        count = rng.randint(2, 4)
        words = [rng.getrandbits(8 * wbytes) for _ in range(count)]
        return encode_request(Command.WRITE_MEM, write_mem_payload(rng.randrange(2), top - rng.randint(1, count - 1),
                                                                   words, wbytes))
    if kind == "write_part_word":
        payload = write_mem_payload(rng.randrange(2), 0, [rng.getrandbits(8 * wbytes)], wbytes)
        return encode_request(Command.WRITE_MEM, payload[:-rng.randint(1, wbytes - 1)] if wbytes > 1 else payload[:5])
    if kind == "payload_on_empty":
        command = rng.choice([Command.INFO, Command.START, Command.STATUS, Command.CYCLES])
        return encode_request(command, bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 8))))
    if kind == "oversize":
        length = rng.randint(max_payload + 1, MAX_FRAME_PAYLOAD)
        return bytes([good[0], Command.WRITE_MEM.value]) + length.to_bytes(2, "little") + \
            bytes(rng.getrandbits(8) for _ in range(rng.randrange(12)))
    # A frame cut short: after its header (sync, code, length), inside its payload, inside its CRC.
    cut = {"cut_header": rng.randint(1, 3), "cut_payload": rng.randint(4, len(good) - 3),
           "cut_crc": len(good) - 1}[kind]
    return good[:cut]


def generate(rng, params) -> dict:
    c = _config(params)
    kind = rng.choices(["bad", "good", "noise"], [0.55, 0.4, 0.05])[0]
    if kind == "noise":
        n = pick_size(rng, 1, 16)
        noise = bytes(rng.choice([*NOISE_EDGES, rng.choice([b for b in range(256) if b != REQUEST_SYNC])])
                      for _ in range(n))
        frame = encode_request(Command.WRITE_REG, write_reg_payload(rng.randrange(3), rng.getrandbits(32)))
        return {"kind": "noise", "steps": [_frame(Command.STATUS), {"frame": (noise + frame).hex()},
                                           _frame(Command.STATUS)], "noise": len(noise)}
    if kind == "bad":
        bad = rng.choice(list(BAD))
        frame = _bad_frame(rng, bad, c, params["max_payload"])
        steps = [_frame(Command.STATUS), {"frame": frame.hex()}, _frame(Command.STATUS)]
        return {"kind": bad, "steps": steps}
    good = rng.choices(GOOD, [0.2, 0.1, 0.2, 0.15, 0.15, 0.1, 0.1])[0]
    if good == "gemm":
        m = pick_size(rng, 1, c.max_m)
        k, n = pick_size(rng, 1, 2 * c.array_rows), pick_size(rng, 1, 2 * c.array_cols)
        amode, a = int8_values(rng, (m, k))
        wmode, w = int8_values(rng, (k, n))
        case = {"m": m, "k": k, "n": n, "a": a.tolist(), "w": w.tolist()}
        return {"kind": good, "steps": [{"gemm": case}], "modes": [amode, wmode]}
    if good == "info":
        steps = [_frame(Command.INFO)]
    elif good == "write_reg":
        value = rng.choice([0, 1, (1 << 32) - 1, rng.getrandbits(32)])
        steps = [_frame(Command.WRITE_REG, write_reg_payload(rng.randrange(3), value))]
    elif good == "read_results":
        count = pick_size(rng, 1, max(1, params["max_payload"] // (c.array_cols * 4)))
        steps = [_frame(Command.READ_MEM, read_mem_payload(rng.randrange(3), rng.randrange(c.result_words), count))]
    elif good == "cycles":
        steps = [_frame(Command.CYCLES)]
    elif good == "zero_start":
        reg = rng.randrange(3)
        zero = rng.choice([0, 1 << {0: c.max_m, 1: c.max_k // c.array_rows, 2: c.weight_words}[reg].bit_length()])
        steps = [_frame(Command.WRITE_REG, write_reg_payload(reg, zero)), _frame(Command.START)]
    else:   # busy: the longest GEMM the memories hold, a START while it runs, then polls until done
        kt = c.act_words // c.max_m
        steps = [_frame(Command.WRITE_REG, write_reg_payload(0, c.max_m)),
                 _frame(Command.WRITE_REG, write_reg_payload(1, kt)),
                 _frame(Command.WRITE_REG, write_reg_payload(2, c.weight_words // (kt * c.array_rows))),
                 _frame(Command.START), _frame(Command.START), {"wait_done": 1}]
    return {"kind": good, "steps": steps}


def jobs(params, txns) -> list:
    steps = [s for _, t in txns for s in t["steps"]]
    return [({"config": params["config"], "link": LINK, "steps": steps}, list(range(len(txns))))]


def results(result, txns) -> list:
    return split_steps(result["replies"], txns)


def _status(payload_hex: str) -> tuple[int, int]:
    p = bytes.fromhex(payload_hex)
    return p[1], int.from_bytes(p[2:4], "little")


def observe(params, txn, raw):
    kind = txn["kind"]
    if kind == "gemm":
        return {"out": raw[0]["out"], "cycles": raw[0]["cycles"]}
    statuses = [r.get("status", "poll") for r in raw]
    obs = {"statuses": statuses}
    if kind in BAD:
        (_, before), (last, after) = _status(raw[0]["payload"]), _status(raw[2]["payload"])
        obs["last_error"], obs["rejected"] = Status(last).name, after - before
    elif kind in NOISE:
        (first, before), (last, after) = _status(raw[0]["payload"]), _status(raw[2]["payload"])
        obs["last_error_kept"], obs["rejected"] = first == last, after - before
    elif kind == "info":
        obs["info"] = raw[0]["payload"]
    elif kind in ("read_results", "cycles"):
        obs["bytes"] = len(bytes.fromhex(raw[0]["payload"]))
    return obs


def expect(params, txn):
    c, kind = _config(params), txn["kind"]
    if kind == "gemm":
        case = txn["steps"][0]["gemm"]
        plan = plan_gemm(c, case["m"], case["k"], case["n"])
        return {"out": gemm_int8(case["a"], case["w"]).tolist(), "cycles": plan.predicted_cycles}
    if kind in BAD:
        return {"statuses": ["OK", BAD[kind], "OK"], "last_error": BAD[kind], "rejected": 1}
    if kind in NOISE:
        return {"statuses": ["OK", "OK", "OK"], "last_error_kept": True, "rejected": 0}
    if kind == "info":
        bus = GemmUnit.bus_for(c)
        info = DeviceInfo(PROTOCOL_VERSION, Target.GEMM.value, bus.mem_count, len(GEMM_REGS), bus.wdata_bits // 8,
                          bus.rdata_bits // 8, bus.addr_bits, params["max_payload"])
        return {"statuses": ["OK"], "info": info.encode().hex()}
    if kind == "read_results":
        count = int.from_bytes(bytes.fromhex(txn["steps"][0]["frame"])[9:11], "little")
        return {"statuses": ["OK"], "bytes": count * c.array_cols * 4}
    if kind == "cycles":
        return {"statuses": ["OK"], "bytes": 8}
    if kind == "zero_start":
        return {"statuses": ["OK", "ERR_ARGUMENT"]}
    if kind == "busy":
        return {"statuses": ["OK", "OK", "OK", "OK", "ERR_BUSY", "poll"]}
    return {"statuses": ["OK"]}


def points(params) -> dict:
    return {
        "scenario": list(BAD) + list(GOOD) + list(NOISE),
        "command_sent": [c.name for c in Command] + ["unknown"],
        "status_seen": [s.name for s in Status],
        "transition": ["idle>error>idle", "idle>noise>idle", "idle>busy>done", "busy>refused", "idle>refused_start"],
        "gemm_m": ["min", "mid", "max"],
        "gemm_tiles": ["1", "many"],
        "reg_value": ["0", "1", "max", "other"],
        "noise_bytes": ["1", "2-15", "16"],
        "noise_edge": [f"0x{b:02X}" for b in NOISE_EDGES],
    }


def sample(cov, params, txn, obs) -> None:
    c, kind = _config(params), txn["kind"]
    cov.hit("scenario", kind)
    for i, step in enumerate(txn["steps"]):
        if "frame" in step:
            frame = bytes.fromhex(step["frame"])
            code = (frame[txn["noise"]:] if kind in NOISE and i == 1 else frame)[1:2]
            if code:
                cov.hit("command_sent", Command(code[0]).name if code[0] in KNOWN else "unknown")
        elif "gemm" in step:
            g = step["gemm"]
            for name in ("WRITE_MEM", "WRITE_REG", "START", "STATUS", "READ_MEM", "CYCLES"):
                cov.hit("command_sent", name)
            cov.hit("gemm_m", "min" if g["m"] == 1 else "max" if g["m"] == c.max_m else "mid")
            cov.hit("gemm_tiles", "1" if g["k"] <= c.array_rows and g["n"] <= c.array_cols else "many")
    for s in obs.get("statuses", ["OK"]):
        if s != "poll":
            cov.hit("status_seen", s)
    if kind in BAD:
        cov.hit("transition", "idle>error>idle")
    if kind in NOISE:
        cov.hit("transition", "idle>noise>idle")
    if kind in ("gemm", "busy"):
        cov.hit("transition", "idle>busy>done")
    if kind == "busy":
        cov.hit("transition", "busy>refused")
    if kind == "zero_start":
        cov.hit("transition", "idle>refused_start")
    if kind in NOISE:
        n = txn["noise"]
        cov.hit("noise_bytes", "1" if n == 1 else "16" if n == 16 else "2-15")
        for b in bytes.fromhex(txn["steps"][1]["frame"])[:n]:
            if b in NOISE_EDGES:
                cov.hit("noise_edge", f"0x{b:02X}")
    if kind == "write_reg":
        value = int.from_bytes(bytes.fromhex(txn["steps"][0]["frame"])[5:9], "little")
        cov.hit("reg_value", {0: "0", 1: "1", (1 << 32) - 1: "max"}.get(value, "other"))


BLOCK = Block(name="link", design="linked_gemm", flow="link_frames", params=_params, generate=generate, jobs=jobs,
              results=results, observe=observe, expect=expect, sample=sample, points=points, closure=1.0)
