#!/usr/bin/env python3
"""Capacity study: how many sequences of mixed lengths fixed KV slots and a paged KV layout hold in the same memory.

Each study is a model's KV cache in one KV memory: the demo model on ``demo`` (its 256 KiB KV memory,
the design's context of 128 positions) and Llama-3.2-1B (16 KiB of K and V a position) in a memory
of 8 fixed slots of a 2,048-position context (256 MiB), the same 8 slots the demo design has. For each,
two seeded request traces (``sim.serve.requests.poisson_trace``: prompt and output lengths uniform
in their ranges) are replayed (``sim.serve.kv_layout.replay``: every request waiting from the start,
first come first served, a sequence's blocks reserved on admission for all its positions and freed
when it retires) with fixed slots and with blocks of B positions.

Printed per study, mix and layout (the table of docs/serving.md, "KV memory"): the sequences running
at once (peak, and mean over the steps in which a request waited: the memory's capacity), against
fixed slots; the share of the held bytes written (positions so far) and held past the sequences'
last positions (the last block's rounding: a fixed slot's unused context); the bits of one
sequence's block table. ``--json`` adds the memory the blocks held and the steps the whole trace
took (a step advances every running sequence, which no pass of ``max_m`` rows does once more
sequences run than it has rows).

    .venv/bin/python scripts/bench_kv_layout.py [--requests N] [--seed S] [--blocks 4,8,16,32] [--json | --markdown]
        [--plot FILE.png]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sim.cli.bench import BenchError, BenchParser, bench_main

PROG = "bench_kv_layout"
BLOCKS = (4, 8, 16, 32)
LLAMA = "llama-3.2-1b"
LLAMA_CONTEXT = 2048
SLOTS = 8
#: (study, mix, prompt lengths, output lengths)
MIXES = (("demo on demo", "short", "4:16", "8:32"), ("demo on demo", "wide", "1:64", "1:64"),
         (f"{LLAMA} (256 MiB)", "chat", "32:512", "16:256"), (f"{LLAMA} (256 MiB)", "wide", "16:1024", "16:1024"))
DEFAULT_PLOT = Path(__file__).resolve().parents[1] / "docs" / "plots" / "kv_layout.png"


def _blocks(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",")]
    except ValueError:
        raise BenchError(f"--blocks takes powers of two separated by commas, not {text!r}") from None
    if not out or any(b < 1 or b & (b - 1) for b in out):
        raise BenchError(f"--blocks takes powers of two separated by commas, not {text!r}")
    return out


def geometries() -> dict:
    """study -> (KvGeometry, vocabulary size)."""
    from golden.checkpoint import load_config
    from golden.quantize import weight_bytes
    from sim.design import load_design
    from sim.perf.model import MODELS
    from sim.serve.kv_layout import KvGeometry

    demo = load_config(Path(__file__).resolve().parents[1] / "golden" / "data" / "demo")
    llama = MODELS[LLAMA]
    per_position = weight_bytes(llama)["kv_bytes_per_token"]
    return {MIXES[0][0]: (KvGeometry.of_design(demo, load_design("demo").config), demo.vocab_size),
            MIXES[2][0]: (KvGeometry.of(llama, memory_bytes=SLOTS * LLAMA_CONTEXT * per_position,
                                        max_context=LLAMA_CONTEXT), llama.vocab_size)}


def measure(requests: int, seed: int, blocks) -> list[dict]:
    """One row per study, mix and layout (fixed slots first, then each B)."""
    from sim.serve.kv_layout import FIXED, replay
    from sim.serve.requests import Lengths, poisson_trace

    geo = geometries()
    rows = []
    for study, mix, prompt, output in MIXES:
        g, vocab = geo[study]
        # The arrival rate does not matter (replay ignores arrivals); the lengths and tokens are the seed's.
        trace = poisson_trace(requests=requests, rate=1.0, clock_hz=1.0, prompt=Lengths.parse(prompt, "prompt"),
                              output=Lengths.parse(output, "output"), vocab_size=vocab, seed=seed)
        fixed = None
        for b in (FIXED, *blocks):
            if b > g.max_context:
                raise BenchError(f"--blocks {b}: more than {study}'s context of {g.max_context} positions")
            o = replay(trace, g, b)
            fixed = fixed or o
            rows.append({"study": study, "mix": mix, "prompt": prompt, "output": output,
                         "memory_bytes": g.memory_bytes, "position_bytes": g.position_bytes,
                         "max_context": g.max_context, **o.as_dict(), "vs_fixed": o.mean / fixed.mean,
                         "steps_vs_fixed": o.steps / fixed.steps})
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    studies = list(dict.fromkeys(r["study"] for r in rows))
    from sim.perf.plot import save_png

    fig, axes = plt.subplots(1, len(studies), figsize=(9.6, 4.0))
    try:
        for ax, study in zip(axes, studies, strict=True):
            mine = [r for r in rows if r["study"] == study]
            mixes = list(dict.fromkeys(r["mix"] for r in mine))
            layouts = list(dict.fromkeys(r["layout"] for r in mine))
            width = 0.8 / len(mixes)
            for i, mix in enumerate(mixes):
                rs = [r for r in mine if r["mix"] == mix]
                xs = [layouts.index(r["layout"]) + (i - (len(mixes) - 1) / 2) * width for r in rs]
                ax.bar(xs, [r["mean"] for r in rs], width, color=f"C{i}",
                       label=f"{mix} (prompt {rs[0]['prompt']}, output {rs[0]['output']}): mean")
                ax.plot(xs, [r["peak"] for r in rs], "k_", markersize=10)
                for x, r in zip(xs, rs, strict=True):
                    ax.annotate(f"{100 * r['rounding']:.0f}%", (x, r["mean"]), textcoords="offset points",
                                xytext=(0, 2), ha="center", fontsize=6)
            ax.set_xticks(range(len(layouts)), layouts, fontsize=8)
            ax.set_ylabel("sequences running at once")
            ax.set_ylim(0, 1.4 * max(r["peak"] for r in mine))
            ax.set_title(f"{study}: {mine[0]['memory_bytes']:,} bytes of KV", fontsize=9)
            ax.grid(True, axis="y", alpha=0.3)
            ax.legend(fontsize=6, title="bars: mean while requests wait; -: peak; %: rounding waste",
                      title_fontsize=6)
        fig.tight_layout()
    except BaseException:
        plt.close(fig)
        raise
    save_png(fig, path)         # whole or not at all; closes the figure


def markdown(rows: list[dict]) -> str:
    """The table of docs/serving.md ("KV memory: fixed slots or pages")."""
    out = ["| model, memory | mix (prompt / output lengths) | layout | blocks | peak | mean | vs fixed | written | "
           "rounding | table bits |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        first = r["layout"] == "fixed"
        study = r["study"].replace(" (256 MiB)", ", 256 MiB")
        cells = (study if first else "", f"{r['mix']} {r['prompt']} / {r['output']}" if first else "", r["layout"],
                 f"{r['blocks']:,}", str(r["peak"]), f"{r['mean']:.1f}", f"{r['vs_fixed']:.2f}x",
                 f"{100 * r['written']:.1f} %", f"{100 * r['rounding']:.1f} %", f"{r['table_bits']:,}")
        out.append("|" + "|".join(f" {c} " if c else " " for c in cells) + "|")
    return "\n".join(out)


def run(argv) -> int:
    parser = BenchParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--blocks", default=",".join(map(str, BLOCKS)), help="paged block sizes B (positions)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--markdown", action="store_true", help="print the table as docs/serving.md has it")
    parser.add_argument("--plot", default=str(DEFAULT_PLOT), help="the PNG to write ('' for none)")
    args = parser.parse_args(argv)
    blocks = _blocks(args.blocks)
    if args.plot and not Path(args.plot).parent.is_dir():
        raise BenchError(f"--plot {args.plot}: no such directory")
    rows = measure(args.requests, args.seed, blocks)
    if args.plot:
        plot(rows, Path(args.plot))
    if args.json:
        print(json.dumps({"rows": rows, "plot": args.plot or None}))
        return 0
    if args.markdown:
        print(markdown(rows))
        return 0
    print(f"{args.requests} requests a mix (seed {args.seed}), all waiting from the start, first come first served; "
          f"blocks reserved on admission for every position")
    print(markdown(rows))
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def main(argv=None) -> int:
    return bench_main(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
