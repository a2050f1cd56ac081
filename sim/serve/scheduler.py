"""A deterministic continuous-batching scheduler on the host (docs/serving.md).

Requests wait in a queue in arrival order. Between passes the scheduler

1. retires the sequences that have all their tokens and frees their KV slots;
2. admits arrived requests, oldest first (ties: trace order), while a KV slot is free and fewer than
   ``max_running`` sequences run; a sequence takes the lowest free slot; with paged KV
   (``Config.kv_block`` > 0) also only while its blocks fit: it reserves blocks for every position it
   will write (:class:`sim.serve.kv_layout.BlockAllocator`, the lowest free blocks), the executor
   gets its block table, and a retiring sequence frees them;
3. builds the next pass, at most ``max_rows`` rows (``Compiled.max_rows``: the design's ``max_m``
   unless the scratchpad holds fewer): first one decode row of every running sequence that has
   finished its prompt (those served longest ago first when they do not all fit), then the
   prompts still being read, in admission order, each a chunk of consecutive positions as long as
   the rows left allow (chunked prefill, as Sarathi and vLLM do it).

Simulated time is cycles of the design's clock: each pass advances it by the pass's cycles (the
executor's measured count when it measures one, else the cycle model's prediction); with nothing
running and nothing arrived it jumps to the next arrival. Nothing depends on the wall clock or on
hash order: the same requests on the same executor give the same schedule, cycles and tokens.

The executor is injected (:class:`Executor`): ``run_pass(rows)`` runs one pass and returns every
row's output token and the pass's measured cycles (None when it measures none), ``pass_cycles(positions)``
predicts a pass. :class:`IsaExecutor` runs the instruction-level model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from golden.errors import InputError, LockstepError

from ..machine.cycles import decode_step_cycles, pass_cycles
from ..machine.isa_sim import IsaMachine
from ..machine.passes import Row
from .kv_layout import BlockAllocator, KvGeometry
from .requests import Request, check_requests

__all__ = ["BACKENDS", "Executor", "IsaExecutor", "PassRecord", "RequestResult", "ServeReport", "executor",
           "percentile", "serve"]


class Executor(Protocol):
    """What the scheduler needs of a backend: one pass and its predicted cycles."""

    #: How many KV slots (sequences) the memories hold; the rows a pass takes; the model's context.
    kv_slots: int
    max_rows: int
    max_context: int
    vocab_size: int
    clock_hz: float
    #: MACs of one row's GEMMs (K x N of each; the array's useful work for one token).
    macs_per_row: int
    #: R x C: the array's MACs a cycle.
    array_macs: int

    def run_pass(self, rows: Sequence) -> tuple[list[int], int | None]:
        """Run one pass of ``rows`` (``sim.machine.passes.Row``); every row's token out, and the
        measured cycles (None when the backend measures none)."""

    def pass_cycles(self, positions: Sequence[int]) -> int:
        """The cycle model's count of a pass whose rows are at ``positions``."""

    # Paged KV (optional: an executor without ``kv_block`` has fixed slots): ``kv_block`` (B, 0 for
    # fixed slots), ``kv_geometry`` (a sim.serve.kv_layout.KvGeometry of its KV region) and
    # ``set_table(slot, blocks)``, the block table of the sequence in ``slot``.


class IsaExecutor:
    """The instruction-level model (:class:`sim.machine.isa_sim.IsaMachine`) with predicted cycles."""

    name = "isa"

    def __init__(self, compiled):

        self.compiled = compiled
        self.machine = IsaMachine(compiled)
        c, mc = compiled.config, compiled.model.config
        self.kv_slots = compiled.kv_slots
        self.max_rows = compiled.max_rows        # Config.max_m, or fewer when the scratchpad holds fewer
        self.max_context = compiled.model.max_context
        self.vocab_size = mc.vocab_size
        self.clock_hz = c.clock_hz
        self.array_macs = c.array_rows * c.array_cols
        self.macs_per_row = sum(o.macs for o in decode_step_cycles(compiled.program, mc, c, position=0).ops)
        #: Paged KV (``Config.kv_block`` > 0; 0: fixed slots) and the KV region the blocks cut.
        self.kv_block = c.kv_block
        self.kv_geometry = KvGeometry.of_compiled(compiled)
        self._memo: dict[tuple[int, ...], int] = {}

    def set_table(self, slot: int, blocks) -> None:
        """Paged KV: the block table of the sequence in ``slot`` (``IsaMachine.set_table``)."""
        self.machine.set_table(slot, blocks)

    def run_pass(self, rows):
        return list(self.machine.run_pass(rows)), None

    def pass_cycles(self, positions):

        key = tuple(positions)
        if key not in self._memo:
            c = self.compiled
            self._memo[key] = pass_cycles(c.program, c.model.config, c.config, positions=list(key)).total
        return self._memo[key]


#: The backends :func:`executor` makes (an RTL executor plugs in here: an object with Executor's fields).
BACKENDS = {"isa": IsaExecutor}


def executor(backend: str, compiled) -> Executor:
    """The executor of ``backend`` for ``compiled``; InputError naming it when there is none."""
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    return BACKENDS[backend](compiled)


@dataclass
class RequestResult:
    """One request's outcome; times in cycles from the trace's start."""

    id: str
    prompt_tokens: int
    tokens: list[int]                 # the generated tokens, in order
    arrival: int
    admitted: int                     # the start of its first pass
    first_token: int                  # the end of the pass that gave its first token
    finished: int                     # the end of the pass that gave its last token
    slot: int

    def ttft(self) -> int:
        return self.first_token - self.arrival

    def tpot(self) -> float | None:
        """Cycles per output token after the first (None for a one-token request)."""
        n = len(self.tokens)
        return (self.finished - self.first_token) / (n - 1) if n > 1 else None

    def latency(self) -> int:
        return self.finished - self.arrival


@dataclass(frozen=True)
class PassRecord:
    """One pass: when it started, its rows ``(request id, token, position, slot)``, its cycles; with paged
    KV the block tables of its slots, ``(slot, blocks)`` in order of first row (what a replay writes)."""

    start: int
    rows: tuple[tuple[str, int, int, int], ...]
    predicted: int
    measured: int | None
    tables: tuple[tuple[int, tuple[int, ...]], ...] = ()

    @property
    def cycles(self) -> int:
        return self.predicted if self.measured is None else self.measured


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) of ``values``, linear between the closest ranks (NumPy's
    default); None for no values."""
    v = sorted(values)
    if not v:
        return None
    x = (len(v) - 1) * q / 100
    lo = math.floor(x)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (x - lo)


@dataclass
class ServeReport:
    """A served trace: every request's result, every pass, and the aggregate figures."""

    results: list[RequestResult]
    passes: list[PassRecord]
    clock_hz: float
    macs_per_row: int
    array_macs: int
    backend: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def cycle_exact(self) -> bool | None:
        measured = [p for p in self.passes if p.measured is not None]
        return all(p.measured == p.predicted for p in measured) if measured else None

    @property
    def busy_cycles(self) -> int:
        return sum(p.cycles for p in self.passes)

    @property
    def span(self) -> int:
        """Cycles from the first arrival to the last token."""
        return max(r.finished for r in self.results) - min(r.arrival for r in self.results)

    @property
    def tokens(self) -> int:
        return sum(len(r.tokens) for r in self.results)

    @property
    def rows(self) -> int:
        return sum(len(p.rows) for p in self.passes)

    def utilisation(self) -> float:
        """MACs done / (the passes' cycles x R x C): how busy the array was while it ran."""
        return self.rows * self.macs_per_row / (self.busy_cycles * self.array_macs) if self.busy_cycles else 0.0

    def summary(self) -> dict:
        """The aggregate figures: p50/p90/p99 of TTFT, time per output token and end-to-end latency
        (seconds), tokens/s over the span, array utilisation, passes and rows."""
        s = 1 / self.clock_hz
        ttft = [r.ttft() * s for r in self.results]
        tpot = [r.tpot() * s for r in self.results if r.tpot() is not None]
        e2e = [r.latency() * s for r in self.results]
        dist = {}
        for name, v in (("ttft_s", ttft), ("tpot_s", tpot), ("latency_s", e2e)):
            dist[name] = {f"p{q}": percentile(v, q) for q in (50, 90, 99)}
            dist[name]["mean"] = sum(v) / len(v) if v else None
        span_s = self.span * s
        return {
            "requests": len(self.results), "generated_tokens": self.tokens, "prompt_tokens":
            sum(r.prompt_tokens for r in self.results), "passes": len(self.passes), "rows": self.rows,
            "mean_rows_per_pass": self.rows / len(self.passes) if self.passes else 0.0,
            "span_s": span_s, "busy_s": self.busy_cycles * s, "span_cycles": self.span,
            "busy_cycles": self.busy_cycles,
            "tokens_per_s": self.tokens / span_s if span_s > 0 else None,
            "array_utilisation": self.utilisation(), "cycle_exact": self.cycle_exact, **dist,
        }

    def as_dict(self, *, requests: bool = True) -> dict:
        out = {"backend": self.backend, "clock_hz": self.clock_hz, "summary": self.summary(), **self.extra}
        if requests:
            s = 1 / self.clock_hz
            out["requests"] = [{"id": r.id, "prompt_tokens": r.prompt_tokens, "tokens": r.tokens,
                                "arrival_cycle": r.arrival, "admitted_cycle": r.admitted,
                                "first_token_cycle": r.first_token, "finished_cycle": r.finished, "slot": r.slot,
                                "ttft_s": r.ttft() * s, "tpot_s": None if r.tpot() is None else r.tpot() * s,
                                "latency_s": r.latency() * s} for r in self.results]
        return out


@dataclass
class _Sequence:
    request: Request
    index: int                        # in the requests given
    order: int                        # admission order
    slot: int
    admitted: int
    tokens: list[int]                 # every position's input so far (the prompt, then generated tokens)
    position: int = 0                 # the next position to run
    generated: list[int] = field(default_factory=list)
    first_token: int | None = None
    last_pass: int = -1               # the index of the last pass that ran it

    @property
    def prefilling(self) -> bool:
        return self.position < len(self.request.prompt)


def serve(requests: Sequence[Request], executor: Executor, *, max_running: int | None = None,
          on_pass: Callable[[int, int], None] | None = None) -> ServeReport:
    """Run ``requests`` to completion on ``executor`` (module docstring); return every request's
    tokens and times in the order of ``requests``. ``max_running`` caps the sequences that run at
    once (default: every KV slot). ``on_pass(finished requests, all requests)`` after every pass.

    Refused before any pass (InputError naming the request and value): a request that can never run
    (:func:`check_requests`), duplicate ids, ``max_running`` outside 1..kv_slots."""

    slots = executor.kv_slots
    if slots < 1:
        raise InputError("the design's KV memory holds no sequence of this model (0 KV slots)")
    if max_running is None:
        max_running = slots
    if isinstance(max_running, bool) or not isinstance(max_running, int) or not 1 <= max_running <= slots:
        raise InputError(f"max_running must be an integer in 1..{slots} (the KV slots), not {max_running!r}")
    if not requests:
        raise InputError("no requests to serve")
    check_requests(requests, max_context=executor.max_context, vocab_size=executor.vocab_size)
    # Arrival order, ties by trace order: a stable sort.
    queue = sorted(range(len(requests)), key=lambda i: requests[i].arrival)
    head = 0
    block = getattr(executor, "kv_block", 0)
    pages = BlockAllocator(executor.kv_geometry, block) if block else None   # by slot
    tables: dict[int, tuple[int, ...]] = {}     # paged: each running sequence's blocks, by slot
    free = list(range(slots))                   # kept sorted: the lowest free slot first
    running: list[_Sequence] = []
    done: dict[int, RequestResult] = {}
    passes: list[PassRecord] = []
    now = 0
    admitted = 0
    m = executor.max_rows
    while len(done) < len(requests):
        # Admit what has arrived, oldest first, while a slot is free.
        if not running and head < len(queue) and requests[queue[head]].arrival > now:
            now = requests[queue[head]].arrival          # idle: jump to the next arrival
        while head < len(queue) and requests[queue[head]].arrival <= now and free and len(running) < max_running:
            i = queue[head]
            need = len(requests[i].prompt) + requests[i].max_new_tokens - 1
            if pages is not None and not pages.fits(need):
                break                                       # first come first served: it waits for blocks
            head += 1
            slot = free.pop(0)
            if pages is not None:
                tables[slot] = tuple(pages.allocate(slot, need))
                executor.set_table(slot, tables[slot])
            running.append(_Sequence(requests[i], i, admitted, slot, now, list(requests[i].prompt)))
            admitted += 1
        # Build the pass: decode rows first (least recently served first), then prompt chunks.
        decoding = sorted((s for s in running if not s.prefilling), key=lambda s: (s.last_pass, s.order))[:m]
        plan: list[tuple[_Sequence, int]] = [(s, 1) for s in decoding]
        left = m - len(plan)
        for s in sorted((s for s in running if s.prefilling), key=lambda s: s.order):
            if left == 0:
                break
            k = min(left, len(s.request.prompt) - s.position)
            plan.append((s, k))
            left -= k
        rows, owners = [], []
        for s, k in plan:
            for j in range(k):
                p = s.position + j
                rows.append(Row(token=s.tokens[p], position=p, slot=s.slot))
                owners.append(s)
        predicted = executor.pass_cycles([r.position for r in rows])
        outs, measured = executor.run_pass(rows)
        if len(outs) != len(rows):
            raise LockstepError(f"the {getattr(executor, 'name', 'backend')} backend returned {len(outs)} tokens "
                                f"for a pass of {len(rows)} rows")
        cycles = predicted if measured is None else measured
        used = tuple((s, tables[s]) for s in dict.fromkeys(r.slot for r in rows)) if pages is not None else ()
        passes.append(PassRecord(now, tuple((o.request.id, r.token, r.position, r.slot)
                                            for o, r in zip(owners, rows, strict=True)), predicted, measured, used))
        now += cycles
        for s, k in plan:
            s.position += k
            s.last_pass = len(passes) - 1
        for o, r, out in zip(owners, rows, outs, strict=True):
            # The output of the prompt's last position, and of every later one, is a generated token.
            if r.position == o.position - 1 and r.position >= len(o.request.prompt) - 1:
                o.generated.append(int(out))
                o.tokens.append(int(out))
                if o.first_token is None:
                    o.first_token = now
        still = []
        for s in running:
            if len(s.generated) >= s.request.max_new_tokens:
                r = s.request
                done[s.index] = RequestResult(r.id, len(r.prompt), s.generated[:r.max_new_tokens],
                                                      r.arrival, s.admitted, s.first_token, now, s.slot)
                free.append(s.slot)
                if pages is not None:
                    pages.release(s.slot)
                    del tables[s.slot]
                    executor.set_table(s.slot, ())
            else:
                still.append(s)
        free.sort()
        running = still
        if on_pass is not None:
            on_pass(len(done), len(requests))
    return ServeReport([done[i] for i in range(len(requests))], passes, executor.clock_hz,
                       executor.macs_per_row, executor.array_macs, getattr(executor, "name", ""))
