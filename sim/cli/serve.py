"""``lockstep serve-bench``: replay a request trace on a design through the continuous-batching scheduler.

A standalone click command; sim/cli/commands.py registers it on the ``lockstep`` group. The requests
come from a trace file (JSON Lines, docs/serving.md) or a seeded Poisson generator; a list of rates
sweeps the generator and ``--plot`` draws throughput against latency. Every error a user can cause
(a bad option, a bad trace line, a request that can never fit) ends as one line
``lockstep: error: ...`` on stderr and exit status 1, before any pass runs; the plot is written
whole or not at all.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from golden.errors import InputError

from ..numbers import count, number, quantity
from .design import design_options
from .design import load as load_design
from .errors import friendly
from .model import Number

__all__ = ["MAX_RATES", "SERVE_BACKENDS", "serve_bench_cmd"]

#: The backends serve-bench runs: ``isa`` schedules and runs every pass on the instruction-level model
#: (sim.serve.scheduler.executor); a simulator replays that schedule on the decode top level and checks
#: every pass's tokens and cycles (sim.serve.rtl.confirm_on_rtl).
SERVE_BACKENDS = ("isa", "verilator", "icarus", "amaranth")
#: The most rates one sweep takes.
MAX_RATES = 64
#: Requests the Poisson generator draws by default, and its default rate (requests a second).
DEFAULT_REQUESTS = 32
DEFAULT_RATE = "1000"


def _rates(text: str) -> list[float]:
    """``--rate R[,R...]``: positive finite requests/s, at most :data:`MAX_RATES`; InputError naming it."""
    out = []
    for part in str(text).split(","):
        try:
            r = float(part.strip())
        except ValueError:
            raise InputError(f"--rate takes positive numbers of requests a second separated by commas, not "
                             f"{text!r}") from None
        if not math.isfinite(r) or r <= 0:
            raise InputError(f"--rate must be positive and finite (requests a second), not {part.strip()}")
        out.append(r)
    if len(out) > MAX_RATES:
        raise InputError(f"--rate takes at most {MAX_RATES} rates, not {len(out)}")
    if len(set(out)) != len(out):
        raise InputError(f"--rate {text}: a rate repeats")
    return sorted(out)


def _ms(v) -> str:
    return "-" if v is None else number(v * 1e3)


@click.command("serve-bench")
@click.option("--model", "model_dir", default=None, metavar="DIR", help="Checkpoint directory (default: the demo "
              "model).")
@design_options("demo")
@click.option("--backend", type=click.Choice(SERVE_BACKENDS), default="isa", show_default=True,
              help="isa: every pass on the instruction-level model, its cycles predicted by the cycle model; "
                   "verilator, icarus, amaranth: that schedule replayed on the RTL, every pass's tokens and cycles "
                   "checked, the times measured.")
@click.option("--trace", "trace_path", default=None, metavar="FILE.jsonl",
              help="Replay this trace (JSON Lines: docs/serving.md) instead of generating one.")
@click.option("--rate", "rate_text", default=None, metavar="R[,R...]",
              help=f"Poisson arrivals at R requests a second of simulated time (default {DEFAULT_RATE}); several "
                   f"rates: one run each, a row each (and --plot).")
@click.option("--requests", "n_requests", type=Number(int, 1, 1_000_000), default=DEFAULT_REQUESTS,
              show_default=True, help="Requests the generator draws per rate.")
@click.option("--seed", type=Number(int, 0, 2**63 - 1), default=0, show_default=True, help="The generator's seed.")
@click.option("--prompt-len", "prompt_len", default="4:16", show_default=True, metavar="N|LOW:HIGH",
              help="Prompt tokens per request: N, or uniform in LOW..HIGH (random token ids).")
@click.option("--output-len", "output_len", default="8:32", show_default=True, metavar="N|LOW:HIGH",
              help="New tokens per request: N, or uniform in LOW..HIGH.")
@click.option("--max-running", type=Number(int, 1), default=None,
              help="Most sequences running at once (default: every KV slot the design holds).")
@click.option("--plot", "plot_path", default=None, metavar="FILE.png",
              help="Draw served tokens/s against latency over the rates (PNG).")
@click.option("--check/--no-check", default=True, show_default=True,
              help="Check every request's tokens against the golden integer model running its prompt alone.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (every request's tokens and times).")
@friendly
def serve_bench_cmd(model_dir, hw, settings, backend, trace_path, rate_text, n_requests, seed, prompt_len,
                    output_len, max_running, plot_path, check, quiet, as_json):
    """Serve a request trace on a design: continuous batching with chunked prefill, in simulated time.

    Reports time to first token, time per output token and end-to-end latency (p50/p90/p99), the
    tokens/s served and the array's utilisation, at the design's clock.
    """
    from ..runtime import prepare
    from ..serve.requests import Lengths, check_requests, poisson_trace, read_trace
    from ..serve.scheduler import executor, serve
    from .model import load_model

    design = load_design(hw, settings, rtl=True)
    config = design.config
    ctx = click.get_current_context()
    generator_options = [o for o in ("n_requests", "seed", "prompt_len", "output_len")
                         if ctx.get_parameter_source(o) != click.core.ParameterSource.DEFAULT]
    if trace_path is not None and (rate_text is not None or generator_options):
        given = "--rate" if rate_text is not None else "--" + generator_options[0].replace("_", "-").replace(
            "n-requests", "requests")
        raise InputError(f"--trace replays a file; {given} is for the generator: give one or the other")
    rates = _rates(DEFAULT_RATE if rate_text is None else rate_text) if trace_path is None else [None]
    lengths = (Lengths.parse(prompt_len, "--prompt-len"), Lengths.parse(output_len, "--output-len"))
    if plot_path is not None:
        where = Path(plot_path)
        if where.is_dir():
            raise InputError(f"--plot {plot_path}: is a directory")
        if not where.parent.is_dir():
            raise InputError(f"--plot {plot_path}: no such directory {str(where.parent)!r}")
        if not plot_path.lower().endswith(".png"):
            raise InputError(f"--plot {plot_path}: the plot is a PNG file (name it .png)")
    ckpt = load_model(model_dir)
    mc = ckpt.config
    from golden.attention import MAX_CONTEXT_LIMIT

    max_context = min(mc.max_context, MAX_CONTEXT_LIMIT)      # the integer model's (IntModel.max_context)
    if trace_path is None:
        need = lengths[0].high + lengths[1].high - 1
        if need > max_context:
            raise InputError(f"--prompt-len {prompt_len} and --output-len {output_len}: the longest request needs "
                             f"{need} positions, more than a sequence's KV slot holds (max_context {max_context})")
        traces = [poisson_trace(requests=n_requests, rate=r, clock_hz=config.clock_hz, prompt=lengths[0],
                                output=lengths[1], vocab_size=mc.vocab_size, seed=seed) for r in rates]
    else:
        encode = ckpt.tokenizer.encode if ckpt.tokenizer is not None else None
        traces = [read_trace(trace_path, clock_hz=config.clock_hz, encode=encode)]
    for t in traces:         # every request checked before the model is compiled
        check_requests(t, max_context=max_context, vocab_size=mc.vocab_size)
    compiled = prepare(ckpt, config)
    first = executor("isa", compiled)       # the scheduler's passes; an RTL backend replays them (below)
    if backend != "isa":
        from ..flows.decode import top_params

        top_params(compiled)                # CompileError for a model the design's top level cannot run
    slots = first.kv_slots
    if max_running is not None and max_running > slots:
        raise InputError(f"--max-running must be at most {slots} (the KV slots design {design.name} holds for this "
                         f"model), not {max_running}")
    head = (f"model {ckpt.path.name} ({mc.family}) on design {design.name}{' (with --set)' if settings else ''}: "
            f"{config.describe()}, backend {backend}; "
            + (f"paged KV: {compiled.kv_blocks} blocks of {config.kv_block} positions" if config.kv_block else
               f"{slots} KV slots") + f", passes of at most {first.max_rows} rows")
    what = (f"trace {trace_path}: {count(len(traces[0]))} requests" if trace_path is not None else
            f"Poisson arrivals (seed {seed}), {count(n_requests)} requests a rate, prompts {lengths[0]} tokens, "
            f"outputs {lengths[1]} tokens")
    if not as_json:
        click.echo(head)
        click.echo(what)
    total = sum(len(t) for t in traces)
    reports = []

    def run_all(advance):
        for i, (rate, trace) in enumerate(zip(rates, traces, strict=True)):
            ex = first if i == 0 else executor("isa", compiled)
            done = [0]

            def on_pass(finished, _all, done=done):
                advance(finished - done[0])
                done[0] = finished
            report = serve(trace, ex, max_running=max_running, on_pass=on_pass)
            if backend != "isa":
                from ..serve.rtl import confirm_on_rtl

                if not (quiet or as_json):
                    click.echo(f"replaying {count(len(report.passes))} passes on {backend} ...", err=True)
                report = confirm_on_rtl(report, compiled, backend)
            reports.append((rate, report))

    if quiet or as_json:
        run_all(lambda n: None)
    else:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        with Progress("serve", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("requests", total=total)
            run_all(lambda n: bar.advance(task, n))
    mismatched = []
    if check:
        from golden.int_model import generate_int

        alone: dict = {}
        for trace, (_, rep) in zip(traces, reports, strict=True):
            for r, res in zip(trace, rep.results, strict=True):
                key = (r.prompt, r.max_new_tokens)
                if key not in alone:
                    alone[key] = generate_int(compiled.model, list(r.prompt), r.max_new_tokens)
                if res.tokens != alone[key]:
                    mismatched.append(r.id)
    points = [{"rate": rate, "summary": rep.summary()} for rate, rep in reports]
    if plot_path is not None:
        from ..serve.plot import plot_rate_sweep

        plot_rate_sweep(points, plot_path, title=f"{ckpt.path.name} on {design.name}, backend {backend}: "
                                                 f"{count(n_requests)} requests a rate, prompts {lengths[0]}, "
                                                 f"outputs {lengths[1]}")
    if as_json:
        out = {"model": ckpt.path.name, "design": {"name": design.name, "settings": list(settings)},
               "backend": backend, "kv_slots": slots, "kv_block": config.kv_block,
               "kv_blocks": compiled.kv_blocks, "max_rows": first.max_rows,
               "clock_hz": config.clock_hz,
               "trace": trace_path, "seed": None if trace_path else seed,
               "runs": [{"rate": rate, **rep.as_dict()} for rate, rep in reports], "plot": plot_path,
               "checked": check, "bit_exact": (not mismatched) if check else None}
        click.echo(json.dumps(out, allow_nan=False))
        _fail(mismatched, [rep.cycle_exact for _, rep in reports])
        return
    header = ("rate/s", "requests", "tokens/s", "array", "rows/pass", "TTFT p50", "p90", "p99", "TPOT p50", "p90",
              "p99", "latency p50", "p90", "p99")
    table = [header]
    for rate, rep in reports:
        s = rep.summary()
        table.append(("trace" if rate is None else number(rate), count(s["requests"]), number(s["tokens_per_s"]),
                      f"{100 * s['array_utilisation']:.1f} %", number(s["mean_rows_per_pass"]),
                      *(_ms(s[k][q]) for k in ("ttft_s", "tpot_s", "latency_s") for q in ("p50", "p90", "p99"))))
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    click.echo("times in ms of simulated time at " + quantity(config.clock_hz, "Hz") + "; tokens/s over the span "
               "from the first arrival to the last token; array: MACs done / (busy cycles x R x C)")
    for r in table:
        click.echo("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
    exact = [rep.cycle_exact for _, rep in reports]
    click.echo("cycles     : " + ("predicted by the cycle model (the isa backend measures none)" if all(
        e is None for e in exact) else "measured, equal to the prediction in every pass" if all(exact) else
        "measured, DIFFERENT from the prediction"))
    tokens = sum(rep.tokens for _, rep in reports)
    click.echo("tokens     : " + (f"all {count(tokens)} equal to the golden integer model running each prompt alone"
                                  if check and not mismatched else "not checked (--no-check)" if not check else
                                  f"{len(mismatched)} requests DIFFERENT from the golden integer model"))
    if plot_path is not None:
        click.echo(f"plot       : {plot_path}")
    _fail(mismatched, exact)


def _fail(mismatched: list[str], exact: list) -> None:
    if mismatched:
        raise InputError(f"request {mismatched[0]}'s tokens differ from the golden integer model running its prompt "
                         f"alone ({len(mismatched)} requests differ)")
    if any(e is False for e in exact):
        raise InputError("a pass's measured cycles differ from the cycle model's prediction")
