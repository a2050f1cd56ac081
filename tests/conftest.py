"""Shared fixtures: design points and simulators come from the configuration, not literals."""

import os

import pytest

from hdl.config import PRESETS
from sim.engine.toolchain import SIMULATORS  # noqa: F401 (the one simulator list, imported by the RTL tests from here)

#: The array shapes every RTL regression runs on.
SHAPES = ("4x4", "8x4")


@pytest.fixture(params=SHAPES)
def config(request):
    return PRESETS[request.param]


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Keep simulator builds in the user's cache unless a test run asks for its own."""
    os.environ.setdefault("LOCKSTEP_CACHE", os.path.expanduser("~/.cache/lockstep"))
    # No single simulator run of the suite takes near 20 minutes: past that it is stuck, and the
    # runner's wall-clock backstop stops it (the flows' cycle watchdogs catch the rest far sooner).
    os.environ.setdefault("LOCKSTEP_SIM_TIMEOUT", "1200")
    yield
