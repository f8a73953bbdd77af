"""Defence x parameter x seed sweeps, resumable per cell, aggregated as mean +- std into sweep.json / sweep.csv with
the trade-off plot and a reconstruction grid per defence.

Each finished cell is one record of ``cells.jsonl``, the one stamped record store (``runtime.RecordStore``) keyed by
cell name and stamped with what a cell's figures depend on (the base config and the attacks run); a resumed sweep
skips the cells it holds. A finished cell folder without a record (a sweep of an older trustlab, or a crash between
the cell's results.json and its record) is adopted into the store rather than trained again."""

from __future__ import annotations

import csv
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trustlab.runtime import (ConfigError, Interrupted, RecordStore, RunDir, check_types, configure_threads,
                              require_choice, require_range, to_dict, write_json_atomic)

from .config import DEFENCES, DefenceConfig, VFLConfig, with_


@dataclass(frozen=True)
class SweepConfig:
    base: VFLConfig = field(default_factory=VFLConfig)
    defences: tuple[str, ...] = ("none", "hash")
    seeds: tuple[int, ...] = (0,)
    param: str | None = None  # defence field to vary, e.g. noise_scale
    values: tuple[float, ...] = ()
    attacks: tuple[str, ...] = ("whitebox", "inverse", "label", "decode", "detect")

    def __post_init__(self):
        check_types(self, "sweep")
        if not self.defences:
            raise ConfigError("sweep.defences is empty", hint=f"e.g. --defences none,hash (from {', '.join(DEFENCES)})")
        for d in self.defences:
            require_choice("sweep.defences", d, DEFENCES)
        if not self.seeds:
            raise ConfigError("sweep.seeds is empty", hint="e.g. --seeds 0,1,2")
        for i, seed in enumerate(self.seeds):
            require_range(f"sweep.seeds[{i}]", seed, 0)
        if self.param is not None and self.param not in DefenceConfig.__dataclass_fields__:
            raise ConfigError(f"sweep.param {self.param!r} is not a defence field",
                              hint=f"choose from {', '.join(DefenceConfig.__dataclass_fields__)}")
        if self.param is not None and not self.values:
            raise ConfigError(f"sweep.param {self.param!r} lists no values", hint="e.g. --param noise_scale=0.01,0.1,1")
        from .evaluate import ATTACKS

        for a in self.attacks:
            require_choice("sweep.attacks", a, ATTACKS)


def parse_param(spec: str | None) -> tuple[str | None, tuple[float, ...]]:
    """``noise_scale=0.01,0.1,1`` -> ("noise_scale", (0.01, 0.1, 1.0))."""
    if not spec:
        return None, ()
    name, _, vals = spec.partition("=")
    if name not in DefenceConfig.__dataclass_fields__:
        raise ConfigError(f"--param {name!r} is not a defence field",
                          hint=f"choose from {', '.join(DefenceConfig.__dataclass_fields__)}")
    from trustlab.runtime import parse_float_list

    values = parse_float_list(f"--param {name}=", vals)
    if not values:
        raise ConfigError(f"--param {spec!r} lists no values")
    return name, values


DEFAULT_DEFENCES = ("none", "hash", "gaussian", "laplace", "gsparse", "hash_laplace")


def sweep_config_for(out: Path | None, config: str | None = None, epochs: int | None = None,
                     param: tuple[str | None, tuple[float, ...]] | None = None, seeds: tuple[int, ...] | None = None,
                     defences: tuple[str, ...] | None = None, attacks: tuple[str, ...] | None = None,
                     resume: bool = True) -> SweepConfig:
    """The sweep to run into ``out``: resuming a saved sweep takes its settings (a given value that changes one is
    refused, naming the keys); else ``config`` (default digits) with the given values (defaults: all six defences,
    seeds 0,1,2, every attack)."""
    from dataclasses import replace

    from trustlab.runtime import config_diff, from_dict, load_yaml

    from .config import load_config

    name, values = param if param is not None else (None, ())
    base = None
    if config is not None or epochs is not None:
        base = load_config(config or "digits", {"train": {"epochs": epochs}})
    saved = out / "config.yaml" if out is not None else None
    if resume and saved is not None and saved.is_file():
        sc0 = from_dict(SweepConfig, load_yaml(saved), "sweep")
        if base is None or config is None:
            base = sc0.base if epochs is None else with_(sc0.base, train={"epochs": epochs})
        sc = replace(sc0, base=base, defences=defences or sc0.defences, seeds=seeds or sc0.seeds,
                     attacks=attacks or sc0.attacks, **({"param": name, "values": values} if param is not None else {}))
        diff = config_diff(sc0, sc)
        if diff:
            raise ConfigError(f"resuming continues the sweep saved in {str(out)!r}, but the flags change "
                              f"{', '.join(diff)}",
                              hint=f"resume it as saved with `trustlab vfl sweep --out {shlex.quote(str(out))}` "
                                   "(no other flags), or add --no-resume to start it afresh")
        return sc
    return SweepConfig(base or load_config("digits"), defences or DEFAULT_DEFENCES, seeds or (0, 1, 2), name, values,
                       **({"attacks": attacks} if attacks else {}))


def cells(sc: SweepConfig) -> list[tuple[str, VFLConfig]]:
    out = []
    for d in sc.defences:
        if d not in DEFENCES:
            raise ConfigError(f"unknown defence {d!r}", hint=f"choose from {', '.join(DEFENCES)}")
        vals = sc.values if sc.param and d not in ("none", "hash") else (None,)
        for v in vals:
            for s in sc.seeds:
                dd = {"kind": d}
                if v is not None:
                    dd[sc.param] = int(v) if sc.param in ("code_len", "embed_dim") else v
                cfg = with_(sc.base, defence=dd, train={"seed": s})
                label = d if v is None else f"{d}-{sc.param}={v:g}"
                out.append((f"{label}-s{s}", cfg))
    return out


CELLS = "cells.jsonl"


def cell_store(sc: SweepConfig, out: Path, resume: bool = True) -> RecordStore:
    """The sweep's cell records: one per finished cell (key = cell name, ``result`` = its slimmed results), stamped
    with the base config and the attacks (a cell's name fixes its defence, parameter value and seed)."""
    return RecordStore(out / CELLS, {"base": to_dict(sc.base), "attacks": list(sc.attacks)}, what="sweep cell records",
                       resume=resume, hint=f"add --no-resume to start the sweep in {str(out)!r} afresh")


def _finished_cell(rpath: Path) -> dict | None:
    """The results of a cell folder whose run finished (status ok, attacks run), else None."""
    if not rpath.is_file():
        return None
    try:
        r = json.loads(rpath.read_text())
    except (OSError, ValueError):
        return None
    return r if isinstance(r, dict) and r.get("status") == "ok" and "attacks" in r else None


def run_sweep(sc: SweepConfig, out: str | Path, log=print, verb: str = "sweep", force: bool = False,
              resume_hint: str | None = None) -> dict:
    """Train + evaluate every cell (skipping finished ones, resuming an interrupted one from its checkpoint), then
    DCS against the seed's vanilla accuracy. ``force`` starts the whole sweep afresh. Ctrl-C raises Interrupted
    whose hint (``resume_hint``) runs the sweep on."""
    configure_threads()
    from .evaluate import dcs_block, evaluate
    from .train import train

    out = Path(out)
    hint = resume_hint or f"trustlab vfl sweep --out {shlex.quote(str(out))}"
    try:  # refuses a folder it did not write; --no-resume removes only what the earlier sweep wrote
        run = RunDir.open(out, "vfl", verb, sc, sc.base.train.seed, resume=not force)
    except ConfigError as exc:  # the runtime's hint names flags of other commands
        if "another config" not in exc.message:
            raise
        raise ConfigError(exc.message, hint=f"resume it as saved with `{hint}`, add --no-resume to start it afresh "
                                            "with the new settings, or choose another --out") from None
    store = cell_store(sc, out, resume=not force)
    done = {r["key"]: r["result"] for r in store.latest()}
    results = {}
    for name, cfg in cells(sc):
        cdir = out / "cells" / name
        if name not in done:
            old = _finished_cell(cdir / "results.json")
            if old is not None:
                store.append([{"key": name, "result": _slim(old)}])
                done[name] = _slim(old)
        if name in done:
            log(f"[sweep] {name}: done, skipped")
            results[name] = done[name]
            continue
        log(f"[sweep] {name}: training")
        try:
            # resume the cell from its checkpoint (same config), or start it afresh (another config)
            tr = train(cfg, cdir, resume=True, force=True, log=log, resume_hint=hint)
            results[name] = evaluate(tr, sc.attacks).results
        except KeyboardInterrupt:
            raise Interrupted(f"sweep interrupted in cell {name}; finished cells and its checkpoint are kept",
                              hint=f"resume with: {hint}") from None
        except Interrupted as exc:
            raise Interrupted(f"sweep interrupted in cell {name}: {exc.message}", hint=f"resume with: {hint}") from None
        store.append([{"key": name, "result": _slim(results[name])}])
        results[name] = _slim(results[name])
        run.event("cell", item=name)
        log(f"[sweep] {name}: acc {results[name]['train']['test_acc']:.3f}")
    # DCS needs the vanilla accuracy of the same seed
    ref = {r["config"]["train"]["seed"]: r["train"]["test_acc"] for r in results.values()
           if r["config"]["defence"]["kind"] == "none"}
    for name, r in results.items():
        s = r["config"]["train"]["seed"]
        if s in ref:
            r["dcs"] = dcs_block(r["attacks"], r["baselines"], r["train"]["test_acc"], ref[s])
    summary = aggregate(results)
    write_json_atomic(out / "sweep.json", {"cells": {k: _slim(v) for k, v in results.items()}, "rows": summary})
    with open(out / "sweep.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        keys = [k for k in summary[0] if k != "label"] if summary else []
        w.writerow(["defence", *keys])
        for row in summary:
            w.writerow([row["label"], *[_pm(row[k]) for k in keys]])
    plots(out, results, summary)
    sweep = {"rows": summary, "cells": {k: _slim(v) for k, v in results.items()}}
    metrics = {f"{r['label']}_{k}": r[k]["mean"] for r in summary for k in ("acc", "inverse_mse", "whitebox_mse")}
    arts = [p for p in (out / "plots").glob("*.png")] + [out / "sweep.json", out / "sweep.csv"]
    from .train import SCHEMA

    run.write_results(metrics, arts, schema=SCHEMA, status="ok", sweep=sweep)
    from trustlab.report import render

    from .report import report_section

    render(out, sections={"vfl": report_section})
    return sweep


def _slim(r: dict) -> dict:
    keep = ("config", "train", "message", "codes", "bit_balance", "code_decode_acc", "attacks", "baselines",
            "detection", "dcs", "attack_config", "status")
    out = {k: r[k] for k in keep if k in r}
    if "train" in out:
        out["train"] = {k: v for k, v in out["train"].items() if k != "history"}
    return out


def _pm(v):
    if isinstance(v, dict):
        return f"{v['mean']:.4g} ± {v['std']:.2g}" if v.get("mean") is not None else ""
    return v


def _get(r: dict, path: str):
    cur = r
    for p in path.split("."):
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return cur if isinstance(cur, (int, float)) and not isinstance(cur, bool) else None


METRICS = {
    "acc": "train.test_acc",
    "inverse_mse": "attacks.inverse_net.mse", "inverse_psnr": "attacks.inverse_net.psnr",
    "inverse_ssim": "attacks.inverse_net.ssim",
    "whitebox_mse": "attacks.whitebox.mse", "whitebox_psnr": "attacks.whitebox.psnr",
    "whitebox_ssim": "attacks.whitebox.ssim",
    "decoded_mse": "attacks.decoded_class_mean.mse", "decode_acc": "attacks.decoded_class_mean.decode_acc",
    "label_leak": "attacks.label_leak.acc",
    "aux_mean_mse": "baselines.aux_mean.mse", "class_mean_mse": "baselines.class_mean.mse",
    "noise_mse": "baselines.noise.mse",
    "auroc_uniform": "detection.uniform.auroc", "auroc_swap": "detection.swap.auroc",
    "mean_abs_mu": "bit_balance.p0.mean_abs_mu", "frac_equal_oy": "bit_balance.p0.frac_equal_oy",
    "c_dcs": "dcs.c_dcs",
}


def aggregate(results: dict) -> list[dict]:
    """Mean and std (ddof 0) over seeds for each defence (and parameter value)."""
    groups: dict[str, list[dict]] = {}
    for name, r in results.items():
        groups.setdefault(name.rsplit("-s", 1)[0], []).append(r)
    rows = []
    for label, rs in groups.items():
        row = {"label": label, "seeds": len(rs)}
        for key, path in METRICS.items():
            vals = [v for v in (_get(r, path) for r in rs) if v is not None]
            row[key] = {"mean": float(np.mean(vals)), "std": float(np.std(vals))} if vals else {"mean": None, "std": None}
        rows.append(row)
    return rows


def plots(out: Path, results: dict, summary: list[dict]) -> None:
    from .plots import recon_grid, tradeoff

    pts = [{"label": r["label"], "mse": r["inverse_mse"]["mean"], "mse_std": r["inverse_mse"]["std"],
            "acc": r["acc"]["mean"], "acc_std": r["acc"]["std"]} for r in summary if r["inverse_mse"]["mean"] is not None]
    base = {k: np.mean([r[f"{k}_mse"]["mean"] for r in summary if r[f"{k}_mse"]["mean"] is not None] or [np.nan])
            for k in ("aux_mean", "class_mean")}
    if pts:
        tradeoff(pts, out / "plots" / "tradeoff.png", base)
    rows, shape = [], None
    seed0 = [n for n in results if n.endswith(f"-s{min(r['config']['train']['seed'] for r in results.values())}")]
    for name in seed0:
        if not (out / "cells" / name / "recon.npz").is_file():  # a recorded cell whose folder was removed
            continue
        with np.load(out / "cells" / name / "recon.npz", allow_pickle=False) as z:
            if len(z["image_shape"]) == 0:
                break
            shape = tuple(int(s) for s in z["image_shape"])
            if not rows:
                rows += [("original", z["original"]), ("class mean", z["class_mean"])]
            # one row per defence from the attacks this sweep ran (inverse network first)
            for key, tag in (("inverse_net", "inv"), ("whitebox", "wb"), ("decoded_class_mean", "decoded")):
                if key in z.files:
                    rows.append((f"{name.rsplit('-s', 1)[0]} ({tag})", z[key]))
                    break
    if len(rows) > 2:
        recon_grid(rows, shape, out / "plots" / "recon_grid.png")
    import shutil

    hashed = [n for n in seed0 if n.startswith("hash-")] or seed0
    for plot in ("hamming_hist", "bit_balance", "train_curve"):
        src = out / "cells" / hashed[0] / "plots" / f"{plot}.png"
        if src.is_file():
            shutil.copy(src, out / "plots" / f"{plot}.png")
