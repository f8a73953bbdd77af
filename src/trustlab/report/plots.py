"""matplotlib helpers: headless backend, consistent size, PNG written atomically into a run's plots/; paired
colours, legends outside the axes, and y ranges that do not blow a small gap up to the full height."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable


def figure(width: float = 6.0, height: float = 4.0, ncols: int = 1, nrows: int = 1):
    """A (fig, axes) pair on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=(width, height), squeeze=not (ncols > 1 or nrows > 1))


def save(fig, path: str | Path, dpi: int = 110) -> Path:
    """Save ``fig`` as PNG via a temp file + rename (the bounding box grows to hold a legend placed outside the
    axes), close it, return the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)
    return path


def pair(i: int) -> tuple[tuple, tuple]:
    """The i-th (dark, light) colour pair of matplotlib's tab20: two curves of one thing (a model on x and on T(x),
    before and after a defence) share a hue."""
    import matplotlib

    cmap = matplotlib.colormaps["tab20"]
    return cmap((2 * i) % 20), cmap((2 * i + 1) % 20)


def legend_outside(ax, **kw) -> None:
    """The legend to the right of the axes, so it never covers a curve or a bar."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=kw.pop("fontsize", 8),
                  frameon=False, **kw)


def share_axis(ax, axis: str = "y") -> None:
    """An axis of shares or accuracies: the whole range 0..1 (a 0.2-point gap stays a 0.2-point gap)."""
    (ax.set_ylim if axis == "y" else ax.set_xlim)(-0.02, 1.02)


def span_axis(ax, values: Iterable[float], min_span: float, lo: float | None = None, hi: float | None = None) -> None:
    """y limits around ``values`` at least ``min_span`` wide (clipped to [lo, hi]), so noise is not drawn as a cliff."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return
    a, b = min(vals), max(vals)
    pad = max(min_span - (b - a), 0.0) / 2 + 0.05 * max(b - a, min_span)
    a, b = a - pad, b + pad
    if lo is not None and a < lo:
        b, a = min(b + (lo - a), hi if hi is not None else b + (lo - a)), lo
    if hi is not None and b > hi:
        a, b = max(a - (b - hi), lo if lo is not None else a - (b - hi)), hi
    ax.set_ylim(a, b)
