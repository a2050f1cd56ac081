"""How the command line reports the errors a user can cause: one line, a non-zero exit, no traceback.

Exit statuses (README's "Using it" lists them): 0 success; 1 an error in what was asked
(a bad value, a file, a failed simulation); 2 a usage error found while parsing the command line (an
unknown command or option, a value of the wrong type); 3 an internal error (a bug in Lockstep);
128 + the signal number when interrupted (130 for SIGINT / Ctrl-C, 143 for SIGTERM). Every one of them
is one line ``lockstep: error: ...``.

Which errors are the user's: the project's own types (:class:`golden.errors.LockstepError` and its
subclasses, raised by every check of a value, a file, a configuration, a simulation's outcome) and
``OSError`` (a file or device the user named). Any other exception, a bare ``ValueError`` from deep
inside included, is a bug: one line naming its type and asking for a rerun with ``--debug`` (which
prints the traceback first) and a report, exit status :data:`INTERNAL_EXIT`.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import traceback

import click

from golden.errors import LockstepError

__all__ = ["INTERNAL_EXIT", "USAGE_EXIT", "InternalError", "Interrupted", "Terminated", "UserError", "emit_error",
           "friendly", "interrupted", "one_line"]

#: Exit status of a usage error (the command line itself is malformed), as click and argparse use.
USAGE_EXIT = 2

#: Exit status of an internal error: an exception that is not one of the project's own, i.e. a bug.
INTERNAL_EXIT = 3


def one_line(text: str) -> str:
    """``text`` with its line breaks and runs of white space folded into single spaces."""
    return " ".join(str(text).split())


#: Whether the command line asked for JSON (``--json``): its errors are then one JSON object on
#: stderr, ``{"error": "..."}``, with the same exit status.
_json_errors = False


def emit_error(message: str) -> None:
    """Print one error: ``lockstep: error: MESSAGE``, or ``{"error": "MESSAGE"}`` under ``--json``."""
    if _json_errors:
        click.echo(json.dumps({"error": one_line(message)}), err=True)
    else:
        click.echo(f"lockstep: error: {one_line(message)}", err=True)


class UserError(click.ClickException):
    """An error worth one line: printed as ``lockstep: error: ...``, exit status 1."""

    def show(self, file=None):
        emit_error(self.format_message())


class InternalError(UserError):
    """A bug in Lockstep (an exception none of its checks raised): one line, exit status :data:`INTERNAL_EXIT`."""

    exit_code = INTERNAL_EXIT

    def __init__(self, exc: BaseException):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        super().__init__(f"internal error: {type(exc).__name__}{': ' + first if first else ''} (a bug in "
                         f"Lockstep: rerun with 'lockstep --debug ...' for the traceback and report it)")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so that the same clean-up
    (simulator processes stopped, run directories removed) runs for both."""

    signum = signal.SIGTERM


class Interrupted(UserError):
    """The command was interrupted by a signal: exit status 128 + the signal's number."""

    def __init__(self, signum: int):
        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name}{' (Ctrl-C)' if signum == signal.SIGINT else ''}")
        self.exit_code = 128 + int(signum)


def interrupted(exc: BaseException) -> Interrupted:
    """The one-line error for a KeyboardInterrupt (SIGINT) or a :class:`Terminated` (SIGTERM)."""
    return Interrupted(getattr(exc, "signum", signal.SIGINT))


_handler_pid: int | None = None


def _raise_terminated(signum, frame):
    if os.getpid() != _handler_pid:   # a forked worker (a sweep's pool): SIGTERM's default, as before
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    raise Terminated()


def handle_sigterm() -> None:
    """From now on SIGTERM raises :class:`Terminated` in this process's main thread (Python's
    default is to die at once, with no clean-up); processes forked from it keep the default."""
    global _handler_pid
    _handler_pid = os.getpid()
    signal.signal(signal.SIGTERM, _raise_terminated)


def debugging() -> bool:
    """True when ``lockstep --debug`` runs: internal errors show their traceback."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.find_root().params.get("debug"))


def friendly(fn):
    """Turn the errors a user can cause (:class:`golden.errors.LockstepError`, ``OSError``) into
    one-line messages, exit status 1; any other exception is a bug: :class:`InternalError`, with the
    traceback first under ``--debug``."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:
            # The reader of the output went away (`lockstep sweep-table DB | head`): not an error of
            # ours. Quiet, with the status a shell gives a process SIGPIPE ended (128 + 13).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise click.exceptions.Exit(128 + signal.SIGPIPE) from None
        except (LockstepError, OSError) as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(message) from None
        except KeyboardInterrupt as exc:
            raise interrupted(exc) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if debugging():
                traceback.print_exc()
            raise InternalError(exc) from None
    return wrapper


#: What click raises for a group called with no arguments (click >= 8.2).
_NoArgsIsHelp = getattr(click.exceptions, "NoArgsIsHelpError", ())


class LockstepGroup(click.Group):
    """The ``lockstep`` group: one rule for every error click itself finds (an unknown command, an
    option's value of the wrong type, a missing argument, a directory where a file is wanted):
    one line ``lockstep: error: ...`` and exit status :data:`USAGE_EXIT`, like the commands' own
    errors; an interrupt while parsing is one line too."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        global _json_errors
        _json_errors = "--json" in (sys.argv[1:] if args is None else list(args))
        try:
            return self._main(args, prog_name, complete_var, standalone_mode, **extra)
        finally:     # the error mode is this invocation's: a later one in the same process starts plain
            _json_errors = False

    def _main(self, args, prog_name, complete_var, standalone_mode, **extra):
        handle_sigterm()
        try:
            try:
                status = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            except KeyboardInterrupt as exc:   # outside a command (parsing, imports)
                raise interrupted(exc) from None
            except click.Abort as exc:         # click's own wrapping of a KeyboardInterrupt
                raise interrupted(exc.__context__ or KeyboardInterrupt()) from None
        except _NoArgsIsHelp as exc:         # "lockstep" alone asks for nothing: the help, as --help gives it
            click.echo(exc.ctx.get_help())
            status = 0
        except click.UsageError as exc:
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            emit_error(f"{one_line(exc.format_message()).rstrip('.')}{where}")
            status = USAGE_EXIT
        except click.ClickException as exc:
            emit_error(exc.format_message())
            status = exc.exit_code
        if not standalone_mode:
            return status
        sys.exit(status if isinstance(status, int) else 0)

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except KeyboardInterrupt as exc:
            raise interrupted(exc) from None
