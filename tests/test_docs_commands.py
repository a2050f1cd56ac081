"""Every `lockstep ...` command the README and docs/ show in a code block is one the command line takes.

The fast test parses each command with the real `lockstep` command line (every option, choice,
type and callback; nothing runs), so a renamed or removed option fails here, not in a user's
shell. The slow test runs each one that needs no board (`--port`) and that starts no bitstream build
(those run with `--plan`, the same checks without the tools) and requires the outcome the docs show:
success, or the one-line error printed under it.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from sim.cli.commands import main

ROOT = Path(__file__).resolve().parents[1]
LOCKSTEP = str(Path(sys.executable).parent / "lockstep")
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def doc_commands() -> list[tuple[str, list[str], str | None]]:
    """``(where, args, printed error or None)`` of every command line in a fenced code block."""
    found = []
    for path in DOCS:
        text = path.read_text()
        for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, re.S | re.M):
            lines = block.splitlines()
            i = 0
            while i < len(lines):
                line = lines[i]
                start = i
                while line.endswith("\\") and i + 1 < len(lines):   # continuation lines
                    i += 1
                    line = line[:-1] + " " + lines[i].strip()
                i += 1
                text_line = line[2:] if line.startswith("$ ") else line
                if not text_line.startswith("lockstep "):
                    continue
                args = shlex.split(text_line, comments=True)[1:]
                after = lines[i] if line.startswith("$ ") and i < len(lines) else ""
                error = after if after.startswith("lockstep: error: ") else None
                found.append((f"{path.relative_to(ROOT)}:{start + 1}", args, error))
    return found


COMMANDS = doc_commands()


def test_the_docs_show_commands():
    assert len(COMMANDS) >= 25
    assert any(args[:1] == ["run"] or args[:1] == ["decode"] for _, args, _ in COMMANDS)


@pytest.mark.parametrize(("where", "args", "error"), COMMANDS, ids=[w for w, _, _ in COMMANDS])
def test_every_docs_command_parses(where, args, error):
    """The command exists and every option, choice and value parses (click's own checks and callbacks)."""
    if args[0].startswith("-"):          # the group's own options
        assert set(args) <= {"--help", "--version"}, where
        return
    with click.Context(main, info_name="lockstep") as ctx:
        command = main.get_command(ctx, args[0])
        assert command is not None, f"{where}: no command {args[0]!r}"
        command.make_context(args[0], list(args[1:]), parent=ctx)


def _runnable(args) -> bool:
    """Not a board (--port), a cluster (--dask) or a placeholder path of the reader's own (path/to/...)."""
    return "--port" not in args and "--dask" not in args and not any("path/to/" in a for a in args)


@pytest.mark.slow
@pytest.mark.parametrize(("where", "args", "error"), [c for c in COMMANDS if _runnable(c[1])],
                         ids=[w for w, a, _ in COMMANDS if _runnable(a)])
def test_every_docs_command_runs(where, args, error, tmp_path):
    """Each command runs to the outcome the docs show (bitstream builds as --plan: the same fit checks)."""
    args = list(args)
    if args[0] == "build" and "--plan" not in args:
        args.append("--plan")
    out = subprocess.run([LOCKSTEP, *args], capture_output=True, text=True, timeout=3600, cwd=ROOT)
    if error is None:
        assert out.returncode == 0, f"{where}: {out.stderr}"
    else:
        assert out.returncode == 1 and out.stderr.strip().splitlines() == [error], where
