"""The project's own error types: every error a user's input can cause is one of them.

``lockstep``'s command line (sim/cli/errors.py) prints a :class:`LockstepError` (and an ``OSError``,
a file or device the user named) as one line ``lockstep: error: ...``, exit status 1; any other
exception is a bug in Lockstep and is reported as an internal error (exit status 3, the traceback
with ``--debug``).

Checks of a value or a parameter raise :class:`InputError` (a ``ValueError``) or
:class:`InputTypeError` (a ``TypeError``), as STYLE.md asks constructors to, so callers that catch
``ValueError``/``TypeError`` keep working; the specialised errors (``CheckpointError``,
``HardwareError``, ``SweepError``, ``CompileError``, ``FitError``, ``FrameError``) derive from
:class:`InputError`, and the run-time ones (``SimulationError``, ``WatchdogError``, ``LinkError``,
``ToolchainError``, ``BuildError``) from :class:`LockstepError` and ``RuntimeError``.
"""

from __future__ import annotations

__all__ = ["InputError", "InputTypeError", "LockstepError"]


class LockstepError(Exception):
    """An error a user can cause or meet (bad input, a failed simulation or build, a link fault),
    as opposed to a bug in Lockstep: its message is one line that names the input and the value."""


class InputError(LockstepError, ValueError):
    """A parameter, configuration field, file or argument with a bad value or combination."""


class InputTypeError(LockstepError, TypeError):
    """A parameter, configuration field, file or argument of the wrong kind."""
