"""Figures as PNG bytes, drawn with matplotlib's Agg backend (no display, no network).

Each function takes plain numbers and returns a `Figure` ready to embed; the builders decide
what to plot, this module only how.
"""

from __future__ import annotations

import io
from typing import Sequence

from llm_teach.report.render import Figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def lines(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, xlabel: str = "step",
          ylabel: str = "") -> Figure:
    """One axes with a line per series name -> (x, y); markers so a 2-point run still shows."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), marker="o", markersize=3, label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return Figure(_png(fig), title)


def twin_lines(left: tuple[str, Sequence[float], Sequence[float]], right: tuple[str, Sequence[float], Sequence[float]],
               title: str) -> Figure:
    """Two series on their own y-axes (KDRL: the KD term beside the reward, scales differ)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    (lname, lx, ly), (rname, rx, ry) = left, right
    ax.plot(list(lx), list(ly), marker="o", markersize=3, color="tab:blue", label=lname)
    ax.set_ylabel(lname, color="tab:blue")
    other = ax.twinx()
    other.plot(list(rx), list(ry), marker="s", markersize=3, color="tab:orange", label=rname)
    other.set_ylabel(rname, color="tab:orange")
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return Figure(_png(fig), title)


def bars(labels: Sequence[str], values: Sequence[float], title: str, ylabel: str = "",
         errors: Sequence[tuple[float, float]] | None = None) -> Figure:
    """A bar per label; `errors` are (low, high) interval ends drawn as error bars."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * len(labels) + 2), 3.2))
    yerr = None
    if errors is not None:
        yerr = [[v - lo for v, (lo, _) in zip(values, errors)], [hi - v for v, (_, hi) in zip(values, errors)]]
    ax.bar(range(len(labels)), list(values), yerr=yerr, capsize=4, color="tab:blue")
    ax.set_xticks(range(len(labels)), list(labels), rotation=30 if len(labels) > 4 else 0, ha="right"
                  if len(labels) > 4 else "center", fontsize=8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    return Figure(_png(fig), title)


def histograms(series: dict[str, Sequence[float]], title: str, xlabel: str) -> Figure:
    """Overlaid histograms over shared bins (ARTE's chosen vs rejected preference scores)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    values = [v for vs in series.values() for v in vs]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    bins = 10 if high > low else 1
    for name, vs in series.items():
        ax.hist(list(vs), bins=bins, range=(low, high if high > low else low + 1), alpha=0.55, label=name)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.legend(fontsize=8)
    return Figure(_png(fig), title)
