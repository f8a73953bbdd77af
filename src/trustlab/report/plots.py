"""matplotlib helpers: headless backend, consistent size, PNG written atomically into a run's plots/."""

from __future__ import annotations

import os
from pathlib import Path


def figure(width: float = 6.0, height: float = 4.0, ncols: int = 1, nrows: int = 1):
    """A (fig, axes) pair on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=(width, height), squeeze=not (ncols > 1 or nrows > 1))


def save(fig, path: str | Path, dpi: int = 110) -> Path:
    """Save ``fig`` as PNG via a temp file + rename, close it, return the path."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    os.replace(tmp, path)
    return path
