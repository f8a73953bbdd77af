"""Thread setup: one torch/BLAS thread per process unless the user asks for more.

Two threads on loaded 2-core machines were measured up to 60x slower than one, so 1 is the default.
"""

from __future__ import annotations

import os
import sys

_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


def configure(threads: int | None = None) -> int:
    """Pin torch and BLAS to ``threads`` (default: $TRUSTLAB_THREADS or 1); returns the count used."""
    if threads is None:
        threads = int(os.environ.get("TRUSTLAB_THREADS", "1"))
    if threads < 1:
        from .errors import ConfigError

        raise ConfigError(f"threads must be >= 1, got {threads}", hint="pass --threads 1")
    for var in _VARS:
        os.environ[var] = str(threads)
    if "torch" in sys.modules or _torch_available():
        import torch

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:  # already set once in this process; harmless
            pass
    return threads


def _torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None
