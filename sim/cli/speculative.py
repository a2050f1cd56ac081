"""``lockstep run --speculative draft|lookup``: speculative decoding on golden or isa (or decided on isa and
replayed on a simulator, every pass measured: :mod:`sim.speculative.rtl`), its acceptance,
cycles per token (draft and verify) and speedup over plain decoding on the same design
(docs/speculative.md). Registered through ``run``'s options in sim/cli/commands.py."""

from __future__ import annotations

import json
import sys

import click

from golden.errors import InputError

from ..numbers import count, number, quantity
from .design import load as load_design
from .model import load_model, prompt_ids_of, text_of

__all__ = ["DEFAULT_DRAFT_LEN", "run_speculative_cmd"]

#: ``--draft-len`` when not given.
DEFAULT_DRAFT_LEN = 4


def _draft_checkpoint(drafter: str, draft_dir: str | None):
    from golden.checkpoint import draft_model_path

    if drafter != "draft":
        if draft_dir is not None:
            raise InputError(f"--draft names a draft model and goes with --speculative draft, not {drafter}")
        return None
    if draft_dir is None:
        path = draft_model_path()
        if not path.is_dir():
            raise InputError(f"the default draft model {path} is not there: give one with --draft DIR")
        draft_dir = str(path)
    return load_model(draft_dir)


def run_speculative_cmd(*, backend, model_dir, hw, settings, prompt, prompt_ids, n_tokens, as_json, drafter,
                        draft_len, draft_dir) -> None:
    from ..machine.resident import resident
    from ..runtime import RTL_BACKENDS, check_request, prepare
    from ..speculative.options import check_backend, check_draft_len_for, check_draft_model, check_drafter
    from ..speculative.rtl import confirm_speculative_on_rtl
    from ..speculative.run import run_speculative

    check_drafter(drafter)
    check_backend(backend, replayed=True)
    design = load_design(hw, settings)
    config = design.config
    if n_tokens < 0:
        raise InputError(f"--tokens must be a non-negative integer, not {n_tokens}")
    ckpt = load_model(model_dir)
    ids = prompt_ids_of(ckpt, prompt, prompt_ids)
    draft_ckpt = _draft_checkpoint(drafter, draft_dir)
    if draft_ckpt is not None:
        check_draft_model(ckpt, draft_ckpt)
    compiled = prepare(ckpt, config)
    k = check_draft_len_for(DEFAULT_DRAFT_LEN if draft_len is None else draft_len, compiled)
    check_request(compiled, "isa" if backend in RTL_BACKENDS else backend, ids, n_tokens)  # before any output
    # The draft lives in the same accelerator's memories as the target, on every backend: compiled beside
    # it (a one-line error when it does not fit), the machine an RTL replay loads.
    machine = compiled if draft_ckpt is None else resident(compiled, prepare(draft_ckpt, config))
    draft = None if draft_ckpt is None else machine.draft
    if draft is None:
        what = "prompt lookup"
    else:
        layers = draft_ckpt.config.n_layers
        what = (f"draft model {draft_ckpt.path.name} ({layers} layer{'s' if layers != 1 else ''}, d_model "
                f"{draft_ckpt.config.d_model})")
    if not as_json:
        click.echo(f"model {ckpt.path.name} ({ckpt.config.family}) on design {design.name}"
                   f"{' (with --set)' if settings else ''}: {config.describe()}, backend {backend}, speculative: "
                   f"{what}, {k} drafted token{'s' if k != 1 else ''} a round")
        click.echo(text_of(ckpt, ids) or " ".join(map(str, ids)), nl=False)

    def show(new):
        if not as_json:
            click.echo(text_of(ckpt, new) or "".join(f" {t}" for t in new), nl=False)

    replay = backend in RTL_BACKENDS
    report = run_speculative(compiled, "isa" if replay else backend, ids, n_tokens, drafter=drafter, draft_len=k,
                             draft=draft, on_round=show)
    if replay and report.identical:
        if not as_json:
            click.echo("")
            click.echo(f"replaying {count(len(report.passes))} passes and {count(report.decode_tokens)} plain steps "
                       f"on {backend} ...", err=True)
        report = confirm_speculative_on_rtl(report, machine, backend)
    report.text = text_of(ckpt, report.tokens)
    if as_json:
        out = report.as_dict()
        out["design"] = {"name": design.name, "settings": list(settings), **out["design"]}
        click.echo(json.dumps(out))
    else:
        _summary(report, config, line_ended=replay)
    if not report.identical:
        sys.exit(1)


def _summary(r, config, *, line_ended: bool = False) -> None:
    if not line_ended:
        click.echo("")
    same = (f"identical to plain greedy decoding on {r.backend} ({count(len(r.tokens))} tokens compared)"
            if r.identical else f"DIFFERENT from plain greedy decoding on {r.backend}")
    click.echo(f"tokens     : {same}")
    rate = r.acceptance_rate
    click.echo(f"acceptance : {count(r.accepted)} of {count(r.proposed)} drafted tokens"
               + (f" ({number(100 * rate)} %)" if rate is not None else "") + f" in {count(r.rounds)} rounds")
    per_pass = r.tokens_per_target_pass
    if per_pass is None:
        click.echo("decode     : no decode phase (at most one new token: the prefill gives it)")
        return
    per = r.cycles_per_token
    click.echo(f"tokens/pass: {number(per_pass)} per target (verify) pass, over the {count(r.decode_tokens)} tokens "
               f"after the first (the prefill gives the first)")
    click.echo(f"cycles     : {count(per['total'])} per generated token predicted (draft {count(per['draft'])} + "
               f"verify {count(per['verify'])})")
    click.echo(f"plain      : {count(per['plain'])} per token (single-row steps at the same positions)")
    if r.rtl is not None:
        rtl = r.rtl
        verdict = "equal to the prediction at every one" if r.cycle_exact else "NOT equal to the prediction"
        click.echo(f"measured   : {rtl['simulator']} ran the {count(rtl['passes'])} passes and "
                   f"{count(rtl['plain_steps'])} plain steps (RTL cycle counter), {verdict}; tokens equal "
                   f"({number(rtl['wall_seconds'])} s)")
    click.echo(f"speedup    : {number(r.speedup)}x over plain decoding on this design")
    tps = r.tokens_per_second
    click.echo(f"tokens/s   : {number(tps['speculative'])} speculative, {number(tps['plain'])} plain at "
               f"{quantity(config.clock_hz, 'Hz')}")
    pre = r.prefill_cycles
    click.echo(f"prefill    : {count(pre['target'])} cycles target" +
               (f" + {count(pre['draft'])} draft" if r.drafter == "draft" else "") +
               f" in passes of up to {count(max(len(p.rows) for p in r.passes if p.phase == 'prefill'))} rows "
               f"({count(r.plain_prefill_cycles)} as single-row steps; not in the speedup)")
