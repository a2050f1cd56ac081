#!/usr/bin/env python3
"""Benchmark: speculative decoding's speedup against the draft length k, for both drafters, on two machine balances.

For each design (default ``demo-narrow``, whose weight port delivers one row of a tile a cycle, and
``demo``, a whole tile a cycle), each drafter (``draft``: the draft model golden/data/draft, its
passes on the same design and counted; ``lookup``: prompt lookup on the host, no cycles) and each k
(default 1 to 8), the demo model decodes ``--tokens`` new tokens after each of ``--prompts`` prompts
of ``--prompt-len`` tokens from the demo corpus's held-out text (never trained or calibrated on;
evenly spaced windows, :func:`golden.quantize.text_windows`) with
:func:`sim.speculative.run.run_speculative` on the instruction-level model. Every run's tokens must
equal plain greedy decoding's on the same backend, else the script says where and exits 1.

Aggregated over the prompts, per (design, drafter, k), over the decode phase (the tokens after the
first, which the prefill gives both ways; docs/speculative.md): the acceptance rate (accepted over
proposed drafts), tokens per target (verify) pass, draft and verify cycles per token, plain decoding's
cycles per token at the same positions, the speedup (all prompts' plain cycles over all their
speculative cycles) and tokens/s at the design's clock. Per (design, drafter): the best k and where
the speedup falls below 1 (break-even, interpolated between the two k around it). Per design: what a
verify pass of M rows costs (``pass_cycles`` at the run's middle position), the reason the designs
differ. On ``isa`` or ``golden`` the cycles are the cycle model's prediction of each pass (nothing
measured); on a simulator (``--backend verilator|icarus|amaranth``) every run is decided on the
instruction-level model and then replayed on the RTL with the draft model resident beside the target,
plain decoding's steps after it (:func:`sim.speculative.rtl.confirm_speculative_on_rtl`): the tokens
and cycles of every pass measured and checked equal, else the script stops naming the pass.

    .venv/bin/python scripts/bench_speculative.py [--hw NAME]... [--drafter draft|lookup]... [--k K]...
        [--prompts N] [--prompt-len L] [--tokens N] [--backend isa|golden|verilator|icarus|amaranth]
        [--json] [--plot FILE.png]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from sim.cli.bench import BenchError, BenchParser, bench_main

PROG = "bench_speculative"
DESIGNS = ("demo-narrow", "demo")
KS = tuple(range(1, 9))
PROMPTS = 5
PROMPT_LEN = 16
TOKENS = 64
#: The issue's target (issue 18): the draft model's tokens/s over plain decoding at its best k, on a
#: design whose weight port delivers one weight row a cycle.
TARGET_SPEEDUP = 2.0
DEFAULT_PLOT = Path(__file__).resolve().parents[1] / "docs" / "plots" / "speculative.png"


def held_out_prompts(tokenizer, count: int, length: int) -> list[list[int]]:
    """``count`` prompts of ``length`` tokens at evenly spaced offsets of the demo corpus's held-out text."""
    from golden.quality import held_out_tokens
    from golden.quantize import text_windows

    return text_windows(held_out_tokens(tokenizer), length, count)


def pass_costs(compiled, draft, position: int, rows) -> dict:
    """What a pass costs on ``compiled``'s design at ``position``: the target's passes of each M in
    ``rows`` (positions ``position`` .. ``position + M - 1``), in all and their GEMM instructions' share,
    and the draft model's single-row step."""
    from sim.machine.cycles import pass_cycles

    def cost(c, m):
        return pass_cycles(c.program, c.model.config, c.config, positions=list(range(position, position + m)))

    target = {m: cost(compiled, m) for m in rows}
    return {"position": position, "target": {m: c.total for m, c in target.items()},
            "gemm": {m: sum(o.cycles for o in c.ops if o.op == "gemm") for m, c in target.items()},
            "draft_step": cost(draft, 1).total if draft is not None else None}


def _ratio(a, b):
    return a / b if b else None


def aggregate(design: str, drafter: str, k: int, clock_hz: int, reports) -> dict:
    """One point of the sweep from its runs' :class:`sim.speculative.report.SpeculativeReport`."""
    runs = [{"proposed": r.proposed, "accepted": r.accepted, "rounds": r.rounds, "decode_tokens": r.decode_tokens,
             "draft_cycles": r.draft_cycles, "verify_cycles": r.verify_cycles, "plain_cycles": r.plain_cycles,
             "speedup": r.speedup, "identical": r.identical} for r in reports]
    tot = {key: sum(run[key] for run in runs) for key in
           ("proposed", "accepted", "rounds", "decode_tokens", "draft_cycles", "verify_cycles", "plain_cycles")}
    n = tot["decode_tokens"]
    spec = tot["draft_cycles"] + tot["verify_cycles"]
    per = {"draft": _ratio(tot["draft_cycles"], n), "verify": _ratio(tot["verify_cycles"], n),
           "total": _ratio(spec, n), "plain": _ratio(tot["plain_cycles"], n)}
    return {"design": design, "drafter": drafter, "k": k, "clock_hz": clock_hz, **tot, "speculative_cycles": spec,
            "acceptance_rate": _ratio(tot["accepted"], tot["proposed"]),
            "tokens_per_target_pass": _ratio(n, tot["rounds"]),
            "cycles_per_verify_pass": _ratio(tot["verify_cycles"], tot["rounds"]),
            "cycles_per_token": per, "speedup": _ratio(tot["plain_cycles"], spec),
            "tokens_per_second": {"speculative": _ratio(clock_hz, per["total"]),
                                  "plain": _ratio(clock_hz, per["plain"])},
            "identical": all(run["identical"] for run in runs), "runs": runs}


def summarize(points: list[dict]) -> list[dict]:
    """Per (design, drafter): the best k (highest speedup) and where the speedup falls below 1:
    ``stops_paying`` the first k of the sweep past a paying one with a speedup under 1 (None if it pays
    at every k, or at none), ``break_even`` the k where the line between those two crosses 1."""
    out = []
    for key in dict.fromkeys((p["design"], p["drafter"]) for p in points):
        mine = sorted((p for p in points if (p["design"], p["drafter"]) == key), key=lambda p: p["k"])
        best = max(mine, key=lambda p: p["speedup"])
        stops = break_even = None
        for prev, cur in zip(mine, mine[1:], strict=False):
            if prev["speedup"] >= 1 > cur["speedup"]:
                stops = cur["k"]
                fall = (prev["speedup"] - 1) / (prev["speedup"] - cur["speedup"])
                break_even = prev["k"] + fall * (cur["k"] - prev["k"])
                break
        pays = [p["k"] for p in mine if p["speedup"] >= 1]
        out.append({"design": key[0], "drafter": key[1], "ks": [p["k"] for p in mine], "best_k": best["k"],
                    "best_speedup": best["speedup"],
                    "best_tokens_per_second": best["tokens_per_second"]["speculative"],
                    "plain_tokens_per_second": best["tokens_per_second"]["plain"],
                    "pays_at": pays, "stops_paying": stops, "break_even": break_even})
    return out


def verdict(s: dict) -> str:
    """Where a (design, drafter)'s speculative decoding pays, in words."""
    if not s["pays_at"]:
        return "never pays: below 1x at every k swept"
    if s["stops_paying"] is not None:
        return f"stops paying at k = {s['stops_paying']} (break-even near k = {s['break_even']:.1f})"
    if len(s["pays_at"]) < len(s["ks"]):
        return f"pays at k = {', '.join(map(str, s['pays_at']))} only"
    return "pays at every k swept"


def commit() -> str:
    """The checkout's commit (:func:`sim.perf.plot.checkout_commit`)."""
    from sim.perf.plot import checkout_commit

    return checkout_commit(Path(__file__).resolve().parent)


def _grid(head, rows) -> list[str]:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    fmt = " | ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*head).rstrip(), "-+-".join("-" * w for w in widths), *(fmt.format(*r).rstrip() for r in rows)]


def _pct(x) -> str:
    return "-" if x is None else f"{x:.1%}"


def table(result: dict) -> str:
    """The sweep as text (what the script prints on stdout)."""
    def n(x):
        return "-" if x is None else f"{x:,.0f}"

    if result["measured"]:
        cycles = (f"cycles MEASURED on {result['backend']} (RTL cycle counter; each run decided on isa and replayed, "
                  f"plain decoding's steps too), every pass equal to the cycle model's prediction")
    else:
        cycles = "cycles PREDICTED by the cycle model (nothing measured)"
    lines = [f"demo model, speculative decoding on {result['backend']}: {cycles}; {len(result['prompts'])} "
             f"prompt(s) of {result['prompt_tokens']} tokens from the demo corpus's held-out text, "
             f"{result['new_tokens']} new tokens each; every run's tokens identical to plain greedy decoding; "
             f"commit {result['commit']}",
             "per token: over the decode phase (the tokens after the first, all prompts together); speedup = plain "
             "cycles / (draft + verify cycles)", ""]
    head = ["design", "drafter", "k", "accepted", "tokens/pass", "draft cyc/token", "verify cyc/token",
            "cycles/verify pass", "plain cyc/token", "speedup", "tokens/s", "plain tokens/s"]
    rows = [[p["design"], p["drafter"], str(p["k"]), _pct(p["acceptance_rate"]), f"{p['tokens_per_target_pass']:.2f}",
             n(p["cycles_per_token"]["draft"]), n(p["cycles_per_token"]["verify"]), n(p["cycles_per_verify_pass"]),
             n(p["cycles_per_token"]["plain"]), f"{p['speedup']:.3f}x", n(p["tokens_per_second"]["speculative"]),
             n(p["tokens_per_second"]["plain"])] for p in result["points"]]
    lines += [*_grid(head, rows), ""]
    for s in result["summary"]:
        lines.append(f"{s['design']}, {s['drafter']}: best k = {s['best_k']}, {s['best_speedup']:.3f}x "
                     f"({n(s['best_tokens_per_second'])} tokens/s against {n(s['plain_tokens_per_second'])} plain); "
                     f"{verdict(s)}")
    lines.append("")
    ms = sorted({m for d in result["designs"] for m in d["pass_cycles"]["target"]})
    lines.append(f"what a target pass of M rows costs (a verify pass: M = k + 1), in cycles, its rows at positions "
                 f"{result['designs'][0]['pass_cycles']['position']} ..; the draft model's single-row step beside it")
    head = ["design", "weight rows/cycle", *(f"M = {m}" for m in ms), f"M = {ms[-1]} / M = 1", "draft step"]
    rows = []
    for d in result["designs"]:
        t, g = d["pass_cycles"]["target"], d["pass_cycles"]["gemm"]
        rows.append([d["name"], str(d["weight_rows_per_cycle"]), *(n(t[m]) for m in ms), f"{t[ms[-1]] / t[1]:.2f}x",
                     n(d["pass_cycles"]["draft_step"])])
        rows.append(["  of which GEMMs", "", *(n(g[m]) for m in ms), f"{g[ms[-1]] / g[1]:.2f}x", ""])
    lines += _grid(head, rows)
    if result["targets"]:
        lines.append("")
    for t in result["targets"]:
        lines.append(f"target (issue 18) on {t['design']} (1 weight row a cycle): the draft model >= "
                     f"{TARGET_SPEEDUP:g}x tokens/s at its best k: {'meets' if t['met'] else 'MISSES'} "
                     f"({t['speedup']:.3f}x at k = {t['k']}) -- "
                     + ("cycles measured on the RTL" if result["measured"] else "cycles predicted, not measured"))
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """Speedup against k, one line per (design, drafter), the break-even line at 1x, each curve's best k
    and the k where it falls below 1 marked; tokens/s against k beside it. Written to ``path`` atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sim.perf.plot import DPI, save_png

    points, designs = result["points"], [d["name"] for d in result["designs"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 3.8), dpi=DPI, layout="constrained")
    style = {"draft": ("o", "-"), "lookup": ("s", "--")}
    left.axhline(1.0, color="black", lw=1, ls=":", label="break-even (plain decoding)", zorder=1)
    for s in result["summary"]:
        mine = [p for p in points if (p["design"], p["drafter"]) == (s["design"], s["drafter"])]
        colour = f"C{designs.index(s['design'])}"
        marker, ls = style.get(s["drafter"], ("^", "-."))
        ks = [p["k"] for p in mine]
        label = f"{s['design']}, {s['drafter']}"
        best = f"{label}: best k={s['best_k']}, {s['best_speedup']:.2f}x{'' if s['pays_at'] else ', never pays'}"
        left.plot(ks, [p["speedup"] for p in mine], marker=marker, ls=ls, color=colour, label=best, zorder=3)
        right.plot(ks, [p["tokens_per_second"]["speculative"] for p in mine], marker=marker, ls=ls, color=colour,
                   label=label, zorder=3)
        left.scatter([s["best_k"]], [s["best_speedup"]], marker="*", s=160, color=colour, edgecolor="black",
                     zorder=4)
        if s["break_even"] is not None:
            left.scatter([s["break_even"]], [1.0], marker="X", s=70, color=colour, edgecolor="black", zorder=4)
            left.annotate(f"stops paying at k={s['stops_paying']}\n(break-even k~{s['break_even']:.1f})",
                          (s["break_even"], 1.0), textcoords="offset points", xytext=(6, 6), fontsize=6.5,
                          color=colour)
    for i, d in enumerate(result["designs"]):
        plain = next(p["tokens_per_second"]["plain"] for p in points if p["design"] == d["name"])
        right.axhline(plain, color=f"C{i}", lw=1, ls=":", label=f"{d['name']}, plain decoding")
    ks = sorted({p["k"] for p in points})
    left.set_xlim(ks[0] - 0.4, ks[-1] + 0.6)
    left.set_ylim(0, 1.5 * max(p["speedup"] for p in points))
    left.set_ylabel("speedup over plain decoding (cycles)", fontsize=7)
    right.set_ylim(0, 1.45 * max(max(p["tokens_per_second"].values()) for p in points))
    right.set_ylabel(f"tokens/s at {points[0]['clock_hz'] / 1e6:g} MHz", fontsize=7)
    left.legend(fontsize=6.5, loc="upper left", title="* best k, X where it stops paying", title_fontsize=6.5)
    right.legend(fontsize=6.5, loc="upper left", ncol=2)
    for ax in (left, right):
        ax.set_xticks(ks)
        ax.set_xlabel("draft length k (tokens drafted a round; the verify pass has k + 1 rows)", fontsize=7)
        ax.tick_params(labelsize=6.5)
        ax.grid(True, alpha=0.25)
    how = "cycles measured, equal to predicted" if result["measured"] else "cycles predicted"
    fig.suptitle(f"demo model, speculative decoding: {len(result['prompts'])} held-out prompts x "
                 f"{result['new_tokens']} tokens on {result['backend']} ({how}), commit {result['commit']}",
                 fontsize=8)
    save_png(fig, path)


def _progress(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def check_args(args, backends, drafters) -> None:
    """The checks that need no model: one BenchError each."""
    if args.backend not in backends:
        raise BenchError(f"--backend {args.backend}: not yet (speculative decoding runs on {', '.join(backends)})")
    for d in args.drafter:
        if d not in drafters:
            raise BenchError(f"--drafter must be one of {', '.join(drafters)}, not {d!r}")
    for option, values in (("--hw", args.hw), ("--drafter", args.drafter), ("--k", args.k)):
        twice = [v for i, v in enumerate(values) if v in values[:i]]
        if twice:
            raise BenchError(f"{option} {twice[0]} is given twice")
    for k in args.k:
        if k < 1:
            raise BenchError(f"--k must be a positive integer, not {k}")
    if args.prompts < 1:
        raise BenchError(f"--prompts must be a positive integer, not {args.prompts}")
    if args.prompt_len < 1:
        raise BenchError(f"--prompt-len must be a positive integer, not {args.prompt_len}")
    if args.tokens < 2:
        raise BenchError(f"--tokens must be at least 2 (the prefill gives the first new token both ways; the speedup "
                         f"is over the tokens after it), not {args.tokens}")
    if args.plot:
        path = Path(args.plot)
        if path.suffix.lower() != ".png":
            raise BenchError(f"--plot must name a .png file, not {args.plot!r}")
        if not (path.parent if str(path.parent) else Path(".")).is_dir():
            raise BenchError(f"--plot {args.plot}: no such directory {str(path.parent)!r}")


def run(argv) -> int:
    from golden.speculative import DRAFTERS
    from sim.runtime import RTL_BACKENDS
    from sim.speculative.runners import BACKENDS

    ap = BenchParser(prog=PROG, description=__doc__.splitlines()[0])
    ap.add_argument("--hw", action="append", default=None, metavar="NAME",
                    help=f"a design the RTL builds (repeatable; default {' and '.join(DESIGNS)})")
    ap.add_argument("--drafter", action="append", default=None, metavar="|".join(DRAFTERS),
                    help=f"a drafter (repeatable; default {' and '.join(DRAFTERS)})")
    ap.add_argument("--k", action="append", type=int, default=None, metavar="K",
                    help=f"a draft length (repeatable; default {KS[0]} to {KS[-1]}; at most the design's max_m - 1)")
    ap.add_argument("--prompts", type=int, default=PROMPTS, help=f"prompts from the held-out text (default {PROMPTS})")
    ap.add_argument("--prompt-len", type=int, default=PROMPT_LEN, help=f"tokens a prompt (default {PROMPT_LEN})")
    ap.add_argument("--tokens", type=int, default=TOKENS, help=f"new tokens after each prompt (default {TOKENS})")
    ap.add_argument("--backend", default="isa",
                    help=f"isa (default: the instruction-level model), golden (the integer model): cycles predicted; "
                         f"or a simulator ({', '.join(RTL_BACKENDS)}): every run decided on isa, then replayed on the "
                         f"RTL with plain decoding's steps, cycles measured (and checked equal to predicted)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--plot", default=str(DEFAULT_PLOT), metavar="FILE.png",
                    help="the plot of speedup and tokens/s against k (default docs/plots/speculative.png; '' for none)")
    args = ap.parse_args(argv)
    args.hw = args.hw or list(DESIGNS)
    args.drafter = args.drafter or list(DRAFTERS)
    args.k = sorted(args.k or KS)
    check_args(args, (*BACKENDS, *RTL_BACKENDS), DRAFTERS)
    replay = args.backend in RTL_BACKENDS
    decide = "isa" if replay else args.backend

    from golden.checkpoint import draft_model_path, load_checkpoint, load_demo_model
    from golden.errors import LockstepError
    from sim.design import load_design
    from sim.machine.resident import resident
    from sim.runtime import check_request, prepare
    from sim.speculative.options import check_draft_len_for, check_draft_model
    from sim.speculative.rtl import confirm_speculative_on_rtl
    from sim.speculative.run import run_speculative

    ckpt = load_demo_model()
    draft_ckpt = load_checkpoint(draft_model_path()) if "draft" in args.drafter else None
    if draft_ckpt is not None:
        check_draft_model(ckpt, draft_ckpt)
    prompts = held_out_prompts(ckpt.tokenizer, args.prompts, args.prompt_len)
    if len(prompts) < args.prompts:
        raise BenchError(f"--prompts {args.prompts}: the held-out text holds {len(prompts)} distinct windows of "
                         f"{args.prompt_len} tokens")
    if min(len(p) for p in prompts) < args.prompt_len:
        raise BenchError(f"--prompt-len {args.prompt_len}: the held-out text has {len(prompts[0])} tokens")
    designs, compiled = [], {}
    for name in args.hw:
        config = load_design(name).rtl_config()
        target = prepare(ckpt, config)
        try:
            for p in prompts:
                check_request(target, decide, p, args.tokens)
        except LockstepError as exc:
            raise BenchError(f"--prompt-len {args.prompt_len} and --tokens {args.tokens} on {name}: {exc}") from None
        for k in args.k:
            try:
                check_draft_len_for(k, target)
            except LockstepError as exc:
                raise BenchError(f"--k {k} on {name}: {str(exc).removeprefix('--draft-len: ')}") from None
        # the draft in the same accelerator's memories as the target (compiled beside it; one line if it does not fit)
        pair = resident(target, prepare(draft_ckpt, config)) if draft_ckpt is not None else None
        draft = pair.draft if pair is not None else None
        compiled[name] = (target, pair)
        designs.append({"name": name, "weight_rows_per_cycle": config.weight_rows_per_cycle,
                        "array": [config.array_rows, config.array_cols], "max_m": target.max_rows,
                        "clock_hz": config.clock_hz,
                        "pass_cycles": pass_costs(target, draft, args.prompt_len + args.tokens // 2,
                                                  sorted({1, *(k + 1 for k in args.k)}))})
    points, total, started, at_commit = [], len(args.hw) * len(args.drafter) * len(args.k), time.monotonic(), commit()
    _progress(f"{total} points ({', '.join(args.hw)} x {', '.join(args.drafter)} x k = "
              f"{', '.join(map(str, args.k))}), {len(prompts)} prompt(s) of {args.tokens} new tokens each, on "
              f"{args.backend}")
    for name in args.hw:
        target, pair = compiled[name]
        draft = pair.draft if pair is not None else None
        for drafter in args.drafter:
            for k in args.k:
                t0 = time.monotonic()
                reports = []
                for i, p in enumerate(prompts):
                    r = run_speculative(target, decide, p, args.tokens, drafter=drafter, draft_len=k,
                                        draft=draft if drafter == "draft" else None)
                    if not r.identical:
                        pairs = enumerate(zip(r.tokens, r.plain_tokens, strict=False))
                        at = next((j for j, (a, b) in pairs if a != b), min(len(r.tokens), len(r.plain_tokens)))
                        raise BenchError(f"{name}, {drafter}, k = {k}, prompt {i}: the speculative tokens differ from "
                                         f"plain greedy decoding's at new token {at}")
                    if replay:
                        r = confirm_speculative_on_rtl(r, pair if drafter == "draft" else target, args.backend)
                    reports.append(r)
                point = aggregate(name, drafter, k, target.config.clock_hz, reports)
                points.append(point)
                _progress(f"[{len(points)}/{total}] {name}, {drafter}, k = {k}: {point['speedup']:.3f}x, "
                          f"acceptance {_pct(point['acceptance_rate'])} ({time.monotonic() - t0:.1f} s; "
                          f"{time.monotonic() - started:.0f} s in all)")
    summary = summarize(points)
    targets = [{"design": s["design"], "k": s["best_k"], "speedup": s["best_speedup"],
                "met": s["best_speedup"] >= TARGET_SPEEDUP} for s in summary
               if s["drafter"] == "draft" and next(d for d in designs if d["name"] == s["design"])[
                   "weight_rows_per_cycle"] == 1]
    result = {"backend": args.backend, "measured": replay, "commit": at_commit,
              "prompts": [{"tokens": p, "text": ckpt.tokenizer.decode(p)} for p in prompts],
              "prompt_tokens": args.prompt_len, "new_tokens": args.tokens, "designs": designs, "points": points,
              "summary": summary, "targets": targets, "target_speedup": TARGET_SPEEDUP, "plot": args.plot or None}
    if args.plot:
        plot(result, Path(args.plot))
    print(json.dumps(result) if args.json else table(result), flush=True)
    return 0


def main(argv=None) -> int:
    return bench_main(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
