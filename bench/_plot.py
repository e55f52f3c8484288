"""
The latency plot: each contender's distribution of event delivery latency,
all rounds pooled, as a CDF and as its tail (1 - CDF), both on log scales so
that the medians and the 99th percentiles can be read off the same figure.
"""

from __future__ import annotations

from typing import Any

TITLES = {"event": "producers flat out", "paced": "paced producers"}


def plot(parts: dict[str, dict[str, list[dict[str, Any]]]], path: str) -> None:
    """Latency distributions per contender, one row per part (flat out, paced)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, rows = plt.subplots(len(parts), 2, figsize=(12, 4.5 * len(parts)), squeeze=False)
    for (part, byContender), (cdf, tail) in zip(parts.items(), rows, strict=True):
        _plotPart(TITLES.get(part, part), byContender, cdf, tail)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _plotPart(title: str, event: dict[str, list[dict[str, Any]]], cdf: Any, tail: Any) -> None:
    for name, runs in event.items():
        values = sorted(v / 1e3 for run in runs for v in run.get("latenciesNs", []))
        if not values:
            continue
        n = len(values)
        fractions = [(i + 1) / n for i in range(n)]
        cdf.plot(values, fractions, label=name)
        tail.plot(values, [1 - f + 1 / n for f in fractions], label=name)
    cdf.set(
        xscale="log",
        xlabel="latency, µs (creation stamp to handler)",
        ylabel="fraction of events",
        title=f"{title}: CDF",
    )
    tail.set(
        xscale="log",
        yscale="log",
        xlabel="latency, µs",
        ylabel="fraction slower",
        title=f"{title}: tail (1 - CDF)",
    )
    from matplotlib.ticker import NullFormatter

    for axes in (cdf, tail):
        # Labels on decades only: minor labels overlap on short ranges.
        axes.xaxis.set_minor_formatter(NullFormatter())
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
