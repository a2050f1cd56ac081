"""``verilator --lint-only -Wall`` over generated Verilog, with a reviewed waiver list.

Amaranth's Verilog trips a few style warnings by construction; they are waived by name, each with
its reason. Any other warning or error is a finding. MULTIDRIVEN, LATCH, UNOPTFLAT, COMBDLY and
BLKANDNBLK are never waived: they point at real hardware problems.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .toolchain import prepare_environment

__all__ = ["WAIVERS", "LintReport", "lint_verilog"]

WAIVERS = {
    "UNUSEDSIGNAL": "Amaranth keeps intermediate nets and unused bits of wide payloads by name",
    "PROCASSINIT": "Amaranth gives every register an initial value and also drives it from a process",
    "WIDTHEXPAND": "Amaranth relies on Verilog's implicit widening of signed operands (e.g. int16 into a 33-bit add)",
    "WIDTHTRUNC": "Amaranth assigns a wider expression to a narrower net on purpose (the 32-bit wrap)",
    "DECLFILENAME": "all modules of a design live in one generated file",
    "CASEINCOMPLETE": "Amaranth writes a Switch on an opcode as a case without default after assigning the "
                      "net its default value, so an uncovered value keeps that default (a latch would be "
                      "LATCH, never waived)",
}
_FINDING = re.compile(r"^%(Warning|Error)(?:-([A-Z0-9_]+))?: (.*)$")


@dataclass
class LintReport:
    waived: Counter = field(default_factory=Counter)
    findings: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.findings


def lint_verilog(verilog_text: str, toplevel: str) -> LintReport:
    """Lint ``verilog_text``; findings outside :data:`WAIVERS` are listed in the report."""
    prepare_environment()
    report = LintReport()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / f"{toplevel}.v"
        source.write_text(verilog_text)
        out = subprocess.run(["verilator", "--lint-only", "-Wall", "--top-module", toplevel, str(source)],
                             capture_output=True, text=True, timeout=300)
    for line in out.stderr.splitlines():
        m = _FINDING.match(line)
        if not m:
            continue
        kind, code, text = m.groups()
        if kind == "Warning" and code in WAIVERS:
            report.waived[code] += 1
        elif code is None and "Exiting due to" in text:
            continue  # the summary line after the findings themselves
        else:
            report.findings.append(line.replace(str(source), source.name))
    if out.returncode != 0 and not report.findings and not report.waived:
        report.findings.append(f"verilator exited with {out.returncode}: {out.stderr.strip()[:300]}")
    return report
