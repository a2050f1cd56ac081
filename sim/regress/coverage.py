"""Functional coverage: named cover points, each with a fixed list of bins, counted as they are hit.

Bins are declared up front (a bin that can never be hit still counts against closure); hitting a
bin that was not declared is a bug in the block's sampler and raises ``KeyError``; bins that are not
distinct raise :class:`golden.errors.InputError`. Coverage of a
point is the share of its bins hit at least once; a block's coverage is the share over all its
bins (every bin weighs the same). Pure Python.
"""

from __future__ import annotations

from golden.errors import InputError

__all__ = ["Coverage"]


class Coverage:
    """Cover points ``{point: [bin, ...]}`` and their hit counts."""

    def __init__(self, points: dict[str, list[str]]):
        self.hits: dict[str, dict[str, int]] = {}
        for point, bins in points.items():
            if len(set(bins)) != len(bins) or not bins:
                raise InputError(f"cover point {point!r} needs distinct bins, not {bins!r}")
            self.hits[point] = dict.fromkeys(bins, 0)

    def hit(self, point: str, bin_: str) -> None:
        """Count one hit of ``bin_`` of ``point``."""
        bins = self.hits[point]
        if bin_ not in bins:
            raise KeyError(f"cover point {point!r} has no bin {bin_!r} (bins: {', '.join(bins)})")
        bins[bin_] += 1

    def merge(self, other: Coverage) -> None:
        """Add ``other``'s hits (the same points and bins) to this one's."""
        for point, bins in other.hits.items():
            for bin_, n in bins.items():
                self.hits[point][bin_] += n

    def point_share(self, point: str) -> float:
        bins = self.hits[point]
        return sum(1 for n in bins.values() if n) / len(bins)

    @property
    def bins(self) -> int:
        return sum(len(b) for b in self.hits.values())

    @property
    def covered(self) -> int:
        return sum(1 for b in self.hits.values() for n in b.values() if n)

    @property
    def share(self) -> float:
        """Bins hit at least once over all bins, in [0, 1]."""
        return self.covered / self.bins

    def missed(self) -> list[str]:
        """``point:bin`` of every bin never hit."""
        return [f"{p}:{b}" for p, bins in self.hits.items() for b, n in bins.items() if not n]

    def report(self) -> list[str]:
        """One line per cover point: hit bins / bins, and the bins never hit."""
        lines = []
        for point, bins in self.hits.items():
            hit = sum(1 for n in bins.values() if n)
            missed = [b for b, n in bins.items() if not n]
            tail = f"  missed: {', '.join(missed)}" if missed else ""
            lines.append(f"  {point:22} {hit:3}/{len(bins):<3} {100 * hit / len(bins):5.1f} %{tail}")
        lines.append(f"  {'all':22} {self.covered:3}/{self.bins:<3} {100 * self.share:5.1f} %")
        return lines
