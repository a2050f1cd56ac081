#!/usr/bin/env python3
"""Benchmark: aggregate tokens/s of the demo model with 1, 2, 4 and 8 sequences decoding together.

On each design (default ``demo-narrow``, whose weight port delivers one 8-byte row a cycle; the same
with ``demo``'s fusions and two attention heads a step, ``demo-narrow+fusions``; and ``demo``, a
whole 8 x 8 tile a cycle) the demo model serves B requests at once through the
continuous-batching scheduler (:func:`sim.serve.scheduler.serve`) on the instruction-level model:
B copies of ``lockstep run``'s default prompt (15 tokens) arriving together, each generating
``lockstep run``'s default 48 tokens, at most B sequences running. Every pass runs on the
instruction-level model; its cycles are the cycle model's prediction (``pass_cycles``; nothing is
measured). Every sequence's tokens must equal the same prompt run alone (one row a pass), else the
script says so and exits 1.

Printed per design and B:

* decode tokens/s: B tokens a decode pass (B rows at the positions the run's decode passes had),
  over those passes' cycles at the design's clock: the steady state of batched decode;
* run tokens/s: all generated tokens over the run's simulated span (the prefill included);
* the ratio of each to B = 1, and the array's utilisation over the run (MACs done / (cycles x R x C)).

The issue's target (issue 17): >= 6x decode tokens/s at B = 8 against B = 1 on the narrow design.

    .venv/bin/python scripts/bench_batching.py [--batches 1,2,4,8] [--designs demo-narrow,demo]
        [--tokens N] [--json] [--plot FILE.png]
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from sim.cli.bench import BenchError, BenchParser, bench_main

PROG = "bench_batching"
BATCHES = (1, 2, 4, 8)
#: The designs measured: a name, or a name with ``+KEY=VALUE`` changes (``--set``'s keys); the
#: second is the narrow port with the full-width design's fusions and two attention heads a step.
FUSIONS = "+fused_swiglu=true+fused_rope=true+fused_residual=true+attention_heads_per_step=2"
DESIGNS = ("demo-narrow", "demo-narrow" + FUSIONS, "demo")
TARGET_RATIO = 6.0
DEFAULT_PLOT = Path(__file__).resolve().parents[1] / "docs" / "plots" / "batching.png"


def _ints(text: str, option: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",")]
    except ValueError:
        raise BenchError(f"{option} takes positive integers separated by commas, not {text!r}") from None
    if not out or min(out) < 1:
        raise BenchError(f"{option} takes positive integers separated by commas, not {text!r}")
    return out


def measure(design_name: str, batches, tokens: int, prompt_text: str, backend: str = "isa") -> list[dict]:
    """The rows of one design: per B, decode and run tokens/s, and whether every sequence's tokens
    equal the prompt run alone. ``backend`` a simulator: the schedule replayed on the RTL, every pass's
    tokens and cycles checked (:func:`sim.serve.rtl.confirm_on_rtl`), the figures from its measured cycles."""
    from golden.checkpoint import load_demo_model
    from sim.design import load_design
    from sim.machine.isa_sim import IsaMachine
    from sim.runtime import prepare
    from sim.serve.requests import Request
    from sim.serve.scheduler import IsaExecutor, serve

    name, *settings = design_name.split("+")
    design = load_design(name.strip(), [x.strip() for x in settings])
    ckpt = load_demo_model()
    compiled = prepare(ckpt, design.config)
    prompt = tuple(ckpt.tokenizer.encode(prompt_text))
    # The golden sequence: the prompt alone, one row a step.
    alone, m = [], IsaMachine(compiled)
    seq = list(prompt)
    for p in range(len(prompt) + tokens - 1):
        out = m.step(seq[p], p)
        if p >= len(prompt) - 1:
            alone.append(out)
            seq.append(out)
    rows = []
    for b in batches:
        ex = IsaExecutor(compiled)
        if b > ex.kv_slots:
            raise BenchError(f"--batches {b}: design {design_name} holds {ex.kv_slots} sequences of the demo model")
        reqs = [Request(str(i), prompt, tokens, 0) for i in range(b)]
        rep = serve(reqs, ex, max_running=b)
        if backend != "isa":
            from sim.serve.rtl import confirm_on_rtl

            rep = confirm_on_rtl(rep, compiled, backend)
        for r in rep.results:
            if r.tokens != alone:
                raise BenchError(f"{design_name}, B = {b}: request {r.id}'s tokens differ from the prompt run alone")
        decode = [p for p in rep.passes if len(p.rows) == b and all(pos >= len(prompt) for _, _, pos, _ in p.rows)]
        cyc = sum(p.cycles for p in decode)
        s = rep.summary()
        if not decode:
            raise BenchError(f"{design_name}, B = {b}: no pass with all {b} sequences decoding (give more --tokens)")
        rows.append({"design": _label(design_name), "batch": b, "decode_passes": len(decode),
                     "decode_positions": [[pos for _, _, pos, _ in p.rows] for p in decode],
                     "decode_cycles_per_pass": cyc / len(decode),
                     "decode_tokens_per_s": b * len(decode) * rep.clock_hz / cyc,
                     "run_tokens_per_s": s["tokens_per_s"], "passes": s["passes"], "span_cycles": s["span_cycles"],
                     "array_utilisation": s["array_utilisation"], "clock_hz": rep.clock_hz, "bit_exact": True,
                     "backend": backend, "cycles_measured": rep.cycle_exact is True})
    for r in rows:
        r["decode_ratio"] = r["decode_tokens_per_s"] / rows[0]["decode_tokens_per_s"]
        r["run_ratio"] = r["run_tokens_per_s"] / rows[0]["run_tokens_per_s"]
    return rows


def _label(design: str) -> str:
    return design.replace(FUSIONS, "+fusions")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    try:
        for i, design in enumerate(dict.fromkeys(r["design"] for r in rows)):
            mine = [r for r in rows if r["design"] == design]
            colour = f"C{i}"
            ax.plot([r["batch"] for r in mine], [r["decode_tokens_per_s"] for r in mine], "o-", color=colour,
                    label=f"{design}: decode passes")
            ax.plot([r["batch"] for r in mine], [r["run_tokens_per_s"] for r in mine], "s--", alpha=0.6,
                    color=colour, label=f"{design}: whole run (prefill included)")
            for r in mine:
                ax.annotate(f"{r['decode_ratio']:.1f}x", (r["batch"], r["decode_tokens_per_s"]),
                            textcoords="offset points", xytext=(4, -10), fontsize=7)
        ax.set_xscale("log", base=2)
        ax.set_xticks([r["batch"] for r in rows])
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("sequences decoding together (B)")
        ax.set_ylabel("aggregate tokens/s (cycle model, 100 MHz)")
        ax.set_title("demo model: batching against the weight port (instruction-level model)", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.png")
        try:
            fig.savefig(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        plt.close(fig)


def run(argv) -> int:
    parser = BenchParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument("--designs", default=",".join(DESIGNS),
                        help="designs, comma-separated; NAME+KEY=VALUE changes one key (as --set does)")
    parser.add_argument("--tokens", type=int, default=None, help="new tokens a sequence (default: lockstep run's)")
    parser.add_argument("--backend", default="isa", choices=("isa", "verilator", "icarus", "amaranth"),
                        help="isa: the instruction-level model, predicted cycles; a simulator: the same schedule "
                             "replayed on the RTL, every pass's tokens and cycles checked, measured cycles")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--plot", default=str(DEFAULT_PLOT), help="the PNG to write ('' for none)")
    args = parser.parse_args(argv)
    batches = _ints(args.batches, "--batches")
    from sim.cli.model import DEFAULT_PROMPT

    tokens = args.tokens
    if tokens is None:
        from sim.cli.commands import run as run_cmd

        tokens = next(p.default for p in run_cmd.params if p.name == "n_tokens")
    if tokens < 1:
        raise BenchError(f"--tokens must be a positive integer, not {tokens}")
    if args.plot and not Path(args.plot).parent.is_dir():
        raise BenchError(f"--plot {args.plot}: no such directory")
    rows = []
    for design in args.designs.split(","):
        rows += measure(design.strip(), batches, tokens, DEFAULT_PROMPT, args.backend)
    if args.plot:
        plot(rows, Path(args.plot))
    if args.json:
        print(json.dumps({"rows": rows, "plot": args.plot or None}))
        return 0
    how = ("instruction-level model, cycles predicted by the cycle model" if args.backend == "isa" else
           f"the schedule replayed on {args.backend}: every pass's tokens and measured cycles equal the models'")
    print(f"demo model, {DEFAULT_PROMPT!r} ({tokens} new tokens a sequence), {how}; every sequence's tokens "
          f"equal the prompt run alone")
    head = ("design", "B", "cycles/decode pass", "decode tokens/s", "vs B=1", "run tokens/s", "vs B=1", "array")
    table = [head] + [(r["design"], str(r["batch"]), f"{r['decode_cycles_per_pass']:,.0f}",
                       f"{r['decode_tokens_per_s']:,.0f}", f"{r['decode_ratio']:.2f}x", f"{r['run_tokens_per_s']:,.0f}",
                       f"{r['run_ratio']:.2f}x", f"{100 * r['array_utilisation']:.1f} %") for r in rows]
    widths = [max(len(t[i]) for t in table) for i in range(len(head))]
    for t in table:
        print("  ".join(c.rjust(w) for c, w in zip(t, widths, strict=True)))
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def main(argv=None) -> int:
    return bench_main(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
