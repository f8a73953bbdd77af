"""Start-up costs, as ratios against baselines measured in the same run.

1. ``trustlab --help`` wall time / ``python -c pass`` wall time (target: under 10x).
2. GGUF load of SmolLM2 / cached safetensors load (target: cached at least 20x faster).
Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRUSTLAB_QUIET", "1")


def wall(cmd: list[str], repeats: int = 7) -> float:
    """Median wall time of a command over ``repeats`` runs (after one warm-up)."""
    subprocess.run(cmd, capture_output=True, check=True)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    exe = shutil.which("trustlab") or str(Path(sys.executable).parent / "trustlab")
    t_pass = wall([sys.executable, "-c", "pass"])
    t_help = wall([exe, "--help"])

    import torch

    torch.set_num_threads(1)
    from trustlab.models.causal_lm import load_causal_lm, load_gguf_uncached, prepare

    prepare("smollm2-135m-instruct")  # the cache exists before timing (built once, like `trustlab models prepare`)
    t0 = time.perf_counter()
    load_gguf_uncached()
    t_gguf = time.perf_counter() - t0
    cached = []
    for _ in range(3):
        t0 = time.perf_counter()
        load_causal_lm("smollm2-135m-instruct")
        cached.append(time.perf_counter() - t0)
    t_cached = statistics.median(cached)
    print(json.dumps({
        "benchmark": "cli_startup",
        "help_s": round(t_help, 3), "python_pass_s": round(t_pass, 3),
        "help_over_python": round(t_help / t_pass, 2), "help_target_max": 10,
        "gguf_load_s": round(t_gguf, 2), "cached_load_s": round(t_cached, 3),
        "cached_speedup": round(t_gguf / t_cached, 1), "cached_target_min": 20,
    }))


if __name__ == "__main__":
    main()
