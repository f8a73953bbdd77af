"""Optional auto_LiRPA adapter (not a dependency): the only PyPI release, 0.3, needs torch < 1.13 and fails to import
beside torch 2.13 + numpy 2 (``numpy.lib.arraysetops``). Used only when an importable release is present."""

from __future__ import annotations

from trustlab.runtime import MissingDependencyError

_METHODS = {"ibp": "IBP", "crown-ibp": "CROWN-IBP", "crown": "CROWN"}


class LirpaUnavailable(MissingDependencyError):
    """auto_LiRPA is not importable here (exit 3); ``reason`` is its import error."""

    def __init__(self, reason: str):
        super().__init__(f"auto_LiRPA is not importable: {reason}",
                         hint="pip install auto_LiRPA (a release that supports your torch and numpy), or use the "
                              "built-in certifiers (--certifier ibp|crown-ibp|crown)")
        self.reason = reason


def import_lirpa():
    try:
        from auto_LiRPA import BoundedModule, BoundedTensor, PerturbationLpNorm
    except Exception as exc:  # ImportError, AttributeError from removed numpy/torch internals, ...
        raise LirpaUnavailable(f"{type(exc).__name__}: {exc}") from exc
    return BoundedModule, BoundedTensor, PerturbationLpNorm


def lirpa_margin_bounds(model, x, eps: float, method: str = "ibp", target=None, clip=(0.0, 1.0)):
    """[B, K] lower bounds of z_c - z_j from auto_LiRPA with the margin spec C (c = target or the prediction), on a
    float64 copy of ``model`` in eval mode (the caller's model is untouched); column c is +inf as in ``bounds``."""
    import copy

    import numpy as np
    import torch

    BoundedModule, BoundedTensor, PerturbationLpNorm = import_lirpa()
    if method not in _METHODS:
        from trustlab.runtime import ConfigError

        raise ConfigError(f"auto_LiRPA method must be one of {', '.join(_METHODS)}, got {method!r}",
                          hint="pass ibp, crown-ibp or crown")
    x = torch.as_tensor(x, dtype=torch.float64)
    model = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        target = model(x).argmax(1) if target is None else torch.as_tensor(target)
        K = model(x[:1]).shape[1]
    eye = torch.eye(K, dtype=x.dtype)
    C = eye[target][:, None, :] - eye[None]
    bounded = BoundedModule(model, torch.zeros_like(x[:1]))
    ptb = PerturbationLpNorm(norm=np.inf, x_L=(x - eps).clamp(*clip), x_U=(x + eps).clamp(*clip))
    lb, _ = bounded.compute_bounds(x=(BoundedTensor(x, ptb),), method=_METHODS[method], C=C, bound_upper=False)
    return lb.masked_fill(torch.nn.functional.one_hot(target, K).bool(), float("inf"))
