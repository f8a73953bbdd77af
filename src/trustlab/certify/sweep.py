"""Sweeps: one experiment per grid cell (keyed by config hash; finished cells skipped), then sweep plots."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from trustlab.runtime import RunDir, config_hash, to_dict

from . import RECONSTRUCTED
from .config import SMOOTHING_CERTIFIERS, ExperimentConfig
from .experiment import SCHEMA, run_experiment


def _finished_cell(cell_dir: Path, cfg: ExperimentConfig) -> bool:
    """A sweep cell is finished when its results.json carries this cell's config hash and status ok."""
    from trustlab.runtime import read_text

    path = cell_dir / "results.json"
    if not path.is_file() or not (cell_dir / "summary.json").is_file():
        return False
    try:
        res = json.loads(read_text(path, "cell results"))
    except json.JSONDecodeError:
        return False
    return isinstance(res, dict) and res.get("config_hash") == config_hash(cfg) and res.get("status", "ok") == "ok"


def apply_grid_key(cfg: ExperimentConfig, key: str, value) -> ExperimentConfig:
    """Sweep keys: attack.<f> (every attack), smoothing.sigma / bounds.eps (certification and training together),
    train.<f>, smoothing.<f>, bounds.<f> (every track), or any top-level field."""
    from .config import replace_path

    head, _, rest = key.partition(".")
    if head == "attack" and rest.split(".")[0] == "trigger":
        from trustlab.runtime import ConfigError

        raise ConfigError(f"grid key {key!r}: the trigger moved from the attacks to the experiment",
                          hint=f"use --grid {key.removeprefix('attack.')}=...")
    if head == "attack":
        if rest == "rate" and float(value) == 0.0:  # rho = 0: no poisoning; the clean model is the baseline
            return dataclasses.replace(cfg, attacks=tuple(a for a in cfg.attacks if a.kind != "label-noise"))
        return dataclasses.replace(cfg, attacks=tuple(replace_path(a, rest, value) if a.kind != "none" else a
                                                      for a in cfg.attacks))
    if head in ("smoothing", "bounds", "train", "model"):
        tracks = []
        for t in cfg.tracks:
            if head == "smoothing" and not any(c in SMOOTHING_CERTIFIERS for c in t.certifiers):
                tracks.append(t)
                continue
            if head == "bounds" and all(c in SMOOTHING_CERTIFIERS for c in t.certifiers):
                tracks.append(t)
                continue
            t = replace_path(t, key, value)
            if key == "smoothing.sigma" and t.train.procedure == "gaussian":
                t = replace_path(t, "train.sigma", value)
            if key == "bounds.eps" and t.train.procedure in ("ibp", "crown-ibp"):
                t = replace_path(t, "train.eps", value)
            tracks.append(t)
        return dataclasses.replace(cfg, tracks=tuple(tracks))
    return replace_path(cfg, key, value)


def run_sweep(cfg: ExperimentConfig, grid: dict[str, list], out: str | Path | None = None, resume: bool = True,
              log=print) -> Path:
    """One run folder per grid cell (keyed by config hash; cells with results.json are skipped), then sweep plots."""
    import itertools

    from .plots import sweep_plots

    run = RunDir.open(out, "certify", "sweep", {"base": to_dict(cfg), "grid": grid}, seed=cfg.seeds[0],
                      resume=resume)
    cells = []
    keys = list(grid)
    train_keys = {k for k in keys if k.startswith("train.")}
    for values in itertools.product(*(grid[k] for k in keys)):
        c = cfg
        for k, v in zip(keys, values):
            c = apply_grid_key(c, k, v)
        for k, v in zip(keys, values):  # explicit train.* wins over the coupled sigma/eps
            if k in train_keys:
                c = apply_grid_key(c, k, v)
        cell_dir = run.path / "cells" / config_hash(c)
        if not _finished_cell(cell_dir, c):
            log(f"cell {dict(zip(keys, values))}")
            run_experiment(c, cell_dir, resume=resume, log=log)
        cells.append({"values": dict(zip(keys, values)), "dir": str(cell_dir.relative_to(run.path)),
                      "summary": json.loads((cell_dir / "summary.json").read_text())})
    plots = sweep_plots(run.path, cells)
    run.write_results({"cells": len(cells)}, artifacts=plots, schema=SCHEMA, caveat=RECONSTRUCTED, grid=grid,
                      cells=[{"values": c["values"], "dir": c["dir"]} for c in cells])
    return run.path
