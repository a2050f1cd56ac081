"""Plots of a sweep database: the roofline with every design point, throughput against array size
and weight bandwidth, and the Pareto front of throughput against area. PNG and SVG.

Both kinds of design point plot the same way: ``throughput`` is MAC/s for a GEMM point and
tokens/s for a decode point (the labels follow the kind); the roofline always plots MAC/s
(``mac_per_s`` of a decode point).

Points are grouped by workload: the model (and context and batch, when the sweep varies them) of a
decode point, the M x K x N shape of a GEMM point. Throughputs of different workloads are not
comparable (gpt2 and llama-3-70b differ by ~1000x in tokens/s; m = 1 wastes most of an array that
m = 8 fills), so the throughput plot gives each workload its own marker and the Pareto plot draws
one front per workload. Weight bandwidth is a colour scale (log when it spans more than 10x), so
the figures keep their size (768 x 528 px) whatever the data."""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from pathlib import Path

from golden.errors import InputError

from .sweep import SweepError, read_rows

__all__ = ["pareto_front", "pareto_fronts", "plot_sweep"]

FIGSIZE = (6.4, 4.4)            # inches; at DPI, every PNG is exactly 768 x 528 px
DPI = 120
MARKERS = "os^Dv<>PX*"          # one per workload in the throughput plot
MAX_LEGEND = 12                 # workloads named in a legend; the rest are counted


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: smaller-or-equal area and larger-or-equal
    throughput, strictly better in one. Sorted by area."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def pareto_fronts(points: Sequence[tuple[float, float]], groups: Sequence[Hashable]) -> dict:
    """One Pareto front per group: ``{group: indices into points}``, each sorted by area. A point
    competes only with the points of its own group (its model, its GEMM shape)."""
    if len(points) != len(groups):
        raise InputError(f"{len(points)} points but {len(groups)} groups")
    members: dict = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    return {g: [idx[j] for j in pareto_front([points[i] for i in idx])] for g, idx in members.items()}


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


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks within [lo, hi] (1-3 or powers of ten when that gives too many)."""
    for steps in ((1, 2, 5), (1, 3), (1,)):
        ticks = [s * 10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
                 for s in steps if lo <= s * 10.0 ** e <= hi]
        if len(ticks) <= 8:
            break
    return ticks if len(ticks) >= 2 else [lo, hi]


def _plain_log_labels(ax) -> None:
    """Label the log axes of ``ax`` 2, 50, 0.3 rather than 2 x 10^0 (powers of ten outside
    0.001 to 10^5 keep the 10^k form); which ticks get a label stays matplotlib's choice."""
    # matplotlib only when a plot is drawn.
    from matplotlib.ticker import LogFormatterSciNotation

    class Plain(LogFormatterSciNotation):
        def __call__(self, x, pos=None):
            text = super().__call__(x, pos)
            return f"{x:g}" if text and 1e-3 <= abs(x) < 1e5 else text

    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "log":
            axis.set_major_formatter(Plain())
            axis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(1, 0.4)))


def _legend(ax, handles, extra: int) -> None:
    if extra:
        import matplotlib.lines as mlines

        handles = handles + [mlines.Line2D([], [], linestyle="none", label=f"(+{extra} more workloads)")]
    ax.legend(handles=handles, fontsize=7, loc="best", framealpha=0.85)


def plot_sweep(db_path, out_dir) -> list[Path]:
    """Write roofline, throughput and Pareto plots of ``db_path`` into ``out_dir``; return the files."""
    rows = read_rows(db_path)          # read-only; refuses a missing or non-Lockstep file in one line
    if not rows:
        raise SweepError(f"{db_path}: holds no design points to plot")
    kinds = {r["kind"] for r in rows}
    if len(kinds) > 1:
        raise SweepError(f"{db_path}: holds {' and '.join(sorted(kinds))} points; plot one kind at a time")
    decode = kinds == {"decode"}

    def plottable(x):
        values = (x["intensity"], x.get("mac_per_s", x["throughput"]), x["throughput"], x["area"],
                  x["weight_bandwidth"], x["peak"])
        return all(isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in values)

    try:
        rows = [r for r in rows if plottable(r["metrics"])]
    except KeyError as exc:
        raise SweepError(f"{db_path}: design points lack the metric {exc}; re-run the sweep") from None
    if not rows:
        raise SweepError(f"{db_path}: no design point has positive, finite metrics to plot")

    # matplotlib (a heavy import) only when a plot is drawn, as in every function of this module.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.ticker import NullFormatter

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    def figure():
        return plt.subplots(figsize=FIGSIZE, dpi=DPI, layout="constrained")

    def save(fig, name):
        for a in fig.axes[:1]:
            _plain_log_labels(a)
        for ext in ("png", "svg"):
            path = out_dir / f"{name}.{ext}"
            fig.savefig(path, dpi=DPI)     # no bbox_inches="tight": the size stays FIGSIZE x DPI
            written.append(path)
        plt.close(fig)

    m = [r["metrics"] for r in rows]
    n = len(m)
    unit = "tokens/s" if decode else "MAC/s"
    what = "decode throughput (tokens/s)" if decode else "GEMM throughput (MAC/s)"
    area_label = "area (PEs: chips x (R x C + vector lanes))" if decode else "area (PEs: R x C)"
    area = [x["area"] for x in m]
    tput = [x["throughput"] for x in m]
    size = 18 if n <= 500 else 8 if n <= 3000 else 4
    keys, labels, noun = _workloads(rows, decode)
    order = list(labels)
    colour = {k: f"C{i}" if len(order) <= 10 else plt.get_cmap("tab20")(i % 20) for i, k in enumerate(order)}

    # Roofline: attainable MAC/s against arithmetic intensity (MACs per weight byte).
    fig, ax = figure()
    intensity = [x["intensity"] for x in m]
    macs = [x.get("mac_per_s", x["throughput"]) for x in m]
    sc = ax.scatter(intensity, macs, c=area, cmap="viridis", s=size, zorder=3, linewidths=0,
                    norm=LogNorm() if _scale(area) == "log" else None)
    if min(area) < max(area):
        fig.colorbar(sc, ax=ax, label=area_label)
    roofs, best_bw = [], 0.0      # the roofs no other design's roof covers (higher peak and bandwidth)
    for peak, b in sorted({(x["peak"], x["weight_bandwidth"]) for x in m}, reverse=True):
        if b > best_bw:
            roofs.append((peak, b))
            best_bw = b
    ridges = [p / b for p, b in roofs]
    lo = min(min(intensity), min(ridges)) / 2
    hi = max(max(intensity), max(ridges)) * 2
    xs = [lo * (hi / lo) ** (i / 199) for i in range(200)] + ridges
    xs.sort()
    # The best roof of the swept designs: at each intensity, the most any of them could attain.
    ax.plot(xs, [max(min(p, x * b) for p, b in roofs) for x in xs], color="grey", lw=1.2, zorder=2,
            label="best roof of the swept designs:\nmin(peak MAC/s, intensity x weight bandwidth)")
    ax.set(xscale="log", yscale="log", xlabel="arithmetic intensity (MACs per weight byte)",
           ylabel="MAC/s achieved",
           title=f"Roofline: {'decode' if decode else 'GEMM'} MAC/s of {n} design point{'s' * (n != 1)}")
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(True, which="both", alpha=0.3)
    save(fig, "roofline")

    # Throughput against array size; colour: weight bandwidth; marker: workload.
    fig, ax = figure()
    bw = [x["weight_bandwidth"] / 1e9 for x in m]
    norm = LogNorm(min(bw), max(bw)) if _scale(bw) == "log" else Normalize(min(bw), max(bw))
    marked = 1 < len(order) <= len(MARKERS)
    handles = []
    for i, k in enumerate(order if marked else [None]):
        idx = [j for j in range(n) if k is None or keys[j] == k]
        sc = ax.scatter([area[j] for j in idx], [tput[j] for j in idx], c=[bw[j] for j in idx], cmap="plasma",
                        norm=norm, s=size * 1.3, marker=MARKERS[i], linewidths=0, alpha=0.9, zorder=3)
        if marked:
            handles.append(ax.scatter([], [], marker=MARKERS[i], color="grey", label=labels[k]))
    if min(bw) < max(bw):
        cbar = fig.colorbar(sc, ax=ax, label="weight bandwidth (GB/s)")
        if isinstance(norm, LogNorm):   # plain numbers (0.5, 2, 20), not 2 x 10^0
            ticks = _log_ticks(min(bw), max(bw))
            cbar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])
            cbar.ax.yaxis.set_minor_formatter(NullFormatter())
    bw_note = "" if min(bw) < max(bw) else f", weights at {bw[0]:.3g} GB/s"
    ax.set(xscale=_scale(area), yscale=_scale(tput), xlabel=area_label, ylabel=unit,
           title=f"{what[0].upper()}{what[1:]} against array size{bw_note}")
    if marked:
        ax.legend(handles=handles, fontsize=7, loc="best", framealpha=0.85)
    elif len(order) > 1:
        ax.set_title(f"{ax.get_title()}\n({len(order)} workloads, not told apart)")
    else:
        ax.set_title(f"{ax.get_title()}\n({labels[order[0]]})")
    ax.grid(True, which="both", alpha=0.3)
    save(fig, "throughput")

    # Pareto front of throughput against area, one per workload.
    fig, ax = figure()
    pts = list(zip(area, tput, strict=True))
    fronts = pareto_fronts(pts, keys)
    single = len(order) == 1
    handles = []
    for i, k in enumerate(order):
        idx = [j for j in range(n) if keys[j] == k]
        c = "lightgrey" if single else colour[k]
        ax.scatter([area[j] for j in idx], [tput[j] for j in idx], s=size * 0.7, color=c, linewidths=0,
                   alpha=1 if single else 0.3, zorder=2, label="design points" if single else None)
        front = [pts[j] for j in fronts[k]]
        (line,) = ax.plot(*zip(*front, strict=True), "-", marker="o" if single else MARKERS[i % len(MARKERS)],
                          ms=4 if single else 6, mfc="C3" if single else "none", mew=1.3, lw=1.3, zorder=3,
                          color="C3" if single else colour[k],
                          label="Pareto front" if single else f"{labels[k]} ({len(front)} on front)")
        if single or i < MAX_LEGEND:
            handles.append(line)
    if single:
        ax.legend(fontsize=8, loc="best")
        title = f"Pareto front of {what} against area\n({labels[order[0]]})"
    else:
        _legend(ax, handles, max(0, len(order) - MAX_LEGEND))
        title = f"Pareto fronts of {what} against area,\none per {noun}"
    ax.set(xscale=_scale(area), yscale=_scale(tput), xlabel=area_label, ylabel=unit, title=title)
    ax.grid(True, which="both", alpha=0.3)
    save(fig, "pareto")
    return written
