"""``lockstep estimate``: tokens/s of a model on a hardware description, with its roofline.

A standalone click command; sim/cli/commands.py registers it on the ``lockstep`` group. Every error a user
can cause (an unknown model or preset, a bad TOML file, a hardware number outside its bounds, a
context or batch past its cap, a model that fits no memory level, a bad speculative option) ends as
one line ``lockstep: error: ...`` on stderr and exit status 1, before any work (but a draft that does
not fit beside the target, found as the projection places both); the JSON never holds NaN or Infinity.

``--speculative`` adds the projection of greedy speculative decoding (:mod:`sim.perf.speculative`):
a draft model (``--draft``), a per-token acceptance (``--acceptance``, given or ``measured`` on the
demo corpus's held-out text by the two checkpoints' integer models), a draft length (``--draft-len``,
or the best of 1..max_m - 1), and optionally the acceptance needed to reach a rate (``--reach``).
"""

from __future__ import annotations

import json

import click

from golden.errors import InputError

from .design import design_options
from .design import load as load_design
from .errors import friendly
from .model import Number

# The commands import the layers below them (engine, runtime, perf, fpga, golden, hdl) when they run, not
# here: importing them all at start-up made every `lockstep` invocation about 3 s slower (`lockstep --help`
# took 0.6 s with them deferred and 3.6 s with them at module level, measured on this machine).

__all__ = ["estimate_cmd"]


@click.command("estimate")
@click.option("--model", "model", required=True, metavar="NAME_OR_DIR",
              help="A built-in model (gpt2, llama-2-7b, llama-2-70b, llama-3-8b, llama-3-70b, llama-3.1-70b, "
                   "llama-3.2-1b) or a checkpoint directory (its config.json).")
@design_options(None, "default: the first shipped design that holds the model, fewest chips first")
@click.option("--context", type=Number(int, 1), default=None,
              help="Tokens in the sequence; the estimate is the mean per token over its positions "
                   "(default: half the model's context, at most 2048; at most the model's max_context and "
                   "16777216).")
@click.option("--batch", type=Number(int, 1), default=1, show_default=True,
              help="Sequences decoded together, at most 65536 (a pass of B rows: every GEMM streams the B rows "
                   "through each weight tile).")
@click.option("--prompt", type=Number(int, 1), default=None,
              help="Also estimate the prefill of a prompt of this many tokens (B prompts with --batch B): "
                   "passes of the design's max_m rows, the time to the first token (TTFT).")
@click.option("--breakdown", is_flag=True, help="Also print where a step's cycles go, per op kind.")
@click.option("--speculative", is_flag=True,
              help="Also project greedy speculative decoding with --draft at --acceptance (docs/calibration.md): "
                   "k draft steps and one verify pass of k + 1 rows a pass.")
@click.option("--draft", default=None, metavar="NAME_OR_DIR",
              help="The draft model of --speculative: a built-in model (llama-3.2-1b, ...) or a checkpoint "
                   "directory (golden/data/draft).")
@click.option("--acceptance", default=None, metavar="A|measured",
              help="Per-token acceptance of --speculative, 0..1, or 'measured': the two checkpoints' integer "
                   "models' greedy agreement on the demo corpus's held-out text (default when both are "
                   "checkpoint directories).")
@click.option("--draft-len", type=Number(int, 1), default=None, metavar="K",
              help="Tokens drafted a pass, 1..max_m - 1 (default: every one tried, the best reported).")
@click.option("--reach", type=Number(float), default=None, metavar="TOKENS_PER_S",
              help="With --speculative: also solve for the least acceptance that reaches this rate (best k).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@friendly
def estimate_cmd(model, hw, settings, context, batch, prompt, breakdown, speculative, draft, acceptance,
                 draft_len, reach, as_json):
    """Estimate decode tokens/s of MODEL on design HW from the cycle model, with its roofline."""
    from ..design import designs_holding
    from ..perf.model import (
        HardwareError,
        check_workload,
        default_context,
        estimate,
        format_breakdown,
        format_estimate,
        format_prefill,
        place,
        prefill,
        resolve_model,
    )

    name, mc = resolve_model(model)
    context = default_context(mc) if context is None else context
    check_workload(mc, context=context, batch=batch, name=name)
    spec_args = _check_speculative(speculative, draft, acceptance, draft_len, reach, batch)
    chosen = None
    if hw is None:
        if settings:
            raise InputError("--set changes a design: name it with --hw")
        holding = designs_holding(mc, context=context, batch=batch, name=name)
        if not holding:
            raise InputError(f"no shipped design holds {name} at context {context}, batch {batch}: give one "
                             f"with --hw FILE (docs/design.md)")
        design, chosen = holding[0], holding
    else:
        design = load_design(hw, settings)
        try:
            place(mc, design.hardware, context=context, batch=batch, name=name)
        except HardwareError as exc:
            holding = designs_holding(mc, context=context, batch=batch, name=name)
            also = (f"; designs that hold it: {', '.join(d.name for d in holding)}" if holding else
                    "; no shipped design holds it")
            raise HardwareError(f"{exc}{also}") from None
    if speculative:   # every option checked before any work
        spec_args = _speculative_models(model, design, *spec_args)
    e = estimate(mc, design.hardware, context=context, batch=batch, name=name)
    pre = None
    if prompt is not None:
        pre = prefill(mc, design.hardware, prompt=prompt, batch=batch, chunk=_max_m(design), name=name,
                      split=e.kv_split)
    spec, spec_text = _speculative(model, (name, mc), design, context, *spec_args) if speculative else (None, "")
    if as_json:
        out = e.as_dict()
        if pre is not None:
            out["prefill"] = pre.as_dict()
        if spec is not None:
            out["speculative"] = spec
        out["design"] = {"name": design.name, "settings": list(settings), "chosen": chosen is not None}
        click.echo(json.dumps(out, allow_nan=False))   # estimate() refuses non-finite numbers
    else:
        if chosen is not None:
            others = ", ".join(d.name for d in chosen[1:])
            click.echo(f"design: {design.name}, the first shipped design that holds {name} (fewest chips first)"
                       + (f"; others that do: {others}" if others else ""))
        click.echo(format_estimate(e, design.hardware))
        if pre is not None:
            click.echo(format_prefill(pre))
        if breakdown:
            click.echo(format_breakdown(e))
        if spec is not None:
            click.echo(spec_text)


def _check_speculative(speculative, draft, acceptance, draft_len, reach, batch):
    """(draft, acceptance as a float or "measured" or None, draft_len, reach) after the checks that need
    no model: the speculative options go with --speculative, --draft is required, batch 1 only."""
    if not speculative:
        given = [o for o, v in (("--draft", draft), ("--acceptance", acceptance), ("--draft-len", draft_len),
                                ("--reach", reach)) if v is not None]
        if given:
            raise InputError(f"{given[0]} goes with --speculative")
        return None, None, None, None
    from ..perf.speculative import check_acceptance

    if draft is None:
        raise InputError("--speculative needs --draft NAME_OR_DIR (the draft model)")
    if batch != 1:
        raise InputError(f"--speculative projects one sequence (batch 1), not --batch {batch}")
    if reach is not None and reach <= 0:
        raise InputError(f"--reach must be a positive number of tokens/s, not {reach:g}")
    if acceptance is not None and acceptance.strip().lower() != "measured":
        try:
            value = float(acceptance)
        except ValueError:
            raise InputError(f"--acceptance must be a number from 0 to 1 or 'measured', not {acceptance!r}") from None
        try:
            acceptance = check_acceptance(value)
        except InputError:
            raise InputError(f"--acceptance must be a number from 0 to 1 or 'measured', not {acceptance!r}") from None
    elif acceptance is not None:
        acceptance = "measured"
    return draft, acceptance, draft_len, reach


def _speculative_models(model, design, draft, acceptance, draft_len, reach):
    """The checks that need the models or the design: the draft model known, an acceptance given
    unless both models are checkpoint directories (then it is measured), --draft-len within
    1..max_m - 1. Returns the arguments of :func:`_speculative` after the target's."""
    from pathlib import Path

    from golden.speculative import check_draft_len

    from ..perf.model import resolve_model

    if acceptance is None:
        if not (Path(model).is_dir() and Path(draft).is_dir()):
            raise InputError("--speculative needs --acceptance A (0..1); 'measured' needs two checkpoint directories")
        acceptance = "measured"

    max_k = _max_m(design) - 1
    if max_k < 1:
        raise InputError(f"design {design.name}: max_m {max_k + 1} leaves no room for a verify pass of 2 rows")
    if draft_len is not None:
        try:
            check_draft_len(draft_len, max_k + 1, "max_m")
        except InputError as exc:
            raise InputError(f"--draft-len: {exc} on {design.name}") from None
    try:
        resolved = resolve_model(draft)
    except InputError as exc:
        raise InputError(f"--draft: {exc}") from None
    return (draft, resolved), acceptance, draft_len, reach, max_k


def _speculative(model, target, design, context, draft, acceptance, draft_len, reach, max_k) -> tuple[dict, str]:
    """The projection of ``target`` ((name, ModelConfig) of ``model``) with ``draft`` ((its option,
    (name, ModelConfig))) as a JSON-able dict and as text."""
    from ..perf.speculative import (
        format_speculative,
        measured_acceptance,
        required_acceptance,
        speculative_estimate,
    )

    draft, (dname, dc) = draft
    measured = None
    if acceptance == "measured":
        measured = measured_acceptance(model, draft)
        acceptance = measured[0] / measured[1]
    s = speculative_estimate(target[1], dc, design.hardware, acceptance=acceptance, max_draft_len=max_k,
                             draft_len=draft_len, context=context, names=(target[0], dname))
    out = s.as_dict()
    text = format_speculative(s, measured=measured)
    if measured is not None:
        out["measured"] = {"agree": measured[0], "positions": measured[1]}
    if reach is not None:
        need = required_acceptance(s, reach)
        out["reach"] = {"tokens_per_s": reach, "acceptance": None if need is None else need[0],
                        "draft_len": None if need is None else need[1]}
        text += "\n" + (f"to reach   : {reach:g} tokens/s takes acceptance {need[0]:.4f} at k = {need[1]}"
                        if need is not None else
                        f"to reach   : {reach:g} tokens/s: no acceptance does, at "
                        + (f"any k of 1..{s.sweep[-1][0]}" if s.chosen else f"k = {s.draft_len}"))
    return out, text


def _max_m(design) -> int:
    """The rows a pass of ``design`` takes: its configuration's ``max_m`` (a design only the model
    evaluates: its [chip] ``max_m``, else the default configuration's)."""
    from hdl.config import DEFAULT

    if design.config is not None:
        return design.config.max_m
    m = design.tables.get("chip", {}).get("max_m", DEFAULT.max_m)
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise InputError(f"design {design.name}: [chip] max_m must be a positive integer, not {m!r}")
    return m
