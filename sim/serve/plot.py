"""The serving benchmark's plot: throughput against latency over a sweep of request rates (PNG).

One point per request rate: the aggregate tokens/s the design served (x) against the latency users
saw (y, log scale): p50 and p99 of the time to the first token and of the end-to-end latency, each a
line through the rates, each point labelled with its rate. The file is written whole or not at all
(a temporary file beside it, renamed).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DPI", "plot_rate_sweep"]

DPI = 100


def plot_rate_sweep(points: list[dict], path, *, title: str) -> Path:
    """Draw ``points`` (``{"rate": requests/s, "summary": ServeReport.summary()}``, in rate order)
    into the PNG ``path``; return it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=DPI)
    try:
        x = [p["summary"]["tokens_per_s"] for p in points]
        for colour, (key, label, marker) in enumerate((("ttft_s", "time to first token", "o"),
                                                        ("latency_s", "end-to-end latency", "s"))):
            for q, line in (("p50", "-"), ("p99", "--")):
                y = [p["summary"][key][q] * 1e3 for p in points]
                ax.plot(x, y, marker + line, color=f"C{colour}", label=f"{label}, {q}")
        for p, xi in zip(points, x, strict=True):
            ax.annotate(f"{p['rate']:g}/s", (xi, p["summary"]["latency_s"]["p50"] * 1e3), textcoords="offset points",
                        xytext=(3, -10), fontsize=7)
        ax.set_yscale("log")
        ax.set_xlabel("served tokens/s (simulated, at the design's clock)")
        ax.set_ylabel("latency (ms, simulated)")
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
        fig.tight_layout()
        out = Path(path)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp.png")
        try:
            fig.savefig(tmp, dpi=DPI)
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        plt.close(fig)
    return out
