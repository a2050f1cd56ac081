"""Plots of sweep databases (sim/perf/plot.py): the data behind each figure (each marker's efficiency
and cost from the points' metrics, Pareto labels on real front points, no two markers at one spot,
legends outside the panels), both kinds, bounded figure sizes, degenerate and bad databases."""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from sim.cli.commands import main
from sim.perf.plot import (
    BIN,
    DPI,
    FIGURES,
    MARGIN,
    MAX_PANELS,
    PANEL,
    SRAM_BYTES_PER_MAC,
    build_figures,
    design_label,
    marker_size,
    pareto_front,
    pareto_fronts,
    plot_data,
    plot_sweep,
)
from sim.perf.sweep import SweepError, _gemm_config, open_db, parse_spec, read_rows, run_sweep, sram_bytes

NAMES = sorted(f"{n}.{e}" for n in FIGURES for e in ("png", "svg"))
MAX_SIZE = (round((4 * PANEL[0] + MARGIN[0]) * DPI), round((4 * PANEL[1] + MARGIN[1]) * DPI))
LOCKSTEP = str(Path(sys.executable).parent / "lockstep")
GEMM = {"params": {"array_rows": [2, 4, 8], "array_cols": [2, 4, 8], "m": [1, 8], "k": [64], "n": [64],
                   "clock_hz": [100_000_000, 200_000_000]}}
DECODE = {"kind": "decode", "params": {"array_rows": [8, 16], "array_cols": [8, 16], "weight_bytes_per_cycle": [8, 32],
                                       "clock_hz": [100_000_000, 200_000_000], "batch": [1, 4],
                                       "weight_memory_bytes": [200_000_000]}}


def sweep(tmp_path, data, name="s.sqlite"):
    db = tmp_path / name
    run_sweep(parse_spec(data), db, workers=1, progress=False)
    return db


def check_plots(db, out):
    files = plot_sweep(db, out)
    assert sorted(f.name for f in files) == NAMES
    assert all(f.stat().st_size > 1000 for f in files)
    for f in files:
        if f.suffix == ".png":
            with Image.open(f) as image:
                assert image.size[0] <= MAX_SIZE[0] and image.size[1] <= MAX_SIZE[1], f.name
    return {f.name: f for f in files}


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """Both kinds of sweep, their rows, what the plots draw and the drawn figures."""
    out = {}
    import matplotlib.pyplot as plt

    for kind, spec in (("gemm", GEMM), ("decode", DECODE)):
        db = sweep(tmp_path_factory.mktemp(kind), spec)
        data = plot_data(db)
        out[kind] = (read_rows(db), data, build_figures(data))
    yield out
    for _, _, figures in out.values():
        for fig in figures.values():
            plt.close(fig)


def scatters(ax):
    """The data scatter of a panel (the legend's proxies are not in it)."""
    return [c for c in ax.collections if len(c.get_offsets())]


def test_pareto_front_excludes_dominated_points():
    pts = [(1, 1.0), (2, 0.5), (2, 3.0), (4, 3.0), (8, 9.0), (8, 2.0)]
    assert pareto_front(pts) == [0, 2, 4]          # (2, 0.5), (4, 3.0) and (8, 2.0) are beaten
    assert pareto_front([(5, 5.0)]) == [0]
    assert pareto_front([(3, 1.0), (3, 1.0)]) == [0]   # equal points: one stands for both
    assert pareto_front([]) == []


def test_pareto_fronts_are_computed_per_workload():
    # The small model's points would dominate every point of the big one in a single front.
    pts = [(100, 100.0), (200, 150.0), (400, 120.0),     # gpt2
           (100, 0.1), (200, 0.05), (300, 0.3), (400, 0.2)]  # llama
    groups = ["gpt2"] * 3 + ["llama"] * 4
    assert pareto_front(pts) == [0, 1]
    assert pareto_fronts(pts, groups) == {"gpt2": [0, 1], "llama": [3, 5]}
    with pytest.raises(ValueError):
        pareto_fronts(pts, groups[:-1])


def test_pareto_front_counts_clock_and_bandwidth_as_costs():
    # (area, clock, bandwidth), throughput: the 200 MHz point is faster at the same area, but pays in clock.
    pts = [((100, 1e8, 1e9), 1.0), ((100, 2e8, 2e9), 2.0), ((200, 1e8, 1e9), 1.0), ((100, 1e8, 2e9), 1.0)]
    assert pareto_front(pts) == [0, 1]     # (200, ...) costs more for the same; (.., 2e9) pays bandwidth for nothing
    assert pareto_front([(p[0][0], p[1]) for p in pts]) == [1]   # area alone: the fastest clock wins (the old fault)


def brute_front(points):
    """The Pareto front by its definition, every pair compared."""
    def beats(b, a):
        return all(x <= y for x, y in zip(b[0], a[0], strict=True)) and b[1] >= a[1] and b != a
    front = [i for i, a in enumerate(points) if not any(beats(b, a) for b in points)]
    seen, out = set(), []
    for i in front:                       # of equal points the first stands for all
        if points[i] not in seen:
            seen.add(points[i])
            out.append(i)
    return out


@pytest.mark.parametrize("kind", ["gemm", "decode"])
def test_every_point_is_drawn_once_with_its_own_efficiency_and_cost(drawn, kind):
    rows, data, figures = drawn[kind]
    by_key = {r["key"]: r for r in rows}
    for name in FIGURES:
        panels = data["figures"][name]
        keys = [k for p in panels for mk in p.markers for k in mk.keys]
        assert sorted(keys) == sorted(by_key), name          # every point, once, in every figure
        for ax, panel in zip(figures[name].axes, panels, strict=False):
            (sc,) = scatters(ax)
            # What is drawn is the data: positions, colours (efficiency %) and sizes (counts).
            assert [tuple(xy) for xy in sc.get_offsets()] == [(mk.x, mk.y) for mk in panel.markers]
            assert list(sc.get_array()) == [mk.colour for mk in panel.markers]
            assert list(sc.get_sizes()) == [marker_size(len(mk.keys)) for mk in panel.markers]
            for mk in panel.markers:
                metrics = [by_key[k]["metrics"] for k in mk.keys]
                assert mk.colour == pytest.approx(100 * min(x["efficiency"] for x in metrics))
                if name == "roofline":      # against its own roof: intensity / ridge, MAC/s / peak
                    assert any(mk.x == pytest.approx(x["intensity"] * x["weight_bandwidth"] / x["peak"])
                               and mk.y == pytest.approx(x.get("mac_per_s", x["throughput"]) / x["peak"])
                               for x in metrics)
                    assert mk.y <= min(1.0, mk.x) * (1 + 1e-9)        # no point above its own roof
                else:
                    assert any(mk.x == pytest.approx(x["area"] + x["sram_bytes"] / SRAM_BYTES_PER_MAC)
                               for x in metrics)
                    wanted = [x["throughput"] for x in metrics] if name == "pareto" else \
                        [100 * x["efficiency"] for x in metrics]
                    assert any(mk.y == pytest.approx(v) for v in wanted)


def test_the_gemm_cost_counts_the_points_memories(drawn):
    rows, data, _ = drawn["gemm"]
    for r in rows:
        c = _gemm_config(r["params"])
        sram = c.weight_words * c.array_cols + c.act_words * c.array_rows + 4 * c.result_words * c.array_cols
        assert r["metrics"]["sram_bytes"] == sram > 0
    assert all("SRAM bytes / 64" in p.xlabel and "counted 0" not in p.xlabel for p in data["figures"]["pareto"])


def test_rows_without_the_sram_metric_get_it_from_their_parameters(tmp_path):
    db = sweep(tmp_path, DECODE)
    before = plot_data(db)
    with sqlite3.connect(db) as con:        # rows of a sweep made before the metric existed
        con.execute("UPDATE points SET metrics = json_remove(metrics, '$.sram_bytes')")
    con.close()
    assert all("sram_bytes" not in r["metrics"] for r in read_rows(db))
    after = plot_data(db)
    for name in FIGURES:
        assert [(mk.x, mk.y, mk.keys) for p in after["figures"][name] for mk in p.markers] == \
            [(mk.x, mk.y, mk.keys) for p in before["figures"][name] for mk in p.markers]


def test_points_without_an_on_chip_memory_say_their_sram_is_counted_zero(tmp_path):
    spec = {**DECODE, "params": {k: v for k, v in DECODE["params"].items() if k != "weight_memory_bytes"}}
    data = plot_data(sweep(tmp_path, spec))
    n = data["points"]
    assert all(f"{n} points size no on-chip weight memory: SRAM counted 0" in p.xlabel
               for p in data["figures"]["pareto"])


@pytest.mark.parametrize("kind", ["gemm", "decode"])
def test_pareto_labels_name_real_front_points(drawn, kind):
    rows, data, figures = drawn[kind]
    by_key = {r["key"]: r for r in rows}
    panels = data["figures"]["pareto"]
    labelled = 0
    for ax, panel in zip(figures["pareto"].axes, panels, strict=False):
        members = [by_key[k] for mk in panel.markers for k in mk.keys]
        points = [((x["area"] + x["sram_bytes"] / SRAM_BYTES_PER_MAC, r["params"]["clock_hz"], x["weight_bandwidth"]),
                   x["throughput"]) for r in members for x in [r["metrics"]]]
        front = {members[i]["key"] for i in brute_front(points)}
        assert set(panel.front) == front and front
        names = {design_label(by_key[k]["params"], by_key[k]["metrics"]) for k in front}
        texts = [t.get_text() for t in ax.texts]
        assert len(texts) == sum(mk.label is not None for mk in panel.markers)
        for text in texts:
            assert text.split(" (+")[0] in names, text       # a label names a design on the front
        for mk in panel.markers:                            # a black edge exactly on markers with a front point
            assert mk.front == bool(set(mk.keys) & front)
        edges = scatters(ax)[0].get_linewidths()
        assert [w > 0 for w in edges] == [mk.front for mk in panel.markers]
        labelled += len(texts)
    assert labelled > 0
    assert all(p.title in data["fronts"] for p in panels)


@pytest.mark.parametrize("kind", ["gemm", "decode"])
def test_no_two_markers_share_a_position(drawn, kind):
    _, data, figures = drawn[kind]
    merged = 0
    for name, fig in figures.items():
        for ax in fig.axes:
            for sc in scatters(ax):
                spots = [tuple(xy) for xy in sc.get_offsets()]
                assert len(spots) == len(set(spots)), name
                # ...and none within another's bin: log positions differ by BIN (of a decade) on one axis
                if ax.get_xscale() == "log" and ax.get_yscale() == "log":
                    logs = [(math.log10(x), math.log10(y)) for x, y in spots]
                    assert all(max(abs(a[0] - b[0]), abs(a[1] - b[1])) >= BIN * (1 - 1e-9)
                               for i, a in enumerate(logs) for b in logs[i + 1:]), name
        merged += sum(len(mk.keys) > 1 for p in data["figures"][name] for mk in p.markers)
    assert merged > 0               # some markers stand for several points, and are larger for it


@pytest.mark.parametrize("kind", ["gemm", "decode"])
def test_legends_and_colour_bars_sit_outside_the_panels(drawn, kind):
    _, data, figures = drawn[kind]
    for name, fig in figures.items():
        renderer = fig.canvas.get_renderer()
        n = len(data["figures"][name])
        panels = [ax.get_window_extent(renderer) for ax in fig.axes[:n]]
        others = [ax.get_window_extent(renderer) for ax in fig.axes[n:] if ax.get_visible() and ax.axison]
        assert all(ax.get_legend() is None for ax in fig.axes)        # no legend inside a panel
        (legend,) = fig.legends
        boxes = [legend.get_window_extent(renderer), *others]          # the legend and the colour bar
        assert len(boxes) == 2, name
        for box in boxes:
            assert not any(box.overlaps(p) for p in panels), name
        fig_box = fig.bbox
        assert all(fig_box.x0 <= b.x0 and b.x1 <= fig_box.x1 + 1 and fig_box.y0 <= b.y0 for b in boxes)


def test_one_panel_per_workload(drawn):
    _, data, figures = drawn["gemm"]
    titles = [p.title for p in data["figures"]["pareto"]]
    assert titles == ["M x K x N = 1 x 64 x 64", "M x K x N = 8 x 64 x 64"]
    assert [ax.get_title() for ax in figures["pareto"].axes[:2]] == titles
    assert [p.title for p in data["figures"]["efficiency"]] == titles
    _, data, _ = drawn["decode"]
    assert [p.title for p in data["figures"]["pareto"]] == ["gpt2, batch 1", "gpt2, batch 4"]
    assert all(p.ylabel == "tokens/s" for p in data["figures"]["pareto"])


def test_the_command_writes_png_and_svg_and_prints_their_paths(tmp_path):
    db = sweep(tmp_path, GEMM)
    out = subprocess.run([LOCKSTEP, "plot", str(db), "--out", str(tmp_path / "p")], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    paths = out.stdout.split()
    assert sorted(Path(p).name for p in paths) == NAMES and all(Path(p).is_file() for p in paths)
    out = subprocess.run([LOCKSTEP, "plot", str(db), "--out", str(tmp_path / "q"), "--json"], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    paths = json.loads(out.stdout)["plots"]
    assert sorted(Path(p).name for p in paths) == NAMES and all(Path(p).is_file() for p in paths)
    assert "cost: R x C MACs + SRAM bytes / 64" in (tmp_path / "q" / "pareto.svg").read_text()


@pytest.mark.parametrize("data", [
    {"params": {"array_rows": [4], "array_cols": [4], "m": [1], "k": [64], "n": [64]}},
    {"params": {"array_rows": [4], "array_cols": [4], "m": [1], "k": [64, 128], "n": [64]}},
    {"kind": "decode", "params": {"array_rows": [8], "array_cols": [8], "context": [32]}},
    {"kind": "decode", "params": {"array_rows": [8], "array_cols": [8], "context": [16, 32]}},
], ids=["gemm-1", "gemm-equal", "decode-1", "decode-contexts"])
def test_degenerate_sweeps_plot_without_warnings(tmp_path, data):
    # pytest runs with filterwarnings=error: a singular-limits or log-scale warning fails here.
    check_plots(sweep(tmp_path, data), tmp_path / "plots")


def test_bad_databases_are_one_line_errors(tmp_path):
    empty = tmp_path / "empty.sqlite"
    open_db(empty, parse_spec({"params": {"array_rows": [4], "array_cols": [4], "m": [1], "k": [8], "n": [8]}})).close()
    text = tmp_path / "notes.sqlite"
    text.write_text("not a database\n" * 100)
    foreign = tmp_path / "foreign.sqlite"
    with sqlite3.connect(foreign) as con:
        con.execute("CREATE TABLE other (x)")
    con.close()
    before = foreign.read_bytes()
    cases = [(empty, "holds no design points"), (text, "not a Lockstep results database"),
             (foreign, "not a Lockstep results database"), (tmp_path / "missing.sqlite", "no such results database")]
    for db, message in cases:
        with pytest.raises(SweepError, match=message):
            plot_sweep(db, tmp_path / "plots")
        result = CliRunner().invoke(main, ["plot", str(db), "--out", str(tmp_path / "plots")])
        assert result.exit_code == 1, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("lockstep: error: ") and message in lines[0]
    assert foreign.read_bytes() == before            # a foreign SQLite file is not written to


def test_many_points_plot(tmp_path):
    """5,000 points plot (their data checked). How fast is a benchmark's business
    (scripts/bench_sweep.py), not a timed test's: a loaded machine took 52 s here."""
    db = sweep(tmp_path, {"kind": "decode", "mode": "random", "samples": 50, "seed": 5,
                          "params": {"array_rows": {"low": 4, "high": 256}, "array_cols": {"low": 4, "high": 256},
                                     "weight_bytes_per_cycle": {"low": 1, "high": 256}, "model": ["gpt2"],
                                     "context": [64]}})
    with sqlite3.connect(db) as con:   # 5,000 rows: copies of the 50 under new keys, metrics scaled
        for i in range(1, 100):
            con.execute("INSERT INTO points SELECT key || ?, kind, params, json_set(metrics, '$.throughput', "
                        "json_extract(metrics, '$.throughput') * ?, '$.area', json_extract(metrics, '$.area') + ?), "
                        "cycles, throughput, area, efficiency, rtl_cycles FROM points WHERE length(key) = 24",
                        (f"-{i}", 1 + i / 100, i))
    con.close()
    assert len(read_rows(db)) == 5000
    check_plots(db, tmp_path / "plots")


def test_the_sram_a_decode_point_pays_for():
    # The chip's own weight memory, SRAM levels on every chip; HBM is off chip; unbounded is unknown.
    assert sram_bytes("decode", {"preset": "demo"}) == 262144
    assert sram_bytes("decode", {"preset": "groq-lpu"}) == 576 * 230e6
    assert sram_bytes("decode", {"preset": "a100"}) == 0
    assert sram_bytes("decode", {"array_rows": 8, "array_cols": 8, "weight_memory_bytes": 4096}) == 4096
    assert sram_bytes("decode", {"array_rows": 8, "array_cols": 8}) is None


def test_more_workloads_than_panels_are_named_in_the_title(tmp_path):
    db = sweep(tmp_path, {"params": {"array_rows": [4], "array_cols": [4], "m": list(range(1, MAX_PANELS + 2)),
                                     "k": [16], "n": [16]}})
    data = plot_data(db)
    assert len(data["figures"]["pareto"]) == MAX_PANELS and len(data["fronts"]) == MAX_PANELS + 1
    figures = build_figures(data)
    try:
        title = figures["pareto"].get_suptitle()
        assert f"(the first {MAX_PANELS} of {MAX_PANELS + 1} GEMM shapes)" in title
    finally:
        import matplotlib.pyplot as plt

        for fig in figures.values():
            plt.close(fig)
