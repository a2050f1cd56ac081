"""A served trace confirmed on the RTL: every pass the scheduler ran, replayed on the decode top level.

The scheduler runs on the instruction-level model (its next pass depends on the last pass's tokens,
and a simulator runs a whole job of passes at once). Then the whole schedule runs on a simulator in
one job, the memories loaded once, as the chip would run it: each pass's rows, in order. The RTL's
tokens must equal the model's for every row of every pass, and its measured cycles must equal the
cycle model's for every pass; any difference stops the run with an error naming the pass. So the
schedule the RTL would have made is the one the model made, and the report's times are the RTL's
measured cycles.
"""

from __future__ import annotations

from dataclasses import replace

from golden.errors import LockstepError

__all__ = ["RtlMismatch", "confirm_on_rtl"]


class RtlMismatch(LockstepError):
    """The RTL disagreed with the instruction-level model or the cycle model on a pass."""


def confirm_on_rtl(report, compiled, simulator: str, *, params: dict | None = None):
    """Replay ``report``'s passes (a :class:`sim.serve.scheduler.ServeReport` from the instruction-level
    model) on ``simulator``; return the report with every pass's measured cycles and ``extra["rtl"]``
    (simulator, passes, rows, wall seconds of the free run). RtlMismatch names the first pass whose
    tokens or cycles differ. ``params``: the top level's (default :func:`sim.flows.decode.top_params`)."""
    from ..engine.runner import run
    from ..flows.decode import decode_job, top_params
    from ..machine.isa_sim import IsaMachine

    params = top_params(compiled) if params is None else params
    passes = [[(token, position, slot) for _, token, position, slot in p.rows] for p in report.passes]
    job = decode_job(compiled, params, passes=passes)
    result = run(simulator, "decode_top", params, "decode_top", job)
    machine = IsaMachine(compiled)
    measured = []
    for i, (rows, record, got) in enumerate(zip(passes, report.passes, result["passes"], strict=True)):
        want = machine.run_pass(rows)
        if got["tokens"] != want:
            raise RtlMismatch(f"pass {i} ({len(rows)} rows): the RTL's tokens {got['tokens']} differ from the "
                              f"instruction-level model's {want}")
        if got["cycles"] != record.predicted:
            raise RtlMismatch(f"pass {i} ({len(rows)} rows): the RTL took {got['cycles']} cycles, the cycle model "
                              f"predicts {record.predicted}")
        measured.append(replace(record, measured=got["cycles"]))
    extra = dict(report.extra, rtl={"simulator": simulator, "passes": len(measured),
                                    "rows": sum(len(p) for p in passes),
                                    "tokens_equal": True, "cycles_equal": True})
    return replace(report, passes=measured, backend=simulator, extra=extra)
