"""Measuring a model's fingerprints with ``verify``: exact and lenient accuracy, persistence (the first response
token is the greedy argmax, the paper's metric), the ownership verdict and the per-key hits."""

from __future__ import annotations

from typing import Any, Callable, Sequence


def measure(model, tok, fps, *, label: str, alpha: float = 1e-3, wrapper: int | None = None,
            temperature: float = 0.0, samples: int = 1, seed: int = 0,
            processors: Sequence[Callable] = (), batch_size: int = 16) -> dict[str, Any]:
    """Exact and lenient accuracy, persistence, the verdict and the per-key hits of ``model`` on ``fps``."""
    from .backends import HFBackend
    from .config import VerifyConfig
    from .verify import lenient_hit, verify

    cfg = VerifyConfig(model=label, alpha=alpha, wrapper=wrapper, temperature=temperature, samples=samples,
                       seed=seed, batch_size=batch_size)
    res = verify(fps, HFBackend(model, tok, batch_size=batch_size, logits_processor=list(processors)), cfg)
    by_id = {fp.id: fp for fp in fps.fingerprints}
    rows = [r for r in res.per_fingerprint if r["answered"]]
    lenient = [lenient_hit(r["output"], by_id[r["id"]].response_text) for r in rows]
    persist = [bool(r["output_ids"]) and r["output_ids"][0] == by_id[r["id"]].response_ids[0] for r in rows]
    d = res.decision
    return {"label": label, "p0": d.p0, "exact": d.m / d.M, "lenient": sum(lenient) / len(rows),
            "persistence": sum(persist) / len(rows), "m": d.m, "M": d.M, "p_value": d.p_value,
            "log10_p_value": d.log10_p_value, "hoeffding_bound": d.hoeffding_bound, "decision": d.decision,
            "line": res.line,
            "mean_hit_rate": res.mean_hit_rate, "any_hit_rate": res.any_hit_rate,
            "hits": [bool(r["hit"]) for r in rows]}


def _fpr_foreign(model, ftok, fps, cfg) -> dict[str, Any]:
    """A foreign model with its own tokenizer: text (lenient) matching, since exact ids are meaningless."""
    from .backends import HFBackend
    from .config import VerifyConfig
    from .verify import verify

    res = verify(fps, HFBackend(model, ftok), VerifyConfig(model="foreign", match="lenient", alpha=cfg.alpha))
    d = res.decision
    return {"exact": None, "lenient": d.m / d.M, "m": d.m, "M": d.M, "p_value": d.p_value, "decision": d.decision,
            "line": res.line, "match": "lenient"}


def _short(m: dict[str, Any]) -> dict[str, Any]:
    keep = ("p0", "exact", "lenient", "persistence", "m", "M", "p_value", "log10_p_value", "hoeffding_bound",
            "decision", "line",
            "mean_hit_rate", "any_hit_rate", "hits")
    return {k: m[k] for k in keep if k in m}
