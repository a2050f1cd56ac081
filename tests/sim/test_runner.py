"""The runner layer: content-hashed builds, reuse, and clear failures."""

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from sim.engine.runner import SOURCES, SimulationError, build, design_for, run, source_digest


def test_builds_are_keyed_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCKSTEP_CACHE", str(tmp_path))
    text_a = "module top(input clk, input rst, output reg q); always @(posedge clk) q <= ~q; endmodule\n"
    text_b = text_a.replace("~q", "q")
    first, _ = build("icarus", text_a, "top")
    again, _ = build("icarus", text_a, "top")
    other, _ = build("icarus", text_b, "top")
    assert first.directory == again.directory
    assert first.directory != other.directory
    assert (first.directory / "BUILT").exists()
    assert first.directory.is_relative_to(tmp_path)


def test_a_verilog_error_is_a_simulation_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCKSTEP_CACHE", str(tmp_path))
    with pytest.raises(SimulationError, match=r"icarus build of broken failed"):
        build("icarus", "module broken(; endmodule\n", "broken")
    # The failed build leaves nothing that a later run could mistake for a finished build.
    assert not list(tmp_path.glob("build/icarus/broken-*/BUILT"))


@pytest.mark.parametrize(("args", "match"), [
    (("modelsim", "array", {"rows": 2, "cols": 2}, "array_stream", {}), r"^simulator must be one of verilator, "
                                                                        r"icarus, amaranth, not 'modelsim'$"),
    (("amaranth", "nope", {}, "array_stream", {}), r"^design must be one of .*, not 'nope'$"),
    (("amaranth", "array", {"rows": 2, "cols": 2}, "nope", {}), r"^flow must be one of .*, not 'nope'$"),
])
def test_bad_run_requests_are_rejected(args, match):
    with pytest.raises(ValueError, match=match):
        run(*args)


def test_design_registry_builds_components():
    from sim.engine.runner import verilog_for

    array = design_for("array", {"rows": 2, "cols": 3})
    assert array.cols == 3
    assert "module array" in verilog_for(array, "array")


def _aged(path, seconds):
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp))
    return path


def test_the_runs_cache_is_bounded(tmp_path):
    """What failed or killed runs leave is pruned past the newest RUNS_KEPT; a live run (its lock
    held), a run kept for its waves or by LOCKSTEP_KEEP_RUNS, and anything younger than a run may
    be (without a lock to tell) are left alone."""
    from sim.engine.runner import KEEP_FILE, OWNER_FILE, PROGRESS_PREFIX, RUNS_KEPT, UNOWNED_GRACE_S, hold, prune_runs

    runs = tmp_path / "runs"
    runs.mkdir()

    def run_dir(name, age, *, owned=True, keep=False):
        path = runs / name
        path.mkdir()
        if owned:
            (path / OWNER_FILE).touch()
        if keep:
            (path / KEEP_FILE).touch()
        return _aged(path, age)

    ended = [run_dir(f"verilator-decode_top-{i}", 100 + i) for i in range(RUNS_KEPT + 5)]
    kept = run_dir("icarus-gemm_unit-waves", 10_000, keep=True)
    live = run_dir("verilator-decode_top-live", 10_000)
    held = hold(live / OWNER_FILE)
    young = run_dir("verilator-decode_top-young", 1)
    legacy_recent = run_dir("verilator-decode_top-old-recent", UNOWNED_GRACE_S / 2, owned=False)
    legacy_stale = run_dir("verilator-decode_top-old-stale", UNOWNED_GRACE_S * 2, owned=False)
    stale_progress = runs / f"{PROGRESS_PREFIX}a.jsonl"
    stale_progress.touch()
    _aged(stale_progress, UNOWNED_GRACE_S * 2)
    live_progress = runs / f"{PROGRESS_PREFIX}b.jsonl"
    live_progress.touch()
    held_progress = hold(live_progress)
    _aged(live_progress, UNOWNED_GRACE_S * 2)
    try:
        removed = prune_runs(runs)
    finally:
        held.close()
        held_progress.close()
    assert sorted(removed) == sorted([*ended[RUNS_KEPT:], legacy_stale, stale_progress])
    assert sorted(runs.iterdir()) == sorted([*ended[:RUNS_KEPT], kept, live, young, legacy_recent, live_progress])


def test_a_command_is_stopped_with_its_whole_process_group(tmp_path):
    """A wall-clock limit (or an interrupt) stops the command and everything it started."""
    from sim.engine.runner import _run_command

    pids = tmp_path / "pids"
    script = f"sleep 300 & echo $! > {pids}; sleep 300"
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        _run_command(["sh", "-c", script], cwd=tmp_path, env=None, stdout=None, timeout=1.0)
    assert time.monotonic() - t0 < 30
    grandchild = int(pids.read_text())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{grandchild}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{grandchild}").exists()


def test_a_cancelled_run_stops_its_command_and_starts_no_other(tmp_path):
    from sim.engine.runner import Cancel, _cancelled_by, _run_command

    cancel = Cancel()
    status = {}

    def work():
        with _cancelled_by(cancel):
            status["first"] = _run_command(["sleep", "300"], cwd=tmp_path, env=None, stdout=None, timeout=None)
            try:
                _run_command(["true"], cwd=tmp_path, env=None, stdout=None, timeout=None)
            except SimulationError as exc:
                status["second"] = str(exc)

    worker = threading.Thread(target=work)
    worker.start()
    deadline = time.monotonic() + 30
    while not cancel._processes and time.monotonic() < deadline:
        time.sleep(0.05)
    cancel.cancel()
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert status == {"first": -signal.SIGTERM, "second": "the run was cancelled"}


def test_only_ports_are_public_and_outputs_are_read_only():
    from sim.engine.runner import _public_ports

    text = ("module other(input a, output b); endmodule\n"
            "module top(clk, rst, q, wide);\n  input clk;\n  wire clk;\n  input rst;\n  output reg q;\n"
            "  output [255:0] wide;\n  reg [3:0] internal;\n  always @(posedge clk) q <= ~q;\nendmodule\n")
    lines = _public_ports(text, "top").splitlines()
    assert lines[0] == "`verilator_config"
    assert sorted(lines[1:]) == ['public_flat_rd -module "top" -var "q"', 'public_flat_rd -module "top" -var "wide"',
                                 'public_flat_rw -module "top" -var "clk"', 'public_flat_rw -module "top" -var "rst"']


def test_verilator_compiles_the_model_at_O3_and_runs_it_on_its_own_main(tmp_path, monkeypatch):
    """OPT_FAST=-O3 reaches the model's per-cycle code (no later -O on the line overrides it), and the
    executable is linked from sim/engine/verilator_main.cpp."""
    import re

    from sim.engine.runner import MAIN_COPY, VERILATOR_MAIN

    monkeypatch.setenv("LOCKSTEP_CACHE", str(tmp_path))
    text = "module top(input clk, input rst, output reg q); always @(posedge clk) q <= rst ? 1'b0 : ~q; endmodule\n"
    b, _ = build("verilator", text, "top")
    log = (b.directory / "build.log").read_text()
    # The model's per-cycle code: Vtop__ALL.cpp for a small design, Vtop___024root__N.cpp when split.
    model = [line for line in log.splitlines() if re.search(r" -c (-o \S+ )?Vtop(?!\w*Slow)\w*\.cpp$", line)]
    assert model and all(re.findall(r"(?<!\S)-O\w*", line)[-1] == "-O3" for line in model)
    # Lockstep's main, compiled from the build directory's own copy (not the checkout's file).
    main = b.directory / MAIN_COPY
    assert main.read_bytes() == VERILATOR_MAIN.read_bytes()
    assert str(main) in log and str(VERILATOR_MAIN) not in log
    assert "cocotb/share/lib/verilator/verilator.cpp" not in log


ROOT = Path(__file__).resolve().parents[2]


def test_the_verilog_cache_key_covers_every_source_in_every_subpackage(tmp_path):
    """The Verilog and build cache key (:func:`source_digest`) changes when any file changes that the
    design or the simulator process depends on: a module of hdl, golden or any sim subpackage (the
    flows, the engine, the cocotb entry) and the Verilator main, and when a module is added."""
    for package in ("hdl", "golden", "sim"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "data"))
    before = source_digest(tmp_path)
    assert source_digest(tmp_path) == before
    sources = sorted({p for package, pattern in SOURCES for p in (tmp_path / package).glob(pattern)})
    named = {p.relative_to(tmp_path).as_posix() for p in sources}
    assert {"sim/engine/cocotb_entry.py", "sim/engine/bus.py", "sim/flows/decode_steps.py", "sim/flows/gemm.py",
            "sim/engine/verilator_main.cpp", "hdl/top.py", "golden/numerics.py"} <= named
    for path in sources:
        text = path.read_bytes()
        path.write_bytes(text + b"\n")
        assert source_digest(tmp_path) != before, path
        path.write_bytes(text)
    assert source_digest(tmp_path) == before
    (tmp_path / "sim" / "flows" / "new_flow.py").write_text("")
    assert source_digest(tmp_path) != before


def test_the_registry_names_every_design_and_flow_of_its_modules_and_nothing_else():
    """The registry names modules, not functions: each name resolves in the module it names, and every
    design and flow a module defines is registered (a flow added but not registered fails here)."""
    import importlib

    from sim.engine import registry

    for table, names in (("DESIGNS", registry.DESIGNS), ("FLOWS", registry.FLOWS), ("JOBS", registry.FLOWS)):
        for module in set(names.values()):
            defined = set(getattr(importlib.import_module(module), table))
            assert defined == {name for name, where in names.items() if where == module}, (table, module)
    for kind in registry.DESIGNS:
        assert callable(registry.design(kind))
    for name in registry.FLOWS:
        function, check = registry.flow(name)
        assert callable(function) and callable(check)
    with pytest.raises(ValueError, match=r"^flow must be one of gemm_unit, array_stream, .*, not 'nope'$"):
        registry.flow("nope")
    with pytest.raises(ValueError, match=r"^design must be one of array, .*, not 'nope'$"):
        registry.design("nope")


def test_stopping_a_run_leaves_no_live_process_of_its_group():
    """_stop_group returns only when every member of the run's process group is gone, not just its
    leader (a simulator under a shell, make's compilers): an interrupt leaves nothing running."""
    import subprocess

    from sim.engine.runner import _group_alive, _stop_group

    process = subprocess.Popen(["sh", "-c", "sleep 100 & sleep 100 & wait"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not _group_alive(process.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _group_alive(process.pid)
        _stop_group(process)
        assert process.returncode is not None and not _group_alive(process.pid)
    finally:
        if process.poll() is None:
            process.kill()
