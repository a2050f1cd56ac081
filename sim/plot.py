"""Plots of a sweep database: the roofline with every design point, throughput against array size
and weight bandwidth, and the Pareto front of throughput against area. PNG and SVG.

Both kinds of design point plot the same way: ``throughput`` is MAC/s for a GEMM point and
tokens/s for a decode point (the labels follow the kind); the roofline always plots MAC/s
(``mac_per_s`` of a decode point)."""

from __future__ import annotations

from pathlib import Path

from .sweep import SweepError, read_rows

__all__ = ["pareto_front", "plot_sweep"]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: smaller-or-equal area and larger-or-equal
    throughput, strictly better in one. Sorted by area."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_sweep(db_path, out_dir) -> list[Path]:
    """Write roofline, throughput and Pareto plots of ``db_path`` into ``out_dir``; return the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_rows(db_path)
    if not rows:
        raise SweepError(f"{db_path}: holds no design points to plot")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    def save(fig, name):
        for ext in ("png", "svg"):
            path = out_dir / f"{name}.{ext}"
            fig.savefig(path, dpi=120, bbox_inches="tight")
            written.append(path)
        plt.close(fig)

    kinds = {r["kind"] for r in rows}
    if len(kinds) > 1:
        raise SweepError(f"{db_path}: holds {' and '.join(sorted(kinds))} points; plot one kind at a time")
    decode = kinds == {"decode"}
    unit = "tokens/s" if decode else "MAC/s achieved"
    m = [r["metrics"] for r in rows]

    # Roofline: attainable MAC/s against arithmetic intensity (MACs per weight byte).
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    intensity = [x["intensity"] for x in m]
    throughput = [x.get("mac_per_s", x["throughput"]) for x in m]
    sc = ax.scatter(intensity, throughput, c=[x["area"] for x in m], cmap="viridis", s=18, zorder=3)
    fig.colorbar(sc, ax=ax, label="area (R x C + vector lanes)" if decode else "processing elements (R x C)")
    lo, hi = min(intensity) / 2, max(intensity) * 2
    for peak, bw in sorted({(x["peak"], x["weight_bandwidth"]) for x in m})[-3:]:
        ridge = peak / bw
        ax.plot([lo, ridge, hi], [lo * bw, peak, peak], lw=1, alpha=0.6, color="grey")
    ax.set(xscale="log", yscale="log", xlabel="MACs per weight byte", ylabel="MAC/s achieved",
           title="Roofline (grey: peak compute and weight-port bandwidth)")
    ax.grid(True, which="both", alpha=0.3)
    save(fig, "roofline")

    # Throughput against array size, one series per weight bandwidth (array columns).
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    by_bw = {}
    for x in m:
        by_bw.setdefault(x["weight_bandwidth"], []).append((x["area"], x["throughput"]))
    for bw, pts in sorted(by_bw.items()):
        pts.sort()
        ax.scatter(*zip(*pts, strict=True), s=14, label=f"{bw / 1e9:g} GB/s weights")
    area_label = "area (R x C + vector lanes)" if decode else "processing elements (R x C)"
    ax.set(xscale="log", yscale="log", xlabel=area_label, ylabel=unit,
           title="Throughput against array size and weight bandwidth")
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    save(fig, "throughput")

    # Pareto front: throughput against area.
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    pts = [(x["area"], x["throughput"]) for x in m]
    ax.scatter(*zip(*pts, strict=True), s=12, color="lightgrey", label="design points")
    front = [pts[i] for i in pareto_front(pts)]
    ax.plot(*zip(*front, strict=True), "o-", color="C3", label="Pareto front")
    ax.set(xscale="log", yscale="log", xlabel="area (processing elements)", ylabel=unit,
           title="Pareto front of throughput against area")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    save(fig, "pareto")
    return written
