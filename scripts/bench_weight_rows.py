#!/usr/bin/env python3
"""Benchmark: the demo model at batch 1 on the demo design, against the weight path's rows a cycle (G).

For each G (``Config.weight_rows_per_cycle``; default 1, 2, 4 and 8) the demo model is compiled for
the ``demo`` preset with that G (``dataclasses.replace``: the preset's other fields unchanged) and
decodes the default run of ``lockstep run`` (its default prompt and ``--tokens``, read from the CLI's
code) on Verilator. Printed per G: the measured cycles a token (the mean over the steps; every step
must equal the cycle model's prediction, else the script says where and exits 1), tokens/s at the
design's clock, the share of the array's MAC peak the run reaches (padded MACs / (R*C) over the
cycles, for the mean step and for the run's first and last positions: attention grows with the
position) and the per-unit lower bounds with the binding one named:

* MAC peak: padded MACs / (R*C); a K x N GEMM at M = 1 is ceil(K/R)*R x ceil(N/C)*C MACs;
* weight port: the tiles' bytes / (G*C), the bytes the weight path delivers a cycle;
* attention, vector, sequencer: each unit's own minimum (the cycle model's ``unit_min`` of its
  instructions, without issue overhead: one (head, position) step a cycle; the vector unit's input
  beats; the words the sequencer moves itself for EMBED and KV_WRITE).

The bounds are the cycle model's own (:class:`sim.machine.cycles.Bounds`, the ones ``lockstep run``
prints). The padded MACs are also counted here from the compiled program's GEMM instructions
(:func:`padded_macs`) and must equal the cycle model's MAC-peak bound times R*C, else the script says
so and exits 1: the compiler and the cycle model agree on the tiles.

``--backend isa`` runs the instruction-level model instead: no RTL, nothing measured, every cycle
figure is the cycle model's prediction and is labelled so.
    .venv/bin/python scripts/bench_weight_rows.py [--weight-rows 1,2,4,8] [--backend verilator|isa]
        [--tokens N] [--json] [--plot FILE.png]
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from sim.cli.bench import BenchError, BenchParser, bench_main

PROG = "bench_weight_rows"
DESIGN = "demo"
ROWS = (1, 2, 4, 8)
BACKENDS = ("verilator", "isa")
#: The issue's targets (issue 16): the share of the array's MAC peak a token, and tokens/s at 100 MHz.
TARGET_MAC_SHARE = 0.70
TARGET_TOKENS_PER_SECOND = 20_000


def cli_defaults() -> tuple[str, int]:
    """``lockstep run``'s default prompt text and ``--tokens``, from the CLI's code."""
    from sim.cli.commands import run
    from sim.cli.model import DEFAULT_PROMPT

    tokens = next(p.default for p in run.params if p.name == "n_tokens")
    return DEFAULT_PROMPT, tokens


def parse_rows(text: str) -> list[int]:
    """``1,2,4,8`` -> [1, 2, 4, 8]; BenchError for anything that is not a list of distinct integers."""
    try:
        rows = [int(x) for x in text.split(",")]
    except ValueError:
        raise BenchError(f"--weight-rows must be integers separated by commas, e.g. 1,2,4,8, not {text!r}") from None
    if len(set(rows)) != len(rows):
        raise BenchError(f"--weight-rows lists a value twice: {text!r}")
    return rows


def design_configs(rows: list[int]) -> dict[int, object]:
    """The demo preset at each G, checked by Config itself (G must divide the array's rows)."""
    from golden.errors import InputError
    from hdl.config import PRESETS

    base = PRESETS[DESIGN]
    out = {}
    for g in rows:
        try:
            out[g] = dataclasses.replace(base, weight_rows_per_cycle=g)
        except (InputError, TypeError, ValueError) as exc:
            raise BenchError(f"--weight-rows {g}: {exc}") from None
    return out


def padded_macs(compiled) -> int:
    """MACs the array performs for one token: every GEMM instruction of the compiled program, K x N
    (``length`` x ``count``) padded to whole R x C tiles, at M = 1."""
    from golden.numerics import ceil_div
    from hdl.isa import Opcode

    R, C = compiled.config.array_rows, compiled.config.array_cols
    return sum(ceil_div(ins["length"], R) * R * ceil_div(ins["count"], C) * C
               for ins in compiled.instructions if ins.opcode == Opcode.GEMM)


def step_bounds(compiled, position: int):
    """The step at ``position``: its predicted cycles and its named lower bounds
    (:class:`sim.machine.cycles.Bounds`); the MAC-peak bound checked against :func:`padded_macs`."""
    from sim.machine.cycles import decode_step_cycles

    config = compiled.config
    predicted = decode_step_cycles(compiled.model.program, compiled.model.config, config, position=position)
    report = predicted.bound_report
    macs = padded_macs(compiled)
    if report.bounds["MAC peak"] * config.array_rows * config.array_cols != macs:
        raise BenchError(f"the compiled program pads to {macs} MACs a token, the cycle model's MAC peak bound "
                         f"to {report.bounds['MAC peak'] * config.array_rows * config.array_cols:g}")
    return predicted.total, report


def measure(g: int, compiled, backend: str, prompt: list[int], tokens: int) -> dict:
    """Decode on ``backend``; the point's figures (cycles measured where the backend measures them)."""
    from sim.machine.cycles import Bounds
    from sim.runtime import decode

    def progress(step):
        if step.position % 16 == 15:
            print(f"{PROG}: G={g}: position {step.position + 1} done", file=sys.stderr, flush=True)

    report = decode(compiled, backend, prompt, tokens, on_step=progress)
    config = compiled.config
    measured = report.measured
    steps = []
    for s in report.steps:
        predicted, step_report = step_bounds(compiled, s.position)
        if predicted != s.predicted_cycles:   # the runtime and this script ask the same cycle model
            raise BenchError(f"G={g}: the runtime predicted {s.predicted_cycles} cycles at position {s.position}, "
                             f"the cycle model {predicted}")
        steps.append({"position": s.position, "predicted_cycles": s.predicted_cycles,
                      "measured_cycles": s.measured_cycles, "report": step_report})
    cycles_key = "measured_cycles" if measured else "predicted_cycles"
    n = len(steps)
    cycles = sum(s[cycles_key] for s in steps) / n
    mean = Bounds.mean(dataclasses.replace(s["report"], cycles=s[cycles_key]) for s in steps)
    bounds = mean.bounds
    first, last = steps[0], steps[-1]
    return {
        "weight_rows_per_cycle": g,
        "weight_port_bytes": config.weight_port_bytes,
        "array": [config.array_rows, config.array_cols],
        "clock_hz": config.clock_hz,
        "steps": n,
        "measured": measured,
        "measured_cycles_per_token": cycles if measured else None,
        "predicted_cycles_per_token": report.predicted_cycles_per_token,
        "cycle_exact": report.cycle_exact,
        "cycles_per_token": cycles,
        "tokens_per_second": config.clock_hz / cycles,
        "padded_macs_per_token": padded_macs(compiled),
        "mac_peak_share": mean.mac_peak_share,
        "mac_peak_share_first": first["report"].bounds["MAC peak"] / first[cycles_key],
        "mac_peak_share_last": last["report"].bounds["MAC peak"] / last[cycles_key],
        "positions": [first["position"], last["position"]],
        "bounds": bounds,
        "binding": mean.binding,
        "binding_share": mean.efficiency,
        "generated": report.generated,
        "mismatches": [(s["position"], s["measured_cycles"], s["predicted_cycles"]) for s in steps
                       if measured and s["measured_cycles"] != s["predicted_cycles"]],
    }


def commit() -> str:
    """The checkout's commit (:func:`sim.perf.plot.checkout_commit`)."""
    from sim.perf.plot import checkout_commit

    return checkout_commit(Path(__file__).resolve().parent)


def table(result: dict) -> str:
    """The points as a text table (what the script prints on stdout)."""
    from sim.machine.cycles import BOUND_NAMES
    from sim.numbers import count, number

    measured = result["measured"]
    what = "measured on " + result["backend"] if measured else \
        f"PREDICTED by the cycle model ({result['backend']} backend: no RTL, nothing measured)"
    p = result["points"][0]
    lines = [f"demo model at batch 1 on design {DESIGN} ({p['array'][0]}x{p['array'][1]} array, "
             f"{number(p['clock_hz'] / 1e6)} MHz), {result['steps']} steps ({result['prompt_tokens']} prompt, "
             f"{result['new_tokens']} new tokens), cycles {what}; commit {result['commit']}",
             f"padded MACs a token: {count(p['padded_macs_per_token'])} (MAC peak bound = padded MACs / "
             f"{p['array'][0] * p['array'][1]})", ""]
    cyc = "measured" if measured else "predicted"
    head = ["G", "port B/cyc", f"cycles/token ({cyc})", "predicted", "tokens/s", "MAC peak %",
            f"at pos {p['positions'][0]}", f"at pos {p['positions'][1]}",
            *BOUND_NAMES, "binding bound"]
    rows = []
    for q in result["points"]:
        b = q["bounds"]
        rows.append([str(q["weight_rows_per_cycle"]), str(q["weight_port_bytes"]),
                     number(q["measured_cycles_per_token"]) if measured else "-",
                     number(q["predicted_cycles_per_token"]), number(q["tokens_per_second"]),
                     f"{q['mac_peak_share']:.1%}", f"{q['mac_peak_share_first']:.1%}",
                     f"{q['mac_peak_share_last']:.1%}", *(number(b[k]) for k in BOUND_NAMES),
                     f"{q['binding']} ({q['binding_share']:.0%} of the cycles)"])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = " | ".join(f"{{:{'<' if i == len(head) - 1 else '>'}{w}}}" for i, w in enumerate(widths))
    lines += [fmt.format(*head).rstrip(), "-+-".join("-" * w for w in widths),
              *(fmt.format(*r).rstrip() for r in rows), ""]
    lines.append("bounds in cycles a token (mean over the steps): MAC peak = padded MACs / (R*C); weight port = "
                 "weight bytes / (G*C); attention, vector, sequencer = the unit's own minimum")
    best = max(result["points"], key=lambda q: q["tokens_per_second"])
    lines.append(f"targets (issue 16) at G={best['weight_rows_per_cycle']}: MAC peak share "
                 f"{best['mac_peak_share']:.1%} "
                 f"({'meets' if best['mac_peak_share'] >= TARGET_MAC_SHARE else 'MISSES'} >= {TARGET_MAC_SHARE:.0%}), "
                 f"{number(best['tokens_per_second'])} tokens/s ("
                 f"{'meets' if best['tokens_per_second'] >= TARGET_TOKENS_PER_SECOND else 'MISSES'} >= "
                 f"{TARGET_TOKENS_PER_SECOND:,})" + ("" if measured else " -- predicted, not measured"))
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """Tokens/s and the MAC-peak share against G, written to ``path`` (PNG) atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.perf.plot import DPI, save_png

    points = result["points"]
    gs = [q["weight_rows_per_cycle"] for q in points]
    kind = f"measured on {result['backend']}" if result["measured"] else "predicted (cycle model, not measured)"
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.0, 3.2), dpi=DPI, layout="constrained")
    left.plot(gs, [q["tokens_per_second"] for q in points], marker="o", color="tab:blue", zorder=3)
    left.axhline(TARGET_TOKENS_PER_SECOND, color="grey", ls="--", lw=1,
                 label=f"target {TARGET_TOKENS_PER_SECOND:,} tokens/s")
    left.set_ylim(0, 1.25 * max(TARGET_TOKENS_PER_SECOND, *(q["tokens_per_second"] for q in points)))
    left.set_ylabel(f"tokens/s at {points[0]['clock_hz'] / 1e6:g} MHz", fontsize=7)
    right.plot(gs, [100 * q["mac_peak_share"] for q in points], marker="o", color="tab:green", zorder=3,
               label="mean over the run")
    right.plot(gs, [100 * q["mac_peak_share_first"] for q in points], marker=".", ls=":", color="tab:green",
               label=f"position {points[0]['positions'][0]}")
    right.plot(gs, [100 * q["mac_peak_share_last"] for q in points], marker=".", ls="--", color="tab:olive",
               label=f"position {points[0]['positions'][1]}")
    right.axhline(100 * TARGET_MAC_SHARE, color="grey", ls="--", lw=1, label=f"target {TARGET_MAC_SHARE:.0%}")
    right.set_ylabel("share of the array's MAC peak (%)", fontsize=7)
    right.set_ylim(0, 100)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(gs, [str(g) for g in gs])
        ax.minorticks_off()
        ax.set_xlabel("weight_rows_per_cycle (G): weight rows a cycle", fontsize=7)
        ax.tick_params(labelsize=6.5)
        ax.grid(True, alpha=0.25)
        ax.legend(fontsize=6.5)
    for q in points:
        left.annotate(f"{q['tokens_per_second']:,.0f}\n{q['binding']}", (q["weight_rows_per_cycle"],
                      q["tokens_per_second"]), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=6)
    fig.suptitle(f"demo model, batch 1, design {DESIGN} with G weight rows a cycle: cycles {kind}, "
                 f"commit {result['commit']}", fontsize=8)
    save_png(fig, path)


def run(argv) -> int:
    prompt_text, default_tokens = cli_defaults()
    ap = BenchParser(prog=PROG, description=__doc__.splitlines()[0])
    ap.add_argument("--weight-rows", default=",".join(map(str, ROWS)), metavar="G[,G...]",
                    help="values of weight_rows_per_cycle (default 1,2,4,8; each must divide the array's rows)")
    ap.add_argument("--backend", default="verilator",
                    help="verilator (default: cycles measured on the RTL) or isa (the instruction-level model: "
                         "cycles predicted, nothing measured)")
    ap.add_argument("--tokens", type=int, default=default_tokens,
                    help=f"new tokens after the prompt (default {default_tokens}, as lockstep run)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--plot", type=Path, default=None, metavar="FILE.png",
                    help="also plot tokens/s and the MAC-peak share against G into FILE.png")
    args = ap.parse_args(argv)
    if args.backend not in BACKENDS:
        raise BenchError(f"--backend must be one of {', '.join(BACKENDS)}, not {args.backend!r}")
    if args.tokens < 0:
        raise BenchError(f"--tokens must be a non-negative integer, not {args.tokens}")
    if args.plot is not None:
        if args.plot.suffix.lower() != ".png":
            raise BenchError(f"--plot must name a .png file, not {str(args.plot)!r}")
        if not (args.plot.parent if str(args.plot.parent) else Path(".")).is_dir():
            raise BenchError(f"--plot {args.plot}: no such directory {str(args.plot.parent)!r}")
    configs = design_configs(parse_rows(args.weight_rows))

    from golden.checkpoint import load_demo_model
    from golden.quantize import quantize_checkpoint
    from sim.machine.compiler import compile_model
    from sim.runtime import check_request

    print(f"{PROG}: quantizing the demo model ...", file=sys.stderr, flush=True)
    ckpt = load_demo_model()
    model = quantize_checkpoint(ckpt)
    prompt = ckpt.tokenizer.encode(prompt_text)
    points = []
    for g, config in configs.items():
        print(f"{PROG}: G={g}: compiling for design {DESIGN} with weight_rows_per_cycle={g} ...", file=sys.stderr,
              flush=True)
        compiled = compile_model(model, config)
        prompt, steps = check_request(compiled, args.backend, prompt, args.tokens)
        if args.backend == "verilator":
            print(f"{PROG}: G={g}: building (a few minutes unless cached) and running {steps} steps on verilator "
                  f"...", file=sys.stderr, flush=True)
        points.append(measure(g, compiled, args.backend, prompt, args.tokens))
    result = {"design": DESIGN, "backend": args.backend, "measured": args.backend != "isa", "commit": commit(),
              "prompt": prompt_text, "prompt_tokens": len(prompt), "new_tokens": args.tokens,
              "steps": points[0]["steps"], "targets": {"mac_peak_share": TARGET_MAC_SHARE,
                                                       "tokens_per_second": TARGET_TOKENS_PER_SECOND},
              "points": points}
    if args.plot is not None:
        plot(result, args.plot)
    print(json.dumps(result) if args.json else table(result), flush=True)
    bad = [(q["weight_rows_per_cycle"], *m) for q in points for m in q["mismatches"]]
    if bad:
        g, position, measured, predicted = bad[0]
        raise BenchError(f"{len(bad)} step(s) measured differ from the prediction: first at G={g}, position "
                         f"{position}: measured {measured} cycles, predicted {predicted}")
    return 0


def main(argv=None) -> int:
    return bench_main(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
