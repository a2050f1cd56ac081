"""How the command line reports the errors a user can cause: one line, a non-zero exit, no traceback."""

from __future__ import annotations

import functools

import click

__all__ = ["UserError", "friendly"]


class UserError(click.ClickException):
    """An error worth one line: printed as ``lockstep: error: ...``, exit status 1."""

    def show(self, file=None):
        click.echo(f"lockstep: error: {self.format_message()}", err=True)


def friendly(fn):
    """Turn the errors a user can cause into one-line messages."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .bus import WatchdogError
        from .link import LinkError
        from .runner import SimulationError
        from .toolchain import ToolchainError

        try:
            return fn(*args, **kwargs)
        except (ValueError, TypeError, SimulationError, ToolchainError, WatchdogError, OSError, LinkError) as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(message) from None
        except KeyboardInterrupt:
            raise UserError("interrupted") from None
    return wrapper
