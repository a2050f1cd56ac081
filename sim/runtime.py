"""The runtime: one host decode loop, several backends behind one interface.

A run: load a checkpoint, quantize it, compile it for a configuration, load the backend's memories
once, then feed the prompt through the decode step one token at a time (prefill) and generate.
Every step reports the token, the cycles the cycle model predicts for it and, where the backend
measures them, the cycles it took.

Backends today:

* ``golden``: the integer model (:class:`golden.int_model.IntModel`), the specification;
* ``isa``: the instruction-level model (:class:`sim.machine.isa_sim.IsaMachine`) running the compiled
  program on its memory images;
* ``amaranth``, ``icarus``, ``verilator``: the decode top level (:class:`hdl.top.DecodeTop`) on a
  simulator. The simulator runs the whole loop in one start (:mod:`sim.flows.decode`'s ``decode_top`` flow:
  the images are loaded once, each step's token is fed back by the flow); every step reports the
  cycles the RTL's counter measured and the wall time of its free run.

* ``serial``: a board running the decode accelerator behind its UART bridge
  (:class:`hdl.link.LinkedDecode`, built by ``lockstep build``), over a serial port: the images are
  written over the link once, then every step goes over the framed protocol
  (:class:`sim.link.host.LinkDecoder`, the same host code the simulated-UART tests drive against the
  RTL's pins); its steps report the cycle counter read back over the link.
"""

from __future__ import annotations

import asyncio
import json as _json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from golden.errors import InputError
from golden.greedy import GreedyDecode, check_prompt
from golden.quantize import quantize_checkpoint

from .engine.runner import Cancel, check_simulator, new_progress_file, run
from .engine.toolchain import SIMULATORS
from .flows.decode import decode_job, images, top_params
from .link.host import Link, LinkDecoder, SerialTransport
from .machine.compiler import Compiled, compile_model
from .machine.cycles import Bounds, decode_step_cycles
from .machine.isa_sim import IsaMachine
from .machine.passes import lone_table
from .numbers import measured_seconds

__all__ = ["BACKENDS", "RTL_BACKENDS", "Backend", "RunReport", "StepReport", "check_request", "decode", "prepare"]


class Backend:
    """One decode step at a time: ``step(token, position) -> (next token, measured cycles or None)``.

    :meth:`begin` is called once before the first step with the whole request (an RTL backend
    runs the simulation there); :meth:`wall_seconds` may replace the host's timing of a step.
    """

    name = "backend"

    def __init__(self, compiled: Compiled):
        self.compiled = compiled

    def begin(self, prompt: list[int], new_tokens: int) -> None:
        return None

    def finish(self) -> dict:
        """After the last step: anything the backend has to report (e.g. a waveform's path)."""
        return {}

    def abort(self) -> None:
        """After an error or an interrupt, instead of :meth:`finish`: stop whatever still runs and
        remove what the run made (processes, run directories, progress files)."""
        return None

    def wall_seconds(self, position: int, measured: float) -> float:
        return measured

    def step(self, token: int, position: int) -> tuple[int, int | None]:  # pragma: no cover - interface
        raise NotImplementedError


class GoldenBackend(Backend):
    name = "golden"

    def __init__(self, compiled: Compiled):
        super().__init__(compiled)
        self.model = compiled.model
        self.cache = self.model.new_cache()

    def step(self, token, position):
        if position != self.cache.length:
            raise InputError(f"golden backend steps in order: expected position {self.cache.length}, not {position}")
        values = self.model.run([token], self.cache)
        return int(values[self.compiled.token_value][-1, 0]), None


class IsaBackend(Backend):
    name = "isa"

    def __init__(self, compiled: Compiled):
        super().__init__(compiled)
        self.machine = IsaMachine(compiled)
        if compiled.config.kv_block:        # paged KV: the lone sequence's table, as the RTL flow's steps
            self.machine.set_table(0, lone_table(compiled))

    def step(self, token, position):
        return self.machine.step(token, position), None


class RtlBackend(Backend):
    """The decode top level on one simulator: the whole request runs in :meth:`begin`."""

    simulator = ""

    def __init__(self, compiled: Compiled):
        super().__init__(compiled)
        check_simulator(self.simulator)
        self.params = top_params(compiled)        # CompileError for a model the design cannot run
        self.results: dict[int, dict] = {}
        self.load_seconds = 0.0

    waves = False
    #: Read every step's per-instruction cycles from the trace memory (a profile): ``traces``.
    trace = False
    #: With ``waves``: dump only these steps or cycles (:func:`sim.flows.decode.check_waves_window`).
    waves_window: dict | None = None
    traces: dict[int, list[int]] = {}

    def begin(self, prompt, new_tokens):
        """Start the whole request on the simulator in the background; :meth:`step` returns each
        step as the simulator finishes it (the flow appends one line per step to a progress file)."""
        job = decode_job(self.compiled, self.params, prompt=prompt, new_tokens=new_tokens, trace=self.trace,
                         waves_window=self.waves_window)
        self._progress, self._progress_held = new_progress_file()
        job["progress"] = str(self._progress)
        self._outcome: dict = {}
        self._cancel = Cancel()

        def work():
            try:
                self._outcome["result"] = run(self.simulator, "decode_top", self.params, "decode_top", job,
                                              waves=self.waves, cancel=self._cancel)
            except BaseException as exc:  # handed to the caller's thread in step()
                self._outcome["error"] = exc

        self._thread = threading.Thread(target=work, daemon=True)
        self._thread.start()

    def _poll(self):
        lines = self._progress.read_text().splitlines() if self._progress.exists() else []
        for line in lines[len(self.results):]:
            if line.endswith("}"):
                r = _json.loads(line)
                self.results[r["position"]] = r

    def step(self, token, position):
        while position not in self.results:
            self._poll()
            if position in self.results:
                break
            if not self._thread.is_alive():
                self._thread.join()
                self._poll()
                if position in self.results:
                    break
                if "error" in self._outcome:
                    raise self._outcome["error"]
                raise RuntimeError(f"{self.name} backend: the simulation ended before position {position}")
            time.sleep(0.02)
        r = self.results[position]
        if r["token_in"] != token:
            raise RuntimeError(f"{self.name} backend: simulated token {r['token_in']} at position {position}, "
                               f"expected {token}")
        return r["token_out"], r["cycles"]

    def finish(self) -> dict:
        """Wait for the simulator to end; its result (load time, waves path)."""
        self._thread.join()
        self._remove_progress()
        if "error" in self._outcome:
            raise self._outcome["error"]
        result = self._outcome["result"]
        self.load_seconds = result["load_seconds"]
        self.traces = {r["position"]: r["trace"] for r in result["steps"] if "trace" in r}
        return result

    #: Seconds an aborted run's worker thread is given to stop (its simulator is killed at once).
    ABORT_WAIT_S = 30.0

    def abort(self) -> None:
        if getattr(self, "_thread", None) is None:
            return
        self._cancel.cancel()
        # Amaranth's simulator runs in this process, in a thread nothing can stop: it ends with the process.
        self._thread.join(timeout=0 if self.simulator == "amaranth" else self.ABORT_WAIT_S)
        self._remove_progress()

    def _remove_progress(self) -> None:
        self._progress.unlink(missing_ok=True)
        self._progress_held.close()

    def wall_seconds(self, position, measured):
        return self.results[position]["seconds"]


class SerialBackend(Backend):
    """A board behind a serial port (pyserial): ``port`` (the device, e.g. ``/dev/ttyUSB0``) and
    ``baud`` are set before :meth:`begin`. The board must run the top level this model was
    compiled for (INFO is checked against it before anything is written)."""

    name = "serial"
    port: str | None = None
    baud = 115200
    #: The board already holds this model (an earlier run loaded it): check the program, load nothing.
    loaded = False
    #: Seconds a reply may take to begin or to continue.
    timeout = 2.0

    def __init__(self, compiled: Compiled):
        super().__init__(compiled)
        self.params = top_params(compiled)
        self.load_seconds = 0.0
        self.on_load: Callable[[int, int], None] | None = None
        self._transport = None

    def _run(self, coroutine):
        return self._loop.run_until_complete(coroutine)

    def begin(self, prompt, new_tokens):
        if not self.port:
            raise InputError("the serial backend needs --port, the board's serial device (e.g. /dev/ttyUSB0)")
        self._transport = SerialTransport(self.port, baud=self.baud, timeout=self.timeout)
        self._loop = asyncio.new_event_loop()
        mc = self.compiled.model.config
        self.decoder = LinkDecoder(Link(self._transport), params=self.params, n_kv_heads=mc.n_kv_heads,
                                   group=mc.n_heads // mc.n_kv_heads)
        try:
            self._run(self.decoder.connect())
            t0 = time.perf_counter()
            if self.loaded:
                self._run(self.decoder.check_loaded(images(self.compiled)))
            else:
                self._run(self.decoder.load(images(self.compiled), progress=self.on_load))
            self.load_seconds = time.perf_counter() - t0
        except BaseException:
            self.finish()
            raise

    def step(self, token, position):
        r = self._run(self.decoder.step(token, position))
        return r["token_out"], r["cycles"]

    def finish(self) -> dict:
        if self._transport is not None:
            self._transport.close()
            self._loop.close()
            self._transport = None
        return {}

    def abort(self) -> None:
        self.finish()


class AmaranthBackend(RtlBackend):
    name = simulator = "amaranth"


class IcarusBackend(RtlBackend):
    name = simulator = "icarus"


class VerilatorBackend(RtlBackend):
    name = simulator = "verilator"


BACKENDS: dict[str, Callable[[Compiled], Backend]] = {
    "golden": GoldenBackend, "isa": IsaBackend, "amaranth": AmaranthBackend, "icarus": IcarusBackend,
    "verilator": VerilatorBackend, "serial": SerialBackend,
}
#: Backends that run the RTL (their steps report measured cycles).
RTL_BACKENDS = SIMULATORS
#: Backends whose steps report measured cycles: the simulated RTL and a board.
MEASURING_BACKENDS = (*RTL_BACKENDS, "serial")


@dataclass
class StepReport:
    position: int
    token_in: int
    token_out: int
    predicted_cycles: int
    measured_cycles: int | None
    wall_seconds: float
    generated: bool
    #: The RTL trace memory's count for every instruction but HALT (``decode(profile=True)`` on an RTL
    #: backend), else None.
    trace: list[int] | None = None


@dataclass
class RunReport:
    backend: str
    clock_hz: int
    prompt: list[int]
    generated: list[int] = field(default_factory=list)
    steps: list[StepReport] = field(default_factory=list)
    #: The mean step's lower bounds (:class:`sim.machine.cycles.Bounds`), set when the run ends.
    bounds: Bounds | None = None
    waves: str | None = None
    #: The design point's configuration fields (:meth:`hdl.config.Config.as_dict`).
    config: dict = field(default_factory=dict)
    #: Seconds the backend spent loading the memory images before the first step (RTL backends, a board).
    load_seconds: float = 0.0

    @property
    def measured(self) -> bool:
        """Whether any step's cycles were measured (RTL backends and a board; not isa or golden)."""
        return any(s.measured_cycles is not None for s in self.steps)

    @property
    def cycle_exact(self) -> bool | None:
        """Every step's measured cycles equal its prediction: True or False where the cycles were
        measured, None where nothing was measured (a claim with no measurement behind it)."""
        if not self.measured:
            return None
        return all(s.measured_cycles == s.predicted_cycles for s in self.steps)

    @property
    def simulated_cycles_per_second(self) -> float | None:
        """Measured cycles over the wall time of the free runs (RTL backends only)."""
        measured = [s for s in self.steps if s.measured_cycles is not None]
        wall = sum(s.wall_seconds for s in measured)
        return sum(s.measured_cycles for s in measured) / wall if measured and wall > 0 else None

    @property
    def predicted_cycles_per_token(self) -> float:
        return sum(s.predicted_cycles for s in self.steps) / max(1, len(self.steps))

    @property
    def tokens_per_second(self) -> float:
        """At the configured clock, from the predicted cycles (every step counts: prefill runs the same step)."""
        return self.clock_hz / self.predicted_cycles_per_token

    @property
    def lower_bound(self) -> float:
        return self.bounds.lower_bound

    @property
    def efficiency(self) -> float:
        return self.bounds.efficiency

    def as_dict(self) -> dict:
        """The run as JSON: model quantities exact, wall times to the millisecond, the simulated rate
        (measured cycles over a measured wall time) to the cycle per second."""
        rate = self.simulated_cycles_per_second
        return {
            "backend": self.backend, "prompt": self.prompt, "generated": self.generated,
            "clock_hz": self.clock_hz, "steps": len(self.steps),
            "predicted_cycles_per_token": self.predicted_cycles_per_token,
            "predicted_cycles": [s.predicted_cycles for s in self.steps],
            "measured_cycles": [s.measured_cycles for s in self.steps],
            "cycle_exact": self.cycle_exact,
            "tokens_per_second_at_clock": self.tokens_per_second,
            **self.bounds.as_dict(),
            "wall_seconds": measured_seconds(sum(s.wall_seconds for s in self.steps)),
            "load_seconds": measured_seconds(self.load_seconds),
            "simulated_cycles_per_second": None if rate is None else round(rate), "waves": self.waves,
            "design": {"config": self.config},
        }


def prepare(checkpoint, config) -> Compiled:
    """Quantize ``checkpoint`` with its default calibration and compile it for ``config``."""
    return compile_model(quantize_checkpoint(checkpoint), config)


def check_request(compiled: Compiled, backend: str, prompt: Sequence[int], new_tokens: int) -> tuple[list[int], int]:
    """Check a run before anything starts (:func:`golden.greedy.check_prompt`); return the prompt as ints
    and the number of steps."""
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    prompt = check_prompt(prompt, new_tokens, compiled.model.max_context, compiled.model.config.vocab_size)
    return prompt, GreedyDecode(prompt, new_tokens).steps


def decode(compiled: Compiled, backend: str, prompt: Sequence[int], new_tokens: int, *,
           on_step: Callable[[StepReport], None] | None = None, waves: bool = False, port: str | None = None,
           baud: int = 115200, loaded: bool = False, profile: bool = False,
           waves_window: dict | None = None) -> RunReport:
    """Prefill ``prompt`` then generate ``new_tokens`` greedily on ``backend``. With ``profile``, an
    RTL backend also reads every step's per-instruction cycles from the trace memory
    (:attr:`StepReport.trace`; :func:`sim.machine.profile.profile_run` turns them into tables).

    Raises ValueError for an unknown backend, an empty prompt, a token outside the vocabulary or a
    run longer than the compiled context.
    """
    prompt, _ = check_request(compiled, backend, prompt, new_tokens)
    runner = BACKENDS[backend](compiled)
    if waves:
        if not hasattr(runner, "waves"):
            raise InputError(f"--waves needs an RTL backend (amaranth, icarus, verilator), not {backend}")
        runner.waves = True
        if waves_window is not None:
            if backend != "verilator":
                raise InputError(f"a waveform window (--waves-steps, --waves-cycles) needs the verilator backend, "
                                 f"not {backend}")
            runner.waves_window = waves_window
    elif waves_window is not None:
        raise InputError("a waveform window (--waves-steps, --waves-cycles) goes with --waves")
    if backend == "serial":
        runner.port, runner.baud, runner.loaded = port, baud, loaded
    elif port is not None or loaded:
        raise InputError(f"--port and --loaded are for the serial backend, not {backend}")
    if profile and isinstance(runner, RtlBackend):
        runner.trace = True
    runner.begin(prompt, new_tokens)
    try:
        report = _decode_steps(runner, compiled, backend, GreedyDecode(prompt, new_tokens), on_step)
    except BaseException:   # an error or an interrupt (Ctrl-C, SIGTERM): nothing is left running or behind
        runner.abort()
        raise
    traces = getattr(runner, "traces", {})
    for step in report.steps:
        step.trace = traces.get(step.position)
    return report


def _decode_steps(runner: Backend, compiled: Compiled, backend: str, loop: GreedyDecode,
                  on_step: Callable[[StepReport], None] | None) -> RunReport:
    model = compiled.model
    report = RunReport(backend=backend, clock_hz=compiled.config.clock_hz, prompt=loop.prompt,
                       config=compiled.config.as_dict(), generated=loop.generated)
    bounds = []
    for position in range(loop.steps):
        predicted = decode_step_cycles(model.program, model.config, compiled.config, position=position)
        bounds.append(predicted.bound_report)
        token = loop.token(position)
        t0 = time.perf_counter()
        nxt, measured = runner.step(token, position)
        wall = runner.wall_seconds(position, time.perf_counter() - t0)
        step = StepReport(position, token, nxt, predicted.total, measured, wall, loop.record(position, nxt))
        report.steps.append(step)
        if on_step is not None:
            on_step(step)
    report.bounds = Bounds.mean(bounds)
    report.waves = runner.finish().get("waves")
    report.load_seconds = getattr(runner, "load_seconds", 0.0)
    return report
