"""Certifying many inputs into stamped record files: ``run_certifier`` dispatches smoothing / smoothing-adaptive /
bound methods; ``bounds_records`` is the bounds counterpart of ``smoothing.certify_inputs`` (float64, chunked,
resumable under the same settings); ``certify_model`` certifies one model folder on x and T(x)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trustlab.models.identity import weights_digest
from trustlab.runtime import progress

from .config import SMOOTHING_CERTIFIERS
from .records import append_records, array_digest, cert_file, open_records


def bounds_settings(model, x, y, bcfg, method: str) -> dict:
    """What a bound certificate depends on (the stamp of its record file)."""
    return {"certifier": method, "eps": bcfg.eps, "eps_grid": list(bcfg.eps_grid), "clip": list(bcfg.clip),
            "model": weights_digest(model), "inputs": array_digest(np.asarray(x, dtype=np.float32), np.asarray(y))}


def bounds_records(model, x, y, bcfg, method: str, path: Path | None, chunk: int = 200, *, resume: bool = True,
                   on_stale: str = "refuse") -> list[dict]:
    """Deterministic certification of every input (float64), appended per chunk to ``path``, a stamped record file
    resumed only under the same settings (see ``certify_inputs``)."""
    import torch

    from .boundnet import BoundNet
    from .bounds import certify_bounds
    from .torchutil import eval_mode

    y = np.full(len(x), -1) if y is None else np.asarray(y)
    done = {}
    if path is not None:
        recs = open_records(path, bounds_settings(model, x, y, bcfg, method), resume=resume, on_stale=on_stale)
        done = {r["idx"]: r for r in recs}
    todo = [i for i in range(len(x)) if i not in done]
    out = list(done.values())
    starts = range(0, len(todo), chunk)
    with eval_mode(model):
        net = BoundNet.from_module(model, x.shape[1:], dtype=torch.float64)
        for s in progress(starts, f"certify {method} (eps={bcfg.eps}, {len(todo)} inputs)", total=len(starts)):
            part = np.asarray(todo[s:s + chunk])
            main = certify_bounds(net, x[part], bcfg, method)
            grid = [certify_bounds(net, x[part], bcfg, method, eps=e).certified for e in bcfg.eps_grid]
            recs = [{"idx": int(i), "label": int(y[i]), "pred": int(main.pred[j]), "certified": bool(main.certified[j]),
                     "margin_lb": float(main.margin_lb[j]), "cert_grid": [bool(g[j]) for g in grid]}
                    for j, i in enumerate(part)]
            if path is not None:
                append_records(path, recs)
            out += recs
    return sorted(out, key=lambda r: r["idx"])


def _adaptive_cfg(cfg):
    from .adaptive import AdaptiveConfig

    return cfg if isinstance(cfg, AdaptiveConfig) else AdaptiveConfig.from_smoothing(cfg, cfg.target_radius)


def record_settings(model, x, y, name: str, cfg, *, seed: int, K: int) -> dict:
    """The settings that stamp the record file of smoothing certifier ``name`` (what its records depend on)."""
    from .adaptive import adaptive_settings
    from .smoothing import smoothing_settings

    idx = np.arange(len(x))
    labels = np.full(len(x), -1) if y is None else np.asarray(y)
    if name == "smoothing":
        return smoothing_settings(model, x, idx, labels, cfg, seed, K)
    return adaptive_settings(model, x, idx, labels, _adaptive_cfg(cfg), seed, K)


def shard_records(model, x, y, name: str, cfg, *, seed: int, K: int | None, records=None, shard=(0, 1),
                  resume: bool = True, on_stale: str = "refuse") -> list[dict]:
    """Records of smoothing certifier ``name`` for the inputs with idx = r (mod w), ``shard=(r, w)`` (plus any
    other finished records ``records`` already holds), resumed from / appended to ``records``."""
    from .adaptive import certify_inputs_adaptive
    from .smoothing import certify_inputs

    if name == "smoothing":
        return certify_inputs(model, x, cfg, seed=seed, K=K, records=records, labels=y, resume=resume,
                              on_stale=on_stale, shard=shard)
    return certify_inputs_adaptive(model, x, _adaptive_cfg(cfg), seed=seed, K=K, records=records, labels=y,
                                   resume=resume, on_stale=on_stale, shard=shard)


def run_certifier(model, x, y, name: str, cfg, *, seed: int, K: int | None, records=None, resume: bool = True,
                  on_stale: str = "refuse") -> tuple[list[dict], dict | None, dict]:
    """(records, summary or None without labels, params) of certifier ``name`` with ``cfg`` (SmoothingConfig for
    smoothing / smoothing-adaptive at ``target_radius``, AdaptiveConfig, or BoundsConfig for a bound method).
    Under torchrun, ``distributed.certify_sharded`` runs it across ranks."""
    import dataclasses

    from .adaptive import cost_summary
    from .metrics import summarize
    from .store import accuracy

    if name == "smoothing":
        recs = shard_records(model, x, y, name, cfg, seed=seed, K=K, records=records, resume=resume,
                             on_stale=on_stale)
        grid, params, kind = cfg.radii, dataclasses.asdict(cfg), "smoothing"
    elif name == "smoothing-adaptive":
        acfg = _adaptive_cfg(cfg)
        recs = shard_records(model, x, y, name, cfg, seed=seed, K=K, records=records, resume=resume,
                             on_stale=on_stale)
        grid = cfg.radii if hasattr(cfg, "radii") else (0.0, acfg.radius)
        params, kind = dataclasses.asdict(acfg), "smoothing"
    else:
        bcfg = cfg if cfg.method == name else dataclasses.replace(cfg, method=name)
        recs = bounds_records(model, x, y, bcfg, name, records, resume=resume, on_stale=on_stale)
        grid, params, kind = bcfg.eps_grid, dataclasses.asdict(bcfg), "bounds"
    if y is None:
        return recs, None, params
    summary = summarize(recs, accuracy(model, x, y), grid, kind)
    if name == "smoothing-adaptive":
        summary["cost"] = cost_summary(recs)
    return recs, summary, params


def track_config(track, cert: str):
    """The certification config of ``cert`` in a track: its smoothing config or its bounds config."""
    return track.smoothing if cert in SMOOTHING_CERTIFIERS else track.bounds


def certify_model(model, folder: Path, track, cert: str, data, seed: int) -> tuple[dict, dict]:
    """({clean_inputs, triggered_inputs} summaries, {clean, triggered} records) of one model and certifier."""
    from trustlab.runtime import derive_seed

    summ, recs = {}, {}
    for which, xs in (("clean", data.x_test), ("triggered", data.x_trig)):
        path = cert_file(folder, cert, which)
        path.parent.mkdir(parents=True, exist_ok=True)
        # smoothing and smoothing-adaptive share the noise streams (paired decisions on the same noise)
        noise = derive_seed(seed, "smoothing", which)
        recs[which], summ[f"{which}_inputs"], _ = run_certifier(model, xs, data.y_test, cert, track_config(track, cert),
                                                                seed=noise, K=data.K, records=path, on_stale="discard")
    return summ, recs
