"""Runs benchmarks/vfl/bench_train.py and bench_transport.py; each prints one JSON line."""

import runpy
from pathlib import Path

here = Path(__file__).parent / "vfl"
for name in ("bench_train.py", "bench_transport.py"):
    runpy.run_path(str(here / name), run_name="__main__")
