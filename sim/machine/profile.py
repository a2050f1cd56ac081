"""Where a decode step's cycles go: per instruction, per op kind and per layer, predicted and measured.

The cycle model predicts every instruction's cycles (:func:`sim.machine.cycles.decode_step_cycles`);
the RTL's trace memory holds what each instruction took (one entry per instruction but HALT, written
by the sequencer as the instruction retires). A :class:`Profile` puts them side by side for every
step of a run: ``measured`` is None where nothing was measured (the isa and golden backends).

Every instruction belongs to one unit, the track it occupies in a timeline: ``array`` (GEMM: the
systolic array and its weight port), ``attention``, ``vector`` (norms, RoPE, activations, residual
adds, argmax) and ``sequencer`` (the moves the sequencer makes itself: embedding rows and KV writes).
The sequencer runs one instruction at a time, so a step's instructions follow each other and the
step's cycles are their sum. :func:`chrome_trace` writes that timeline in the Chrome trace event
format (Perfetto's UI and chrome://tracing open it).
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass

from golden.errors import InputError

from .compiler import Compiled
from .cycles import UNITS as _UNITS
from .cycles import Bounds, decode_step_cycles, unit_of

__all__ = ["UNITS", "InstructionCycles", "Profile", "StepProfile", "chrome_trace", "profile_run", "unit_of"]

#: The timeline's tracks, in order (the host's steps first, then the units of :mod:`.cycles`).
UNITS = ("host", *_UNITS)


@dataclass(frozen=True)
class InstructionCycles:
    """One instruction of one step."""

    index: int                 # in the program (0 = first)
    op: str
    output: str                # the value it writes (names the layer: L3.o; a merged GEMM's values: L3.q+k+v)
    layer: int | None          # None outside the layers (embedding, final norm, LM head, argmax)
    unit: str
    predicted: int
    measured: int | None       # the RTL trace's count; None where nothing was measured
    unit_min: int              # its floor on its unit (a GEMM's: the larger of MAC peak and weight port)


@dataclass(frozen=True)
class StepProfile:
    position: int
    token_in: int
    token_out: int
    instructions: tuple[InstructionCycles, ...]
    bounds: Bounds | None = None   # the step's lower bounds (the cycle model's)

    @property
    def predicted(self) -> int:
        return sum(i.predicted for i in self.instructions)

    @property
    def measured(self) -> int | None:
        if any(i.measured is None for i in self.instructions):
            return None
        return sum(i.measured for i in self.instructions)


def _step(compiled: Compiled, position: int, token_in: int, token_out: int, trace) -> StepProfile:
    groups = [g for g in compiled.ops if g is not None]
    step = decode_step_cycles(compiled.program, compiled.model.config, compiled.config, position=position)
    predicted = step.ops
    if trace is not None and len(trace) != len(groups):
        raise InputError(f"step at position {position}: the trace holds {len(trace)} counts for "
                         f"{len(groups)} instructions")
    rows = tuple(InstructionCycles(index=i, op=g.op, output=g.output, layer=g.layer, unit=unit_of(g.op),
                                   predicted=p.cycles, measured=None if trace is None else int(trace[i]),
                                   unit_min=p.unit_min)
                 for i, (g, p) in enumerate(zip(groups, predicted, strict=True)))
    return StepProfile(position, token_in, token_out, rows, step.bound_report)


@dataclass(frozen=True)
class Profile:
    """Every step of a run, instruction by instruction; the tables sum over the steps."""

    steps: tuple[StepProfile, ...]
    clock_hz: float

    @property
    def measured(self) -> bool:
        return bool(self.steps) and all(s.measured is not None for s in self.steps)

    @property
    def predicted_total(self) -> int:
        return sum(s.predicted for s in self.steps)

    @property
    def measured_total(self) -> int | None:
        return sum(s.measured for s in self.steps) if self.measured else None

    @property
    def cycle_exact(self) -> bool | None:
        """Every instruction's measured count equals its prediction (None where nothing was measured)."""
        if not self.measured:
            return None
        return all(i.measured == i.predicted for s in self.steps for i in s.instructions)

    @property
    def bounds(self) -> Bounds | None:
        """The run's lower bounds, every step's summed (None for a profile of no steps)."""
        return Bounds.over_steps(s.bounds for s in self.steps) if self.steps else None

    def _group(self, key) -> list[dict]:
        groups: dict = {}
        for s in self.steps:
            for i in s.instructions:
                g = groups.setdefault(key(i), {"count": 0, "predicted": 0, "measured": 0, "unit_min": 0})
                g["count"] += 1
                g["predicted"] += i.predicted
                g["unit_min"] += i.unit_min
                g["measured"] = None if g["measured"] is None or i.measured is None else g["measured"] + i.measured
        total = self.predicted_total or 1
        return [{"name": name, **g, "share": g["predicted"] / total} for name, g in groups.items()]

    def by_instruction(self) -> list[dict]:
        """One row per instruction of the program, summed over the steps, in program order."""
        rows = self._group(lambda i: (i.index, i.op, i.output, i.layer, i.unit))
        out = []
        for r in rows:
            index, op, output, layer, unit = r.pop("name")
            out.append({"index": index, "op": op, "output": output, "layer": layer, "unit": unit, **r})
        return out

    def by_op(self) -> list[dict]:
        """One row per op kind, most cycles first."""
        return sorted(self._group(lambda i: i.op), key=lambda r: -r["predicted"])

    def by_layer(self) -> list[dict]:
        """One row per layer (``None``: outside the layers), in layer order."""
        return sorted(self._group(lambda i: i.layer), key=lambda r: (r["name"] is None, r["name"] or 0))

    def by_unit(self) -> list[dict]:
        return sorted(self._group(lambda i: i.unit), key=lambda r: UNITS.index(r["name"]))

    def as_dict(self) -> dict:
        return {"clock_hz": self.clock_hz, "steps": len(self.steps), "predicted_cycles": self.predicted_total,
                "measured_cycles": self.measured_total, "cycle_exact": self.cycle_exact,
                "by_op": self.by_op(), "by_layer": self.by_layer(), "by_unit": self.by_unit(),
                "by_instruction": self.by_instruction(),
                "bounds": None if self.bounds is None else self.bounds.as_dict(),
                "per_step": [{"position": s.position, "token_in": s.token_in, "token_out": s.token_out,
                              "predicted": s.predicted, "measured": s.measured,
                              "instructions": [asdict(i) for i in s.instructions]} for s in self.steps]}

    def csv(self) -> str:
        """Every instruction of every step, one row each."""
        out = io.StringIO()
        fields = ["position", "index", "op", "output", "layer", "unit", "predicted", "measured", "unit_min"]
        w = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for s in self.steps:
            for i in s.instructions:
                w.writerow({"position": s.position, **{k: v for k, v in asdict(i).items() if k in fields}})
        return out.getvalue()

    def table(self) -> str:
        """The three tables a person reads: per op kind, per layer, per instruction."""
        lines = []

        def section(title, rows, name_of):
            lines.append(title)
            lines.append(f"  {'':24s} {'count':>6s} {'predicted':>11s} {'measured':>11s} {'share':>7s} "
                         f"{'unit bound':>11s}")
            for r in rows:
                m = "-" if r["measured"] is None else f"{r['measured']:,}"
                lines.append(f"  {name_of(r):24s} {r['count']:>6,} {r['predicted']:>11,} {m:>11s} "
                             f"{r['share']:>6.1%} {r['unit_min']:>11,}")

        section("per op kind", self.by_op(), lambda r: r["name"])
        section("per layer", self.by_layer(), lambda r: "outside layers" if r["name"] is None else f"layer {r['name']}")
        section("per unit", self.by_unit(), lambda r: r["name"])
        b = self.bounds
        if b is not None:
            lines.append(f"  over {len(self.steps)} steps: {b.mac_peak_text()}; bound: {b.binding_text()}")
            lines.append(f"  other bounds: {b.others_text()}")
        section("per instruction", self.by_instruction(), lambda r: f"{r['index']:3d} {r['op']} {r['output']}"[:24])
        m = self.measured_total
        verdict = "equal to" if self.cycle_exact else "NOT equal to"
        lines.append(f"total: {self.predicted_total:,} cycles predicted over {len(self.steps)} steps; measured "
                     + ("not measured" if m is None else f"{m:,}, every instruction {verdict} its prediction"))
        return "\n".join(lines)


def profile_run(compiled: Compiled, steps) -> Profile:
    """The profile of a run's ``steps``: ``(position, token_in, token_out, trace or None)`` each."""
    return Profile(tuple(_step(compiled, p, t_in, t_out, trace) for p, t_in, t_out, trace in steps),
                   compiled.config.clock_hz)


def chrome_trace(profile: Profile) -> dict:
    """The run as a Chrome trace (JSON object format): one track per unit, each instruction a
    complete event (``ph: "X"``) on its unit's track, one event per step on the host's track. Time
    is in microseconds at the design's clock; every event's ``args`` give its cycles (the measured
    count where there is one, else the prediction) and its start cycle."""
    us = 1e6 / profile.clock_hz
    events = [{"ph": "M", "name": "process_name", "pid": 1, "tid": 0, "args": {"name": "Lockstep accelerator"}}]
    events += [{"ph": "M", "name": "thread_name", "pid": 1, "tid": t, "args": {"name": u}} for t, u in enumerate(UNITS)]
    events += [{"ph": "M", "name": "thread_sort_index", "pid": 1, "tid": t, "args": {"sort_index": t}}
               for t in range(len(UNITS))]
    cycle = 0
    for s in profile.steps:
        start = cycle
        for i in s.instructions:
            n = i.predicted if i.measured is None else i.measured
            layer = "" if i.layer is None else f"layer {i.layer} "
            events.append({"ph": "X", "pid": 1, "tid": UNITS.index(i.unit), "name": f"{i.op} {i.output}",
                           "cat": i.op, "ts": cycle * us, "dur": n * us,
                           "args": {"position": s.position, "index": i.index, "layer": i.layer, "op": i.op,
                                    "output": i.output, "cycles": n, "start_cycle": cycle,
                                    "predicted": i.predicted, "measured": i.measured, "unit_min": i.unit_min,
                                    "what": f"{layer}{i.op} -> {i.output}"}})
            cycle += n
        events.append({"ph": "X", "pid": 1, "tid": 0, "name": f"step {s.position}", "cat": "step",
                       "ts": start * us, "dur": (cycle - start) * us,
                       "args": {"position": s.position, "token_in": s.token_in, "token_out": s.token_out,
                                "cycles": cycle - start, "start_cycle": start, "predicted": s.predicted,
                                "measured": s.measured}})
    return {"traceEvents": events, "displayTimeUnit": "ns",
            "otherData": {"clock_hz": profile.clock_hz, "steps": len(profile.steps)}}
