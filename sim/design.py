"""One design description for every command: a TOML file, changed from the command line by ``--set``.

A design is named (a file shipped in ``hdl/designs/``: ``lockstep presets`` lists them) or a path to
the user's own TOML file; ``--set KEY=VALUE`` (repeatable) changes one key of it before anything
reads it. Every command that takes a design (``run``, ``decode``, ``gemm``, ``build``, ``estimate``,
``sweep``) reads it here, so the keys, the checks and the messages are the same everywhere.

The tables (docs/design.md lists every key):

* ``[chip]``: the RTL's configuration, :class:`hdl.config.Config` (any of its fields, the others at
  their defaults; ``weight_memory_bytes`` sizes the weight memory in bytes, its depth following the
  array's width), plus ``weight_bytes`` (the weights' element size: the RTL computes int8, the
  performance model also takes 2);
* ``[[memory]]``, ``[system]``, ``[link]``, ``[tp_link]``: the performance model's additions
  (:class:`sim.perf.model.Hardware`): memory levels beyond the chip's own weight memory, chips per
  system and the links between them.

A design whose chip the RTL can build is an *RTL design*: ``run``, ``decode``, ``gemm`` and ``build``
take it (its :attr:`Design.config`). Any design is a performance-model hardware (:attr:`Design.hardware`):
``estimate`` and ``sweep`` take every one. A design only the model can evaluate (a TPU, an A100, Groq's
or Cerebras' systems) is refused by the RTL commands in one line that says why.

``--set`` keys: a bare key is a ``[chip]`` key (``array_rows=4``); a dotted key names a table
(``system.chips=4``, ``link.latency_s=1e-6``) or a memory level by its name or its number in the
file's ``[[memory]]`` list (``memory.sdram.capacity_bytes=64e6``, ``memory.1.latency_s=0``). Values are
TOML values (``25e6``, ``true``, ``"text"``); text that is not one is taken as a string.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from golden.errors import InputError
from hdl.config import PRESETS, Config, chip_config, rtl_refusal

from .perf.model import Hardware, HardwareError, hardware_data, hardware_from_dict, list_presets, place

__all__ = ["MAX_SETTINGS", "Design", "design_names", "designs_holding", "load_design", "parse_setting",
           "rtl_design_names"]

#: The most ``--set`` options one command takes (a bound on the work before any check).
MAX_SETTINGS = 256
#: Top-level keys a ``--set`` may change, besides the tables.
_TOP_KEYS = ("name", "description")
#: The weight memory's size in words and in bytes: setting one replaces the other.
_SAME_MEMORY = {"weight_words": "weight_memory_bytes", "weight_memory_bytes": "weight_words"}
#: Tables a dotted ``--set`` key may name.
_TABLES = ("chip", "system", "link", "tp_link", "memory")


def design_names() -> list[str]:
    """Every shipped design, by name."""
    return list_presets()


def rtl_design_names() -> list[str]:
    """The shipped designs the RTL can build."""
    return list(PRESETS)


@dataclass(frozen=True)
class Design:
    """One design point: its description after ``--set``, the RTL configuration when the RTL can be
    built for it, and the performance model's view of it."""

    name: str
    description: str
    tables: dict                      # the TOML tables after --set (a fresh copy: changing it changes nothing)
    hardware: Hardware
    config: Config | None             # None: only the performance model evaluates this design
    not_rtl: str | None = None        # why the RTL cannot be built (None for an RTL design)
    settings: tuple[str, ...] = ()    # the --set options applied, as given

    @property
    def rtl(self) -> bool:
        return self.config is not None

    def rtl_config(self) -> Config:
        """The RTL configuration; one-line InputError saying why when only the model evaluates it."""
        if self.config is None:
            given = f" (with --set {' '.join(self.settings)})" if self.settings else ""
            raise InputError(f"design {self.name}{given} is for the performance model only: {self.not_rtl} (designs "
                             f"the RTL builds: {', '.join(rtl_design_names())})")
        return self.config

    def as_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "rtl": self.rtl, "not_rtl": self.not_rtl,
                "settings": list(self.settings), "config": self.config.as_dict() if self.config else None,
                "chip": {"array_rows": self.hardware.array_rows, "array_cols": self.hardware.array_cols,
                         "vector_lanes": self.hardware.vector_lanes, "clock_hz": self.hardware.clock_hz,
                         "weight_bytes": self.hardware.weight_bytes},
                "memory": [{"name": m.name, "capacity_bytes": m.capacity_bytes,
                            "bandwidth_bytes_per_s": m.bandwidth_bytes_per_s} for m in self.hardware.memories],
                "chips": self.hardware.chips}


def parse_setting(item: str) -> tuple[tuple[str, ...], Any]:
    """``(key path, value)`` of one ``--set KEY=VALUE``; InputError naming the option when it is not one."""
    key, sep, text = str(item).partition("=")
    key = key.strip()
    if not sep or not key:
        raise InputError(f"--set takes KEY=VALUE, not {item!r}")
    parts = tuple(p.strip() for p in key.split("."))
    if any(not p for p in parts):
        raise InputError(f"--set {key}: empty part in the key")
    if len(parts) == 1:
        parts = parts if parts[0] in _TOP_KEYS else ("chip", parts[0])
    if parts[0] not in _TOP_KEYS + _TABLES:
        raise InputError(f"--set {key}: unknown table {parts[0]!r} (tables: {', '.join(_TABLES)}; a bare key is a "
                         f"[chip] key)")
    if parts[0] in _TOP_KEYS and len(parts) != 1 or parts[0] == "memory" and len(parts) != 3 \
            or parts[0] in ("chip", "system", "link", "tp_link") and len(parts) != 2:
        raise InputError(f"--set {key}: expected KEY, TABLE.KEY or memory.LEVEL.KEY")
    text = text.strip()
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    return parts, value


def _apply(tables: dict, parts: tuple[str, ...], value, item: str) -> None:
    if len(parts) == 1:
        tables[parts[0]] = value
        return
    if parts[0] != "memory":
        table = tables.setdefault(parts[0], {})
        if not isinstance(table, dict):
            raise InputError(f"--set {item}: [{parts[0]}] is not a table in this design")
        if parts[0] == "chip" and parts[1] in _SAME_MEMORY:   # two spellings of one size: the latest wins
            table.pop(_SAME_MEMORY[parts[1]], None)
        table[parts[1]] = value
        return
    levels = tables.get("memory", [])
    level = parts[1]
    if level.isdigit():
        index = int(level) - 1
        if not 0 <= index < len(levels):
            raise InputError(f"--set {item}: the design has {len(levels)} [[memory]] level(s), not a #{level}")
    else:
        names = [m.get("name") for m in levels if isinstance(m, dict)]
        if level not in names:
            raise InputError(f"--set {item}: no [[memory]] level named {level!r} (levels: "
                             f"{', '.join(map(str, names)) or 'none'})")
        index = names.index(level)
    levels[index][parts[2]] = value


def load_design(hw: str, settings=()) -> Design:
    """The design named ``hw`` (or the TOML file at that path) with ``settings`` (``KEY=VALUE``
    strings) applied, checked as the RTL's configuration and as the performance model's hardware."""
    settings = tuple(settings)
    if len(settings) > MAX_SETTINGS:
        raise InputError(f"--set may be given at most {MAX_SETTINGS} times, not {len(settings)}")
    tables, name = hardware_data(hw)
    for item in settings:
        parts, value = parse_setting(item)
        _apply(tables, parts, value, item)
    name = str(tables.get("name", name))
    source = (f"design {name}" if str(hw) in design_names() else Path(hw).name) + (" with --set" if settings else "")
    chip = tables.get("chip")
    if not isinstance(chip, dict):
        raise InputError(f"{source}: missing table [chip]")
    not_rtl = rtl_refusal(chip, source=f"{source} [chip]")
    hardware = hardware_from_dict(tables, name=name, source=source)
    config = chip_config(chip, source=f"{source} [chip]") if not_rtl is None else None
    return Design(name=name, description=str(tables.get("description", "")), tables=tables, hardware=hardware,
                  config=config, not_rtl=not_rtl, settings=settings)


def designs_holding(model_config, *, context: int, batch: int = 1, name: str = "the model") -> list[Design]:
    """The shipped designs whose memory levels hold ``model_config``'s weights (and the KV cache where
    a level keeps it) at ``context`` and ``batch``: fewest chips first, RTL designs before the
    others, then by name."""
    out = []
    for n in design_names():
        d = load_design(n)
        try:
            place(model_config, d.hardware, context=context, batch=batch, name=name)
        except HardwareError:
            continue
        out.append(d)
    return sorted(out, key=lambda d: (d.hardware.chips, not d.rtl, d.name))
