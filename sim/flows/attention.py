"""Host side of the attention unit: its designs and host flows, registered by name.

DESIGNS maps a design name to ``factory(params) -> Component`` (see :mod:`sim.engine.registry`);
FLOWS maps a flow name to ``async def flow(bus, job) -> dict`` (see :mod:`sim.engine.registry`), JOBS
to the job's shape (:class:`AttentionJob`, cases of :class:`AttentionCase`).

Stream order (the contract with :class:`hdl.attention.AttentionUnit`): ``q`` beat ``h`` is query
head ``h``; ``k`` and ``v`` beat ``g * kv_len + t`` is position ``t`` of KV head ``g``; ``out`` beat
``h`` is query head ``h``'s int8 result. Each beat packs ``head_dim`` int8 lanes, lane 0 in the
low bits (:func:`sim.flows.gemm.pack_lanes`).

The flows are written against :class:`sim.engine.bus.Bus`, so the same code drives Icarus, Verilator and
Amaranth's simulator.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import NotRequired, TypedDict

import numpy as np

from golden.attention import AttentionParams, AttentionShape
from golden.errors import InputError, InputTypeError
from golden.numerics import check_int8, is_int
from hdl.attention import AttentionUnit

from ..engine.bus import WatchdogError
from ..engine.stream import StreamDriver, StreamMonitor, check_nothing_in_flight
from ..machine.cycles import (
    ATTENTION_FINISH_STAGES,
    ATTENTION_POSITION_STAGES,
    attention_cycles,
    attention_finish_steps,
    attention_min_cycles,
)
from .gemm import pack_lanes, unpack_lanes

__all__ = ["DESIGNS", "FLOWS", "JOBS", "AttentionCase", "AttentionJob", "AttentionPlan",
           "plan_attention", "run_attention", "unit_params"]

_UNIT_KEYS = ("head_dim", "max_context", "max_heads")
#: Optional: the finish stages' width (default head_dim), the query heads of a group run in
#: parallel (default 1) and the exp table's read register (default false), see
#: :class:`hdl.attention.AttentionUnit`.
_OPTIONAL_KEYS = ("finish_lanes", "heads_per_step", "timing_registers", "rescale_register")


def unit_params(params: dict) -> dict:
    """The design parameters of an attention unit, checked for missing and unknown keys."""
    if not isinstance(params, dict):
        raise InputTypeError(f"attention unit parameters must be a table, not {type(params).__name__}")
    known = _UNIT_KEYS + _OPTIONAL_KEYS
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise InputError(f"attention unit: unknown parameter {unknown[0]!r} (known: {', '.join(known)})")
    missing = [key for key in _UNIT_KEYS if key not in params]
    if missing:
        raise InputError(f"attention unit: missing parameter {missing[0]!r}")
    return {key: params[key] for key in known if key in params}


def _attention_unit(params):
    return AttentionUnit(**unit_params(params))


@dataclass(frozen=True)
class AttentionPlan:
    """One attention call checked against a unit: the unit's parameters and the call's shape."""

    unit: dict
    shape: AttentionShape

    @property
    def n_heads(self) -> int:
        return self.shape.n_heads

    @property
    def n_kv_heads(self) -> int:
        return self.shape.n_kv_heads

    @property
    def kv_len(self) -> int:
        return self.shape.kv_len

    @property
    def head_dim(self) -> int:
        return self.shape.head_dim

    @property
    def predicted_cycles(self) -> int:
        return attention_cycles(n_heads=self.n_heads, kv_len=self.kv_len, head_dim=self.head_dim,
                                finish_lanes=self.unit.get("finish_lanes", 0), n_kv_heads=self.n_kv_heads,
                                heads_per_step=self.unit.get("heads_per_step", 1),
                                timing_registers=bool(self.unit.get("timing_registers", False)),
                                rescale_register=bool(self.unit.get("rescale_register", False))).total

    @property
    def min_cycles(self) -> int:
        return attention_min_cycles(n_heads=self.n_heads, kv_len=self.kv_len, n_kv_heads=self.n_kv_heads,
                                    heads_per_step=self.unit.get("heads_per_step", 1))

    @property
    def watchdog_cycles(self) -> int:
        """Cycle budget after which a run with no gaps counts as hung: twice the prediction plus slack."""
        return 2 * self.predicted_cycles + 64


def plan_attention(unit: dict, *, n_heads, n_kv_heads, kv_len) -> AttentionPlan:
    """Check one call's shape against an attention unit's parameters.

    Reuses :class:`golden.attention.AttentionShape` (non-integer sizes: TypeError; zero heads,
    ``n_heads`` not a multiple of ``n_kv_heads``, ``kv_len`` outside [1, max_context]:
    ValueError naming the value), then checks ``n_heads`` against the unit's ``max_heads``.
    """
    unit = unit_params(unit)
    head_dim = unit["head_dim"]
    # d_model only carries head_dim through AttentionShape's checks; a bad n_heads is reported as such.
    heads_ok = is_int(n_heads) and n_heads > 0
    shape = AttentionShape(d_model=head_dim * (int(n_heads) if heads_ok else 1), n_heads=n_heads,
                           n_kv_heads=n_kv_heads, head_dim=head_dim, max_context=unit["max_context"],
                           kv_len=kv_len)
    if shape.n_heads > unit["max_heads"]:
        raise InputError(f"n_heads={shape.n_heads} exceeds max_heads={unit['max_heads']} of the attention unit")
    return AttentionPlan(unit, shape)


def _check_operands(plan: AttentionPlan, q, k, v):
    q = check_int8("q", q)
    k = check_int8("k", k)
    v = check_int8("v", v)
    want_q = (plan.n_heads, plan.head_dim)
    want_kv = (plan.kv_len, plan.n_kv_heads, plan.head_dim)
    if q.shape != want_q:
        raise InputError(f"q must have shape {want_q}, not {q.shape}")
    if k.shape != want_kv:
        raise InputError(f"k must have shape {want_kv}, not {k.shape}")
    if v.shape != want_kv:
        raise InputError(f"v must have shape {want_kv}, not {v.shape}")
    return q, k, v


_INPUTS = ("start", "kv_len", "n_kv_heads", "group", "score_mult", "score_shift", "out_mult", "out_shift",
           "q.valid", "q.payload", "k.valid", "k.payload", "v.valid", "v.payload", "out.ready")


async def run_attention(bus, plan: AttentionPlan, q, k, v, params: AttentionParams, *, seed: int = 0,
                        gaps: float = 0.0, stall: float = 0.0, budget: int | None = None,
                        max_idle: int | None = None, withhold_v: bool = False) -> dict:
    """Run one attention call: start the unit, stream q, K and V in, collect the output rows.

    ``gaps`` is the chance a driver holds its valid low in a cycle, ``stall`` the chance the
    monitor holds ``out.ready`` low. Returns ``{"out": n_heads x head_dim int8 list, "cycles": the
    unit's counter, "edges": clock edges from the one that samples start to the first cycle done
    is high, "run_seconds"}``. Raises WatchdogError when ``done`` has not risen within ``budget``
    edges (default :attr:`AttentionPlan.watchdog_cycles`, stretched for gaps and stalls) or no beat
    moves for ``max_idle`` cycles; AssertionError when the unit offers or takes a beat after
    ``done``. ``withhold_v`` is a deliberate misuse for testing the watchdog: no V row is offered.
    """
    q, k, v = _check_operands(plan, q, k, v)
    if not isinstance(params, AttentionParams):
        raise InputTypeError(f"params must be an AttentionParams, not {type(params).__name__}")
    D = plan.head_dim
    q_beats = [pack_lanes(q[h], 8) for h in range(plan.n_heads)]
    k_beats = [pack_lanes(k[t, g], 8) for g in range(plan.n_kv_heads) for t in range(plan.kv_len)]
    v_beats = [pack_lanes(v[t, g], 8) for g in range(plan.n_kv_heads) for t in range(plan.kv_len)]
    if budget is None:
        stretch = 1.0 / max(1e-3, (1.0 - gaps) * (1.0 - stall))
        budget = int(plan.watchdog_cycles * 2 * stretch)
    if max_idle is None:
        # Longest legitimate quiet spell: the pipeline's depth plus runs of random idle cycles.
        # A group's heads finish back to back, each holding the pipeline for finish_steps cycles.
        finish = attention_finish_steps(plan.head_dim, plan.unit.get("finish_lanes", 0))
        max_idle = 4 * (ATTENTION_POSITION_STAGES + ATTENTION_FINISH_STAGES) + 200 + plan.n_heads * finish
    rng = random.Random(seed)

    for name in _INPUTS:
        bus.set(name, 0)
    await bus.reset()
    bus.set("kv_len", plan.kv_len)
    bus.set("n_kv_heads", plan.n_kv_heads)
    bus.set("group", plan.shape.group)
    bus.set("score_mult", params.score_mult)
    bus.set("score_shift", params.score_shift)
    bus.set("out_mult", params.out_mult)
    bus.set("out_shift", params.out_shift)
    bus.set("start", 1)
    await bus.tick()  # the edge that samples start
    bus.set("start", 0)
    t0 = time.perf_counter()
    edges = 1
    drivers = [StreamDriver(bus, name, beats, rng=rng, gaps=gaps)
               for name, beats in (("q", q_beats), ("k", k_beats), ("v", [] if withhold_v else v_beats))]
    out = StreamMonitor(bus, "out", rng=rng, stall=stall)
    got = []
    idle = 0
    while True:
        for d in drivers:
            d.offer()
        out.offer()
        await bus.settle()
        if bus.get("done"):
            break
        moved = False
        for d in drivers:
            moved = d.took() or moved
        word = out.take()
        if word is not None:
            got.append(unpack_lanes(word, 8, D))
            moved = True
        idle = 0 if moved else idle + 1
        if idle > max_idle:
            sent = {d.name: d.sent for d in drivers}
            raise WatchdogError(f"attention unit made no progress for {max_idle} cycles ({sent['q']}/"
                                f"{len(q_beats)} q rows, {sent['k']}/{len(k_beats)} K rows, {sent['v']}/"
                                f"{len(v_beats)} V rows, {len(got)}/{plan.n_heads} outputs)")
        if edges >= budget:
            raise WatchdogError(f"done did not rise within {budget} cycles")
        await bus.tick()
        edges += 1
    run_seconds = time.perf_counter() - t0
    cycles = bus.get("cycles")

    sent = {d.name: d.sent for d in drivers}
    if len(got) != plan.n_heads or any(sent[n] != len(b) for n, b in (("q", q_beats), ("k", k_beats),
                                                                       ("v", v_beats))):
        raise AssertionError(f"done rose with {len(got)}/{plan.n_heads} outputs and "
                             f"{sent} of ({len(q_beats)}, {len(k_beats)}, {len(v_beats)}) input rows taken")
    # Nothing may be left in flight: with every source offering a beat and the sink ready, the idle
    # unit takes nothing and produces nothing for longer than its pipeline is deep.
    await bus.tick()
    await check_nothing_in_flight(bus, "the attention unit", ATTENTION_POSITION_STAGES + ATTENTION_FINISH_STAGES + 2,
                                  drivers=drivers, monitors=(out,), offer=True)
    return {"out": got, "cycles": cycles, "edges": edges, "run_seconds": run_seconds}


class AttentionCase(TypedDict):
    """One attention call of an ``attention_unit`` job (:func:`run_attention`)."""

    #: The query, ``n_heads`` rows of ``head_dim`` int8 values.
    q: list[list[int]]
    #: The keys, shape (kv_len, n_kv_heads, head_dim), int8.
    k: list[list[list[int]]]
    #: The values, shape (kv_len, n_kv_heads, head_dim), int8.
    v: list[list[list[int]]]
    #: The fields of :class:`golden.attention.AttentionParams` (requantization multipliers and shifts).
    params: dict
    #: Seed of the random stream gaps and stalls (default 0).
    seed: NotRequired[int]
    #: Probability a driver holds its valid low in a cycle, in [0, 1) (default 0).
    gaps: NotRequired[float]
    #: Probability of backpressure on an output cycle, in [0, 1) (default 0).
    stall: NotRequired[float]
    #: Watchdog cycles of the call (default from the cycle model's prediction).
    budget: NotRequired[int | None]
    #: Cycles without progress before the watchdog stops the run.
    max_idle: NotRequired[int | None]
    #: Never send V (a watchdog test).
    withhold_v: NotRequired[bool]


class AttentionJob(TypedDict):
    """An ``attention_unit`` job: calls run one after another on the same simulator."""

    #: The unit's design parameters (:func:`unit_params`).
    unit: dict
    #: The calls, in order.
    cases: list[AttentionCase]


def _check_attention_job(job: AttentionJob):
    """Check every case of an ``attention_unit`` job; return (plan, params) per case.

    Runs in the host process before a simulator starts (:data:`CHECKS`) and again in the flow."""
    plans = []
    for i, case in enumerate(job["cases"]):
        q = np.asarray(case["q"])
        k = np.asarray(case["k"])
        if q.ndim != 2 or k.ndim != 3:
            raise InputError(f"case {i}: q must have shape (n_heads, head_dim) and k (kv_len, n_kv_heads, "
                             f"head_dim), not {q.shape} and {k.shape}")
        plan = plan_attention(job["unit"], n_heads=q.shape[0], n_kv_heads=k.shape[1], kv_len=k.shape[0])
        _check_operands(plan, q, k, case["v"])
        plans.append((plan, AttentionParams(**case["params"])))
    return plans


async def _attention_flow(bus, job: AttentionJob) -> dict:
    """Run the job's calls in order; returns ``{"cases": [...]}`` with :func:`run_attention`'s results."""
    plans = _check_attention_job(job)
    results = []
    for case, (plan, params) in zip(job["cases"], plans, strict=True):
        results.append(await run_attention(
            bus, plan, case["q"], case["k"], case["v"], params, seed=case.get("seed", 0),
            gaps=case.get("gaps", 0.0), stall=case.get("stall", 0.0), budget=case.get("budget"),
            max_idle=case.get("max_idle"), withhold_v=case.get("withhold_v", False)))
    return {"cases": results}


DESIGNS = {"attention_unit": _attention_unit}
FLOWS = {"attention_unit": _attention_flow}
JOBS = {"attention_unit": AttentionJob}
CHECKS = {"attention_unit": _check_attention_job}
