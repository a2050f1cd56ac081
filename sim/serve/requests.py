"""Requests for the serving scheduler: what one user asks, a trace file of them, a seeded generator.

A :class:`Request` is a prompt (token ids), how many tokens to generate and when it arrives, in
cycles of the design's clock from the trace's start. A trace is a list of them, read from a file
(:func:`read_trace`, the format below) or drawn by :func:`poisson_trace` (arrivals a Poisson process
at a given rate, prompt and output lengths from :class:`Lengths`).

Trace file format (JSON Lines, docs/serving.md): one JSON object a line, blank lines skipped::

    {"id": "a", "arrival_s": 0.0, "prompt": [12, 7, 30], "max_new_tokens": 8}
    {"arrival_cycle": 5000, "prompt": "The old miller ", "max_new_tokens": 16}

* ``prompt``: a non-empty list of token ids, or a string the model's tokenizer encodes;
* ``max_new_tokens``: a positive integer;
* ``arrival_cycle`` (an integer >= 0, cycles at the design's clock) or ``arrival_s`` (seconds >= 0,
  rounded up to a cycle), exactly one of them;
* ``id`` (optional): a string or an integer, unique in the trace; default the line's number.

Every fault is one :class:`golden.errors.InputError` naming the file, the line and the value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from golden.checkpoint import open_regular
from golden.errors import InputError

__all__ = ["MAX_REQUESTS", "MAX_TRACE_BYTES", "Lengths", "Request", "poisson_trace", "read_trace"]

#: The most requests one trace holds (a bound on the work before any check: a run of a million
#: requests on the instruction-level model would take days).
MAX_REQUESTS = 1_000_000
#: The largest trace file read.
MAX_TRACE_BYTES = 256 << 20
#: The largest arrival time in cycles (2**62: a simulated century at 1 GHz; past it a number is a typo).
MAX_ARRIVAL_CYCLE = 1 << 62


@dataclass(frozen=True)
class Request:
    """One request: ``prompt`` token ids, ``max_new_tokens`` to generate greedily, ``arrival`` cycle."""

    id: str
    prompt: tuple[int, ...]
    max_new_tokens: int
    arrival: int

    def as_dict(self) -> dict:
        return {"id": self.id, "prompt": list(self.prompt), "max_new_tokens": self.max_new_tokens,
                "arrival_cycle": self.arrival}


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class Lengths:
    """A length distribution: ``low`` to ``high`` tokens, uniform over the integers (``low == high``:
    fixed). Written ``N`` or ``LOW:HIGH`` on the command line (:meth:`parse`)."""

    low: int
    high: int

    def __post_init__(self):
        if not (_is_int(self.low) and _is_int(self.high)) or not 1 <= self.low <= self.high:
            raise InputError(f"a length distribution needs 1 <= low <= high, not {self.low}:{self.high}")

    @classmethod
    def parse(cls, text: str, option: str) -> Lengths:
        """``N`` or ``LOW:HIGH`` (positive integers); InputError naming ``option`` and the text."""
        parts = str(text).split(":")
        if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
            raise InputError(f"{option} takes N or LOW:HIGH (positive integers), not {text!r}")
        low, high = int(parts[0]), int(parts[-1])
        if not 1 <= low <= high:
            raise InputError(f"{option} {text}: needs 1 <= LOW <= HIGH")
        return cls(low, high)

    def __str__(self) -> str:
        return str(self.low) if self.low == self.high else f"{self.low}:{self.high}"


def poisson_trace(*, requests: int, rate: float, clock_hz: float, prompt: Lengths, output: Lengths,
                  vocab_size: int, seed: int = 0) -> list[Request]:
    """``requests`` requests arriving as a Poisson process of ``rate`` requests a second (exponential
    gaps, the first at 0), each with a prompt of ``prompt`` length (uniform random token ids of the
    vocabulary) and ``output`` new tokens; arrival times in cycles at ``clock_hz``, rounded down. The
    same arguments give the same trace (NumPy's PCG64 seeded by ``seed``)."""

    if not _is_int(requests) or not 1 <= requests <= MAX_REQUESTS:
        raise InputError(f"requests must be an integer in 1..{MAX_REQUESTS:,}, not {requests!r}")
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not math.isfinite(rate) or rate <= 0:
        raise InputError(f"rate must be a positive number of requests a second, not {rate!r}")
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(clock_hz / rate, size=requests)
    gaps[0] = 0.0
    arrivals = np.floor(np.cumsum(gaps))
    if arrivals[-1] > MAX_ARRIVAL_CYCLE:
        raise InputError(f"rate {rate:g} requests/s: the last of {requests} requests would arrive after "
                         f"{MAX_ARRIVAL_CYCLE:,} cycles")
    p_len = rng.integers(prompt.low, prompt.high + 1, size=requests)
    o_len = rng.integers(output.low, output.high + 1, size=requests)
    out = []
    for i in range(requests):
        ids = rng.integers(0, vocab_size, size=int(p_len[i]))
        out.append(Request(str(i), tuple(int(t) for t in ids), int(o_len[i]), int(arrivals[i])))
    return out


def _line_request(obj, where: str, number: int, clock_hz: float, encode: Callable[[str], list[int]] | None
                  ) -> Request:
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object, not {type(obj).__name__}")
    known = ("id", "prompt", "max_new_tokens", "arrival_cycle", "arrival_s")
    unknown = sorted(set(obj) - set(known))
    if unknown:
        raise InputError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(known)})")
    rid = obj.get("id", number)
    if not (isinstance(rid, str) and rid) and not _is_int(rid):
        raise InputError(f"{where}: id must be a non-empty string or an integer, not {rid!r}")
    if "prompt" not in obj:
        raise InputError(f"{where}: missing key 'prompt'")
    prompt = obj["prompt"]
    if isinstance(prompt, str):
        if encode is None:
            raise InputError(f"{where}: a text prompt needs the model's tokenizer, and this model has none "
                             f"(give token ids)")
        if not prompt:
            raise InputError(f"{where}: prompt is empty")
        try:
            prompt = encode(prompt)
        except ValueError as exc:
            raise InputError(f"{where}: prompt: {exc}") from None
    elif not isinstance(prompt, list) or not all(_is_int(t) for t in prompt):
        raise InputError(f"{where}: prompt must be a list of token ids or a string, not {json.dumps(prompt)[:60]}")
    if not prompt:
        raise InputError(f"{where}: prompt is empty")
    if "max_new_tokens" not in obj:
        raise InputError(f"{where}: missing key 'max_new_tokens'")
    n = obj["max_new_tokens"]
    if not _is_int(n) or n < 1:
        raise InputError(f"{where}: max_new_tokens must be a positive integer, not {json.dumps(n)}")
    if ("arrival_cycle" in obj) == ("arrival_s" in obj):
        raise InputError(f"{where}: give exactly one of arrival_cycle and arrival_s")
    if "arrival_cycle" in obj:
        a = obj["arrival_cycle"]
        if not _is_int(a) or not 0 <= a <= MAX_ARRIVAL_CYCLE:
            raise InputError(f"{where}: arrival_cycle must be an integer in 0..2**62, not {json.dumps(a)}")
    else:
        s = obj["arrival_s"]
        if isinstance(s, bool) or not isinstance(s, int | float) or not math.isfinite(s) or s < 0 \
                or s * clock_hz > MAX_ARRIVAL_CYCLE:
            raise InputError(f"{where}: arrival_s must be a non-negative number of seconds, not {json.dumps(s)}")
        a = math.ceil(s * clock_hz)
    return Request(str(rid), tuple(int(t) for t in prompt), n, int(a))


def read_trace(path, *, clock_hz: float, encode: Callable[[str], list[int]] | None = None) -> list[Request]:
    """The requests of the JSON Lines trace at ``path`` (module docstring), in file order;
    ``encode`` turns a text prompt into token ids (None: text prompts are refused). InputError (or
    OSError for a file that cannot be read) naming the file, the line and the value."""

    p = Path(path)
    if not p.exists():
        raise InputError(f"--trace {path}: no such file")
    with open_regular(p, MAX_TRACE_BYTES, "a request trace", error=InputError, label=f"--trace {path}") as f:
        data = f.read(MAX_TRACE_BYTES + 1)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"--trace {path}: not UTF-8 text (byte {exc.start})") from None
    out: list[Request] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{p.name} line {number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: not JSON ({exc.msg} at column {exc.colno})") from None
        r = _line_request(obj, where, number, clock_hz, encode)
        if r.id in seen:
            raise InputError(f"{where}: id {r.id!r} repeats line {seen[r.id]}")
        seen[r.id] = number
        out.append(r)
        if len(out) > MAX_REQUESTS:
            raise InputError(f"--trace {path}: more than {MAX_REQUESTS:,} requests")
    if not out:
        raise InputError(f"--trace {path}: no requests in the file")
    return out


def check_requests(requests: Sequence[Request], *, max_context: int, vocab_size: int) -> None:
    """InputError naming the request and the value when one can never run: an empty prompt, no new
    tokens, a token outside the vocabulary, or more positions (prompt + new tokens - 1) than a
    sequence's KV slot holds (``max_context``). More requests than KV slots is not an error: they queue."""
    seen = set()
    for r in requests:
        if r.id in seen:
            raise InputError(f"request {r.id}: the id repeats")
        seen.add(r.id)
        if not r.prompt:
            raise InputError(f"request {r.id}: prompt is empty")
        if not _is_int(r.max_new_tokens) or r.max_new_tokens < 1:
            raise InputError(f"request {r.id}: max_new_tokens must be a positive integer, not {r.max_new_tokens!r}")
        bad = next((t for t in r.prompt if not _is_int(t) or not 0 <= t < vocab_size), None)
        if bad is not None:
            raise InputError(f"request {r.id}: prompt token must be in 0..{vocab_size - 1}, not {bad!r}")
        need = len(r.prompt) + r.max_new_tokens - 1
        if need > max_context:
            raise InputError(f"request {r.id}: prompt ({len(r.prompt)} tokens) plus {r.max_new_tokens} new tokens "
                             f"needs {need} positions, more than a sequence's KV slot holds (max_context "
                             f"{max_context})")
        if not _is_int(r.arrival) or r.arrival < 0:
            raise InputError(f"request {r.id}: arrival must be a non-negative cycle, not {r.arrival!r}")


__all__ += ["check_requests"]
