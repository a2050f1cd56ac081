"""The one rule for a job's keys: a job is a plain JSON-able dict (it crosses into the simulator
process as JSON), and each kind's shape is a ``TypedDict`` next to the flow that reads it, every key
documented there. A module that defines flows keeps ``JOBS`` (flow name -> its job's TypedDict) beside
``FLOWS``; :func:`sim.engine.registry.flow` checks every job against it (:func:`check_keys`) before
the module's own ``CHECKS`` and before any simulator starts.

Shapes are total TypedDicts whose optional keys are marked ``NotRequired`` (read here from the type
hints: Python 3.11's ``__required_keys__`` misses the mark under ``from __future__ import annotations``).
A key whose type is itself a TypedDict, or a list of them, is checked the same way, one level down.
Pure Python (no NumPy): the simulator process imports the modules that define the shapes.
"""

from __future__ import annotations

import functools
from typing import NotRequired, Required, get_args, get_origin, get_type_hints, is_typeddict

from golden.errors import InputError, InputTypeError

__all__ = ["check_keys", "keys"]


@functools.cache
def keys(shape) -> tuple[dict[str, object], frozenset[str]]:
    """The key -> type table of the TypedDict ``shape`` (``NotRequired`` stripped) and its required keys."""
    if not is_typeddict(shape) or not shape.__total__:
        raise AssertionError(f"{shape!r} is not a total TypedDict")   # a bug in the shape, not in a job
    hints = get_type_hints(shape, include_extras=True)
    table, required = {}, set()
    for name, hint in hints.items():
        if get_origin(hint) in (NotRequired, Required):
            if get_origin(hint) is Required:
                required.add(name)
            hint = get_args(hint)[0]
        else:
            required.add(name)
        table[name] = hint
    return table, frozenset(required)


def check_keys(job, shape, what: str) -> None:
    """Refuse ``job`` (called ``what`` in the message, e.g. ``"gemm_unit job"``) when it is not a
    table, lacks a required key of ``shape`` or holds a key ``shape`` does not know: one line naming
    the key. Values are left to the flow's own checks."""
    if not isinstance(job, dict):
        raise InputTypeError(f"{what} must be a table, not {type(job).__name__}")
    table, required = keys(shape)
    unknown = sorted(str(k) for k in job if k not in table)
    if unknown:
        raise InputError(f"{what}: unknown key {unknown[0]!r} (known: {', '.join(table)})")
    missing = [k for k in table if k in required and k not in job]
    if missing:
        raise InputError(f"{what}: missing key {missing[0]!r}")
    for name, hint in table.items():
        if name not in job:
            continue
        if is_typeddict(hint):
            check_keys(job[name], hint, f"{what} {name}")
        elif get_origin(hint) is list and get_args(hint) and is_typeddict(get_args(hint)[0]):
            if not isinstance(job[name], list):
                raise InputTypeError(f"{what} {name} must be a list, not {type(job[name]).__name__}")
            for i, item in enumerate(job[name]):
                check_keys(item, get_args(hint)[0], f"{what} {name}[{i}]")
