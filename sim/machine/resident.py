"""Two compiled models resident in one decode top level: a target and a draft (speculative decoding).

The draft is compiled beside the target (:func:`sim.machine.compiler.compile_model` with ``beside``):
its program, weights, parameters and activation tables follow the target's in their memories, its
KV region is the top ``kv_slots`` slots of the KV memory, the scratchpad and the logits buffer are
shared (passes run one at a time, and every pass writes each value before it reads it). Each model
runs as passes of its own program (``DecodeTop.program_base``: the draft's first instruction), with
the instruction-level model and the cycle model of its own :class:`Compiled`, unchanged: only
addresses moved. The memories' fit rule is the compiler's (:func:`sim.machine.compiler.memory_needs`),
which counts both models. docs/top.md, "Two models resident".

The host loads ``sim.flows.decode.images(resident.draft)`` (both models' words) once per run.
"""

from __future__ import annotations

from dataclasses import dataclass

from golden.errors import InputError, InputTypeError
from golden.int_model import IntModel

from .compiler import Compiled, compile_model
from .passes import Row, check_pass

__all__ = ["MODEL_NAMES", "Resident", "resident"]

#: The names of the two resident models, in memory order.
MODEL_NAMES = ("target", "draft")


@dataclass(frozen=True)
class Resident:
    """A target and a draft compiled beside it, for one top level."""

    target: Compiled
    draft: Compiled

    def model(self, name) -> Compiled:
        """The model ``name``: "target" or "draft" (or 0, 1); InputError naming a bad one."""
        if isinstance(name, int) and not isinstance(name, bool) and name in (0, 1):
            name = MODEL_NAMES[name]
        if name not in MODEL_NAMES:
            raise InputError(f"a pass's model must be 'target' or 'draft', not {name!r}")
        return self.target if name == "target" else self.draft

    @property
    def program_bases(self) -> dict[str, int]:
        """Each model's first instruction's program address."""
        return {"target": self.target.program_base, "draft": self.draft.program_base}

    @property
    def kv_slots(self) -> dict[str, int]:
        """KV slots of each model: the draft's at the top of the KV memory, the target's below them."""
        return {"target": self.draft.kv_base // self.target.slot_rows, "draft": self.draft.kv_slots}

    def check_pass(self, name, rows) -> tuple[Row, ...]:
        """``rows`` of a pass of model ``name`` (:func:`sim.machine.passes.check_pass`), and no slot of the
        target in the draft's KV region; InputError in one line."""
        compiled = self.model(name)
        rows = check_pass(compiled, rows)
        slots = self.kv_slots["target" if compiled is self.target else "draft"]
        for i, r in enumerate(rows):
            if r.slot >= slots:
                raise InputError(f"pass row {i}: slot must be an integer in [0, {slots - 1}] (the target's KV "
                                 f"slots below the draft's), not {r.slot}")
        return rows


def resident(target: Compiled, draft, *, kv_slots: int = 1) -> Resident:
    """The target and the draft resident together. ``draft``: an IntModel (compiled here beside the
    target), a Compiled compiled beside ``target``, or one compiled alone for the same config (compiled
    again beside it); ``kv_slots``: the draft's KV slots when compiled here. CompileError (one line:
    the memory, the sizes) when the draft does not fit beside the target."""
    if not isinstance(target, Compiled):
        raise InputTypeError(f"target must be a Compiled model, not {type(target).__name__}")
    if isinstance(draft, Compiled) and draft.beside is target:
        return Resident(target, draft)
    if isinstance(draft, Compiled):
        draft = draft.model
    if not isinstance(draft, IntModel):
        raise InputTypeError(f"draft must be an IntModel or a Compiled model, not {type(draft).__name__}")
    return Resident(target, compile_model(draft, target.config, beside=target, kv_slots=kv_slots))
