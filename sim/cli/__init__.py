"""The ``lockstep`` command line (entry point ``sim.cli:main``)."""

from .commands import main

__all__ = ["main"]
