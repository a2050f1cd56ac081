"""A speculative decode confirmed on the RTL: every pass it ran, replayed on the decode top level.

The loop decides on the instruction-level model (the next round's drafts depend on the last verify
pass's tokens, and a simulator runs a whole job of passes at once). Then the whole run goes to a
simulator in one job, the target and the draft model resident together in the accelerator's
memories (:mod:`sim.machine.resident`; the lookup drafter has no model, so the target is alone): the
prefill passes, every draft step and every verify pass of k+1 rows in run order, then plain
decoding's single-row steps at the same positions (the baseline, measured too). Every pass's tokens
must equal the instruction-level model's and its cycles the cycle model's
(:func:`sim.serve.rtl.confirm_passes_on_rtl`); any difference stops the run naming the pass.
"""

from __future__ import annotations

import time
from dataclasses import replace

from ..serve.rtl import confirm_passes_on_rtl

__all__ = ["confirm_speculative_on_rtl", "plain_rows"]


def plain_rows(report) -> list[tuple[int, int, int]]:
    """Plain greedy decoding's decode-phase steps of ``report`` as single-row passes ``(token, position,
    slot)``: the step at position q feeds the q-th token of the prompt and the generated tokens, in the
    target's slot (the slot of the report's target passes)."""
    sequence = list(report.prompt) + list(report.plain_tokens)
    slot = next(p.rows[0][2] for p in report.passes if p.model == "target")
    first = len(report.prompt)
    return [(sequence[q], q, slot) for q in range(first, first + report.decode_tokens)]


def confirm_speculative_on_rtl(report, machine, simulator: str, *, plain: bool = True, params: dict | None = None):
    """Replay ``report`` (a :class:`sim.speculative.report.SpeculativeReport` from the instruction-level
    model) on ``simulator``: ``machine`` is the :class:`sim.machine.resident.Resident` pair it ran on, or
    the target's Compiled alone (the lookup drafter). With ``plain``, plain decoding's steps at the same
    positions run after it in the same job. Returns the report with every pass's measured cycles,
    ``plain_measured`` and ``rtl``; :class:`sim.serve.rtl.RtlMismatch` names the first pass that differs."""
    passes = [(p.model, p.rows) for p in report.passes]
    steps = plain_rows(report) if plain else []
    passes += [("target", [row]) for row in steps]
    start = time.perf_counter()
    measured = confirm_passes_on_rtl(machine, passes, simulator, params=params)
    wall = time.perf_counter() - start
    n = len(report.passes)
    replayed = [replace(p, measured_cycles=m) for p, m in zip(report.passes, measured[:n], strict=True)]
    rtl = {"simulator": simulator, "decided_on": report.backend, "passes": n, "plain_steps": len(steps),
           "rows": sum(len(p.rows) for p in report.passes) + len(steps), "tokens_equal": True,
           "cycles_equal": True, "wall_seconds": wall}
    return replace(report, passes=replayed, plain_measured=measured[n:] if plain else None, backend=simulator,
                   rtl=rtl)
