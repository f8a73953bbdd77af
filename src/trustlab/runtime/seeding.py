"""One seed feeds Python, numpy and torch."""

from __future__ import annotations

import hashlib
import random


def seed_everything(seed: int):
    """Seed ``random``, numpy's legacy RNG and torch (CPU and CUDA); return a fresh numpy Generator."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch
    except ImportError:
        pass
    else:
        torch.manual_seed(seed)
    return np.random.default_rng(seed)


def derive_seed(*parts: int | str) -> int:
    """A stable 63-bit seed from a tuple such as (run_seed, party, "noise", epoch)."""
    import numpy as np

    from .errors import ConfigError

    for p in parts:
        if isinstance(p, bool) or not isinstance(p, (int, str)) or (isinstance(p, int) and p < 0):
            raise ConfigError(f"seed parts must be non-negative integers or strings, got {p!r}",
                              hint="use a seed >= 0")
    words = [p if isinstance(p, int) else int.from_bytes(hashlib.sha256(p.encode()).digest()[:8], "little") for p in parts]
    return int(np.random.SeedSequence(words).generate_state(1, np.uint64)[0] >> np.uint64(1))
