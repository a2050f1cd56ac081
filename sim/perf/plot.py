"""Plots of a sweep database that answer an architect's two questions: how far is each design point
from its own limit, and which design is best. PNG and SVG.

* ``pareto``: one panel per workload; throughput against cost (area in MAC-equivalents: the
  point's MACs plus its on-chip SRAM, :func:`cost`), every point coloured by its efficiency (its
  own lower bound over its cycles). Points on the Pareto front (no other point of the workload is
  as fast while paying no more area, no higher clock and no more weight bandwidth) have a black edge
  and a label: array, clock, weight bandwidth.
* ``efficiency``: one panel per workload; each point's efficiency (%) against its cost.
* ``roofline``: every point against its *own* roof: MAC/s over the design's peak against
  arithmetic intensity over the design's ridge point (peak / weight bandwidth), so one roof,
  min(1, x), holds for every design.

A workload is the M x K x N shape of a GEMM point, the model (with context and batch, when the
sweep varies them) of a decode point: throughputs of different workloads do not compete. Points
that would be drawn within 3 % of a decade (or of a linear axis's range) of each other (a bin,
:func:`_bins`) are one marker, larger the more points it stands for (:func:`marker_size`); its
colour is the lowest efficiency among them.
Legends and colour bars sit outside the panels. :func:`plot_data` is what is drawn;
:func:`build_figures` draws it and the tests read both."""

from __future__ import annotations

import math
import os
import subprocess
import tempfile
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from golden.errors import InputError

from .sweep import SweepError, read_rows, sram_bytes

__all__ = ["SRAM_BYTES_PER_MAC", "build_figures", "checkout_commit", "cost", "pareto_front", "pareto_fronts",
           "plot_data", "plot_sweep", "save_png"]

#: Bytes of SRAM taken to cost the silicon of one int8 MAC with its 32-bit accumulator: an assumed,
#: order-of-magnitude figure (a MAC of this kind is some 600 gate equivalents, a byte of SRAM with its
#: share of the periphery some 8 to 10), not a measurement of any process.
SRAM_BYTES_PER_MAC = 64
DPI = 100
PANEL = (3.0, 2.5)              # inches per panel
MARGIN = (2.4, 1.0)             # inches for the legend and colour bar (right), titles (top)
MAX_PANELS = 16                 # workloads drawn as panels; the rest are named in the title
BIN = 0.03                      # a bin: 3 % of a decade on a log axis (about a marker's width in a panel),
                                # 3 % of the range on a linear one
MARKER = 22                     # marker area (pt^2) of one point; a marker of n points has n times it
FIGURES = ("pareto", "efficiency", "roofline")


def pareto_front(points: Sequence[tuple]) -> list[int]:
    """Indices of the points no other point beats. A point is ``(cost, throughput)``, where cost is a
    number or a tuple of numbers (area, clock, bandwidth: every one paid for); another point beats it
    when it costs no more in every part and is at least as fast, and differs. Of equal points the
    first stands for all. Sorted by the (first) cost."""
    def costs(p):
        return tuple(p[0]) if isinstance(p[0], tuple | list) else (p[0],)

    order = sorted(range(len(points)), key=lambda i: (-points[i][1], costs(points[i])))
    front: list[int] = []
    for i in order:
        c, t = costs(points[i]), points[i][1]
        # Sorted by throughput (then cost), a beating point comes first; one beaten by a point on the
        # front so far is beaten, and a point beaten by a beaten point is beaten by the front too.
        if not any(all(a <= b for a, b in zip(costs(points[j]), c, strict=True)) and points[j][1] >= t
                   for j in front):
            front.append(i)
    return sorted(front, key=lambda i: (costs(points[i]), -points[i][1]))


def pareto_fronts(points: Sequence[tuple], groups: Sequence[Hashable]) -> dict:
    """One Pareto front per group: ``{group: indices into points}``, each sorted by cost. A point
    competes only with the points of its own group (its model, its GEMM shape)."""
    if len(points) != len(groups):
        raise InputError(f"{len(points)} points but {len(groups)} groups")
    members: dict = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    return {g: [idx[j] for j in pareto_front([points[i] for i in idx])] for g, idx in members.items()}


def cost(area: float, sram: float | None) -> float:
    """A point's cost in MAC-equivalents: its area (MACs; a decode point's vector lanes count one
    each) plus its on-chip SRAM bytes over :data:`SRAM_BYTES_PER_MAC` (0 when unknown)."""
    return area + (sram or 0) / SRAM_BYTES_PER_MAC


def _workloads(rows: list[dict], decode: bool) -> tuple[list, dict, str]:
    """The workload of every row, a label for each distinct workload, and what a workload is."""
    if decode:
        keys = [(r["params"].get("model", "gpt2"), r["metrics"].get("context", r["params"].get("context")),
                 r["params"].get("batch", 1)) for r in rows]
        varies = [len({k[i] for k in keys}) > 1 for i in range(3)]

        def label(k):
            parts = [str(k[0])] + [f"{name} {v}" for name, v, on in zip(("context", "batch"), k[1:], varies[1:],
                                                                         strict=True) if on]
            return ", ".join(parts)
        noun = "model" if not any(varies[1:]) else "workload (model, context, batch)"
    else:
        keys = [(r["params"]["m"], r["params"]["k"], r["params"]["n"]) for r in rows]

        def label(k):
            return "M x K x N = {} x {} x {}".format(*k)
        noun = "GEMM shape"
    return keys, {k: label(k) for k in sorted(set(keys), key=lambda k: tuple(v or 0 for v in k))}, noun


def _scale(values) -> str:
    """Log when the values span a decade or more, linear otherwise (and for one value)."""
    return "log" if max(values) >= 10 * min(values) else "linear"


def _number(x: float) -> str:
    return f"{x:.3g}" if x < 1000 else f"{x:,.0f}"


def design_label(params: dict, metrics: dict) -> str:
    """A design point's name on a plot: array, clock, weight bandwidth (and chips, when several)."""
    chips = params.get("chips") or 1
    text = (f"{params.get('array_rows', '?')}x{params.get('array_cols', '?')}, "
            f"{_number(params.get('clock_hz', 100_000_000) / 1e6)} MHz, "
            f"{_number(metrics['weight_bandwidth'] / 1e9)} GB/s")
    return text + (f", {chips} chips" if chips > 1 else "")


def _bins(xs: Sequence[float], ys: Sequence[float], xscale: str, yscale: str,
          order: Sequence[int] | None = None) -> list[list[int]]:
    """Indices grouped into markers: taken in ``order``, a point joins the first marker whose first
    point lies within :data:`BIN` of it on both axes (of a decade on a log axis, of the range on a
    linear one), or starts a marker. So the first points of two markers are at least BIN apart on
    one axis: no marker hides another."""
    def unit(values, scale):
        if scale == "log":
            return [math.log10(v) / BIN for v in values]
        lo, hi = min(values), max(values)
        width = (hi - lo) * BIN or 1.0
        return [(v - lo) / width for v in values]

    ux, uy = unit(xs, xscale), unit(ys, yscale)
    cells: dict = {}                   # (floor x, floor y) -> markers whose first point is in that cell
    groups: list[list[int]] = []
    for i in order if order is not None else range(len(xs)):
        cx, cy = math.floor(ux[i]), math.floor(uy[i])
        near = (g for dx in (-1, 0, 1) for dy in (-1, 0, 1) for g in cells.get((cx + dx, cy + dy), ()))
        home = next((g for g in near if abs(ux[g[0]] - ux[i]) < 1 and abs(uy[g[0]] - uy[i]) < 1), None)
        if home is None:
            home = []
            groups.append(home)
            cells.setdefault((cx, cy), []).append(home)
        home.append(i)
    return groups


@dataclass
class Marker:
    """One drawn marker: where, its colour value (the lowest efficiency, %, of its points), the row
    keys of the points it stands for, whether it holds a Pareto-front point and the label it gets."""

    x: float
    y: float
    colour: float
    keys: list[str]
    front: bool = False
    label: str | None = None


@dataclass
class Panel:
    title: str
    xlabel: str
    ylabel: str
    xscale: str
    yscale: str
    markers: list[Marker] = field(default_factory=list)
    front: list[str] = field(default_factory=list)     # row keys on the Pareto front
    roof: bool = False                                 # draw min(1, x)
    note: str = ""


def _panel(rows, idx, xs, ys, eff, *, title, xlabel, ylabel, xscale=None, yscale=None, front=(), labels=None,
           roof=False) -> Panel:
    px, py = [xs[i] for i in idx], [ys[i] for i in idx]
    panel = Panel(title, xlabel, ylabel, xscale or _scale(px), yscale or _scale(py), roof=roof)
    on_front = set(front)
    # Front points first: they stand at their own positions, and a marker is placed where its first point is.
    order = sorted(range(len(idx)), key=lambda j: (idx[j] not in on_front, j))
    for group in _bins(px, py, panel.xscale, panel.yscale, order):
        members = [idx[j] for j in group]
        mark = Marker(xs[members[0]], ys[members[0]], min(eff[i] for i in members), [rows[i]["key"] for i in members])
        fronts = [i for i in members if i in on_front]
        if fronts:
            mark.front = True
            names = sorted({labels[i] for i in fronts})
            names.sort(key=lambda t: t != labels[members[0]])        # the design at the marker first
            mark.label = names[0] + (f" (+{len(names) - 1} more here)" if len(names) > 1 else "")
        panel.markers.append(mark)
    panel.front = [rows[i]["key"] for i in front]
    return panel


def plot_data(db_path) -> dict:
    """What the plots draw, read from ``db_path``: ``{"kind", "points", "fronts", "figures"}``.
    ``figures`` maps each name of :data:`FIGURES` to its :class:`Panel` list; ``fronts`` maps each
    workload's label to the labels of its Pareto-front designs."""
    rows = read_rows(db_path)          # read-only; refuses a missing or non-Lockstep file in one line
    if not rows:
        raise SweepError(f"{db_path}: holds no design points to plot")
    kinds = {r["kind"] for r in rows}
    if len(kinds) > 1:
        raise SweepError(f"{db_path}: holds {' and '.join(sorted(kinds))} points; plot one kind at a time")
    kind = kinds.pop()
    decode = kind == "decode"

    def plottable(x):
        values = (x["intensity"], x.get("mac_per_s", x["throughput"]), x["throughput"], x["area"],
                  x["weight_bandwidth"], x["peak"], x["efficiency"])
        return all(isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in values)

    try:
        rows = [r for r in rows if plottable(r["metrics"])]
    except KeyError as exc:
        raise SweepError(f"{db_path}: design points lack the metric {exc}; re-run the sweep") from None
    if not rows:
        raise SweepError(f"{db_path}: no design point has positive, finite metrics to plot")

    m = [r["metrics"] for r in rows]
    sram = [x["sram_bytes"] if "sram_bytes" in x else sram_bytes(kind, r["params"]) for x, r in zip(m, rows,
                                                                                                   strict=True)]
    unknown = sum(s is None for s in sram)
    costs = [cost(x["area"], s) for x, s in zip(m, sram, strict=True)]
    tput = [x["throughput"] for x in m]
    eff = [100 * x["efficiency"] for x in m]
    labels = [design_label(r["params"], x) for r, x in zip(rows, m, strict=True)]
    keys, names, noun = _workloads(rows, decode)
    macs = "chips x (R x C MACs + vector lanes)" if decode else "R x C MACs"
    cost_label = f"cost: {macs} + SRAM bytes / {SRAM_BYTES_PER_MAC}"
    if unknown:
        cost_label += f"\n({unknown} points size no on-chip weight memory: SRAM counted 0)"
    unit = "tokens/s" if decode else "MAC/s"

    # Pareto: no other point as fast while paying no more area, clock or weight bandwidth.
    paid = [((c, r["params"].get("clock_hz", 100_000_000), x["weight_bandwidth"]), t)
            for c, r, x, t in zip(costs, rows, m, tput, strict=True)]
    fronts = pareto_fronts(paid, keys)
    shown = list(names)[:MAX_PANELS]
    pareto, efficiency = [], []
    for k in shown:
        idx = [i for i in range(len(rows)) if keys[i] == k]
        pareto.append(_panel(rows, idx, costs, tput, eff, title=names[k], xlabel=cost_label, ylabel=unit,
                             front=fronts[k], labels=labels))
        efficiency.append(_panel(rows, idx, costs, eff, eff, title=names[k], xlabel=cost_label,
                                 ylabel="efficiency (% of own bound)", yscale="linear"))
    # Roofline against each point's own roof: intensity / ridge, MAC/s / peak.
    rx = [x["intensity"] * x["weight_bandwidth"] / x["peak"] for x in m]
    ry = [x.get("mac_per_s", x["throughput"]) / x["peak"] for x in m]
    roofline = [_panel(rows, list(range(len(rows))), rx, ry, eff, title=f"{len(rows)} design points, each against "
                       "its own roof", xlabel="arithmetic intensity / the design's ridge point\n"
                       "(MACs per weight byte x weight bandwidth / peak MAC/s)",
                       ylabel="MAC/s / the design's peak MAC/s", xscale="log", yscale="log", roof=True)]
    note = "" if len(names) <= MAX_PANELS else f" (the first {MAX_PANELS} of {len(names)} {noun}s)"
    for panels in (pareto, efficiency):
        panels[0].note = note
    return {"kind": kind, "points": len(rows), "noun": noun,
            "fronts": {names[k]: [labels[i] for i in fronts[k]] for k in names},
            "figures": {"pareto": pareto, "efficiency": efficiency, "roofline": roofline}}


def _suptitle(name: str, data: dict) -> str:
    what = "decode throughput (tokens/s)" if data["kind"] == "decode" else "GEMM throughput (MAC/s)"
    note = data["figures"][name][0].note
    return {"pareto": f"Which design is best: {what} against cost, one panel per {data['noun']}{note}\n"
                      "black edge: on the Pareto front (no other point as fast for no more cost, clock and "
                      "weight bandwidth)",
            "efficiency": f"How far from its limit: each point's efficiency (its own lower bound / its cycles)\n"
                          f"one panel per {data['noun']}{note}",
            "roofline": f"Roofline: {data['kind']} design points against their own roofs"}[name]


def marker_size(count: int) -> float:
    """A marker's area (pt^2) for the number of points it stands for: grows as the square root."""
    return MARKER * math.sqrt(count)


def _plain_labels(ax, lo_hi: dict, *, ratio: bool = False) -> None:
    """Tick labels in engineering notation (2 k, 50 M) rather than 2 x 10^9, or plain (0.05) for
    ratios; no offset text; a log axis labels 1-2-5 within two decades of data, the decades beyond."""
    from matplotlib.ticker import EngFormatter, FuncFormatter, LogLocator, NullFormatter

    eng = FuncFormatter(lambda x, pos: f"{x:g}") if ratio else EngFormatter(sep="\N{THIN SPACE}")
    for axis, (lo, hi) in zip((ax.xaxis, ax.yaxis), (lo_hi["x"], lo_hi["y"]), strict=True):
        if axis.get_scale() == "log":
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if hi < 100 * lo else (1.0,)))
            axis.set_minor_formatter(NullFormatter())
        axis.set_major_formatter(eng)


def _place_labels(fig, ax, panel: Panel) -> int:
    """Label the front markers where a label overlaps no other label and stays inside the panel;
    returns how many got theirs (the rest keep their black edge)."""
    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    placed, drawn = [], 0
    for mark in sorted((mk for mk in panel.markers if mk.front), key=lambda mk: -mk.y):
        for dx, dy, ha in ((5, 3, "left"), (5, -9, "left"), (-5, 3, "right"), (-5, -9, "right")):
            text = ax.annotate(mark.label, (mark.x, mark.y), xytext=(dx, dy), textcoords="offset points",
                               fontsize=5.5, ha=ha, zorder=5)
            bb = text.get_window_extent(renderer)
            inside = box.x0 <= bb.x0 and bb.x1 <= box.x1 and box.y0 <= bb.y0 and bb.y1 <= box.y1
            if inside and not any(bb.overlaps(other) for other in placed):
                placed.append(bb)
                drawn += 1
                break
            text.remove()
        else:
            mark.label = None          # drawn without a label: not named on the plot
    return drawn


def build_figures(data: dict) -> dict:
    """Draw :func:`plot_data`'s panels: ``{name: matplotlib Figure}`` (close them when done)."""
    # matplotlib (a heavy import) only when a plot is drawn.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.lines import Line2D

    values = [mk.colour for panels in data["figures"].values() for p in panels for mk in p.markers]
    lo, hi = min(values), max(values)
    norm = Normalize(lo - 0.05, hi + 0.05) if hi - lo < 0.1 else Normalize(lo, hi)
    figures = {}
    for name, panels in data["figures"].items():
        cols = min(4, len(panels))
        rows = math.ceil(len(panels) / cols)
        size = (PANEL[0] * cols + MARGIN[0], PANEL[1] * rows + MARGIN[1])
        if name == "roofline":
            size = (6.0 + MARGIN[0], 4.4 + MARGIN[1])
        fig, axes = plt.subplots(rows, cols, figsize=size, dpi=DPI, layout="constrained", squeeze=False)
        flat = list(axes.flat)
        for ax in flat[len(panels):]:
            ax.set_axis_off()
        for ax, panel in zip(flat, panels, strict=False):
            marks = panel.markers
            ax.scatter([mk.x for mk in marks], [mk.y for mk in marks], c=[mk.colour for mk in marks], cmap="viridis",
                       norm=norm, s=[marker_size(len(mk.keys)) for mk in marks], zorder=3, alpha=0.9,
                       edgecolors=["black" if mk.front else "none" for mk in marks],
                       linewidths=[1.0 if mk.front else 0 for mk in marks])
            ax.set(xscale=panel.xscale, yscale=panel.yscale)
            if panel.roof:
                xs = [mk.x for mk in marks] + [1.0]
                a, b = min(xs) / 2, max(xs) * 2
                grid = sorted([a * (b / a) ** (i / 99) for i in range(100)] + [1.0])
                ax.plot(grid, [min(1.0, x) for x in grid], color="grey", lw=1.2, zorder=2)
            ax.set_title(panel.title, fontsize=8)
            ax.set_xlabel(panel.xlabel, fontsize=6.5)
            ax.set_ylabel(panel.ylabel, fontsize=6.5)
            ax.tick_params(labelsize=6, which="both")
            _plain_labels(ax, {"x": (min(mk.x for mk in marks), max(mk.x for mk in marks)),
                               "y": (min(mk.y for mk in marks), max(mk.y for mk in marks))}, ratio=panel.roof)
            ax.grid(True, which="both", alpha=0.25)
        fig.suptitle(_suptitle(name, data), fontsize=8.5)
        cbar = fig.colorbar(ScalarMappable(norm=norm, cmap="viridis"), ax=flat[:len(panels)], location="right",
                            shrink=0.9 if rows > 1 else 1.0, aspect=30)
        cbar.set_label("efficiency: own lower bound / cycles (%)\n(a marker of several points: the lowest)",
                       fontsize=7)
        cbar.ax.tick_params(labelsize=6)
        most = max(len(mk.keys) for p in panels for mk in p.markers)
        handles = [Line2D([], [], ls="none", marker="o", ms=math.sqrt(marker_size(c)), color="grey",
                          label=f"{c} point{'s' * (c != 1)}") for c in sorted({1, most})]
        if name == "roofline":
            handles.append(Line2D([], [], color="grey", label="the roof: min(1, x)"))
        if name == "pareto":
            handles.append(Line2D([], [], ls="none", marker="o", ms=math.sqrt(MARKER), mfc="white", mec="black",
                                  label="on the Pareto front (label: array, clock, weight bandwidth)"))
        fig.legend(handles=handles, loc="outside lower center", fontsize=6.5, ncols=len(handles),
                   title="a marker stands for", title_fontsize=6.5)
        fig.canvas.draw()                      # the layout settles (labels are placed in it), then stays:
        fig.set_layout_engine("none")          # a constrained layout of 16 panels costs seconds a save
        if name == "pareto":
            for ax, panel in zip(flat, panels, strict=False):
                _place_labels(fig, ax, panel)
        figures[name] = fig
    return figures


def plot_sweep(db_path, out_dir) -> list[Path]:
    """Write the pareto, efficiency and roofline plots of ``db_path`` into ``out_dir`` as PNG and SVG;
    return the files."""
    data = plot_data(db_path)
    figures = build_figures(data)
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    try:
        for name in FIGURES:
            for ext in ("png", "svg"):
                path = out_dir / f"{name}.{ext}"
                figures[name].savefig(path, dpi=DPI)
                written.append(path)
    finally:
        for fig in figures.values():
            plt.close(fig)
    return written


def save_png(fig, path) -> None:
    """Write the matplotlib figure ``fig`` to ``path`` as a PNG at :data:`DPI`, whole or not at all (a
    temporary file beside it, renamed), and close the figure."""
    import matplotlib.pyplot as plt

    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=DPI)
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def checkout_commit(where) -> str:
    """The commit of the git checkout holding ``where`` (short hash, ``+dirty`` with uncommitted changes
    to tracked files), or ``unknown`` outside git: what a benchmark's table and plot were made at."""
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")
