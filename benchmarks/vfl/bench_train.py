"""HashVFL epoch time / vanilla epoch time on digits (in-process, 1 thread). Prints one JSON line.

Both runs use the same data, widths and schedule, measured in this invocation; target ratio <= 1.1 (issue) / 1.3 (spec).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np


def epoch_times(kind: str, epochs: int, root: Path) -> list[float]:
    from trustlab.vfl.config import load_config
    from trustlab.vfl.train import train

    cfg = load_config(None, {"defence": {"kind": kind}, "train": {"epochs": epochs, "milestones": ()}})
    hist = train(cfg, root / kind, log=lambda *_: None).results["train"]["history"]
    walls = [h["wall_s"] for h in hist]
    return list(np.diff([0.0, *walls]))[1:]  # drop the first epoch (warm-up)


def main(epochs: int = 12, repeats: int = 2) -> dict:
    from trustlab.runtime import configure_threads

    configure_threads(1)
    with tempfile.TemporaryDirectory() as d:
        t = {"none": [], "hash": []}
        for r in range(repeats):  # interleave to share the machine's load fairly
            for kind in ("none", "hash"):
                t[kind] += epoch_times(kind, epochs, Path(d) / f"r{r}")
    med = {k: float(np.median(v)) for k, v in t.items()}
    out = {"bench": "vfl.train", "dataset": "digits", "epochs": epochs, "repeats": repeats,
           "vanilla_epoch_s": med["none"], "hash_epoch_s": med["hash"], "ratio_hash_vs_vanilla": med["hash"] / med["none"]}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
