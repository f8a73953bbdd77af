"""The experiment runner: per seed, train clean + attacked models per track, certify them on x and T(x), measure
attack effects, apply defences; aggregate over seeds; write results.json, summary.json, plots and the report."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustlab.runtime import RunDir, config_hash, derive_seed, environment, to_dict, write_json_atomic

from . import RECONSTRUCTED
from .certifiers import certify_model
from .config import SMOOTHING_CERTIFIERS, ExperimentConfig, Track
from .data import SeedData, prepare_data
from .metrics import aggregate, attack_effect, means
from .records import model_folder
from .store import build_model, train_model

SCHEMA = "trustlab.certify/1"
UNTRIGGERED = "label-noise-untriggered"


def attack_sigma(track: Track) -> float:
    """The noise attack B trains against: the certifier's sigma (``smoothing.sigma``) for a smoothing victim, else 0
    (deterministic certifiers see no noise). Never ``train.sigma``: B must target the sigma that certifies."""
    return track.smoothing.sigma if any(c in SMOOTHING_CERTIFIERS for c in track.certifiers) else 0.0


def model_variants(cfg: ExperimentConfig) -> list[tuple[str, Any]]:
    """(model name, attack or None) per trained model: the clean model, one per attack, and for attack A the same
    poisons without the trigger stamped (the baseline that shows the trigger, not the label noise, does the work)."""
    out: list[tuple[str, Any]] = [("clean", None)]
    for a in cfg.attacks:
        if a.kind == "none":
            continue
        out.append((a.kind, a))
        if a.kind == "label-noise" and cfg.untriggered_baseline:
            out.append((UNTRIGGERED, a))
    return out


def run_seed(cfg: ExperimentConfig, seed_dir: Path, seed: int, device: str = "cpu", log=print,
             data: SeedData | None = None) -> dict:
    """Everything for one seed (the verbs ``attack`` -> ``train`` (stamped model store) -> ``certify`` per track and
    model, then the defences); returns (and writes) seed<S>/results.json."""
    from .api import attack

    t0 = time.perf_counter()
    data = prepare_data(cfg, seed) if data is None else data
    check_budget(cfg, data, device)
    models_info, certifiers, records, models = {}, {}, {}, {}
    variants = model_variants(cfg)
    for track in cfg.tracks:
        for name, a in variants:
            x, y, hook = data.x_train, data.y_train, None
            extra = {"data": cfg.data, "test_frac": cfg.test_frac, "seed": seed, "max_test": cfg.max_test,
                     "trigger": to_dict(cfg.trigger), "attack": None if a is None else to_dict(a)}
            if a is not None:
                res = attack((x, y), a, cfg.trigger, K=data.K, sigma=attack_sigma(track),
                             seed=derive_seed(seed, "poison"), stamp=name != UNTRIGGERED)
                x, y, hook = res.x, res.y, res.hook
                if a.kind == "label-noise":
                    extra.update(poison_idx=res.poison_idx.tolist(), n_poison=len(res.poison_idx))
                else:
                    extra["attack_sigma"] = attack_sigma(track)
            folder = model_folder(seed_dir, track.name, name)
            log(f"  seed {seed} {track.name}: train {name} ({track.train.procedure}, {track.train.epochs} epochs)")
            model, meta = train_model(folder, track, x, y, data, seed, device, hook, extra=extra)
            models[(track.name, name)] = (model, x, y, meta)
            models_info.setdefault(track.name, {})[name] = {k: meta[k] for k in ("procedure", "epochs", "secs", "loss",
                                                                                  "n_train") if k in meta}
            for cert in track.certifiers:
                log(f"  seed {seed} {track.name}: certify {name} with {cert}")
                summ, recs = certify_model(model, folder, track, cert, data, seed)
                entry = certifiers.setdefault(track.name, {}).setdefault(cert, {"params": _cert_params(track, cert),
                                                                                "by_model": {}})
                entry["by_model"][name] = summ
                records[(track.name, cert, name)] = recs
        for cert in track.certifiers:
            entry = certifiers[track.name][cert]
            entry["attack_effect"] = {name: attack_effect(entry["by_model"]["clean"], entry["by_model"][name],
                                                          records[(track.name, cert, "clean")]["triggered"],
                                                          records[(track.name, cert, name)]["triggered"])
                                      for name, a in variants if a is not None}
    defences = {}
    if cfg.defences.names:
        from .defending import run_defences

        defences = run_defences(cfg, seed_dir, seed, data, models, certifiers, device, log)
    result = {"seed": seed, "dataset": {"name": cfg.data, "n_train": len(data.x_train), "n_test": len(data.x_test),
                                        "shape": list(data.shape), "K": data.K, "n_defender": len(data.def_idx),
                                        "n_poison": next((m[3].get("n_poison") for k, m in models.items()
                                                          if k[1] == "label-noise"), 0)},
              "models": models_info, "certifiers": certifiers, "defences": defences,
              "timing": {"seconds": round(time.perf_counter() - t0, 2)}, "config_hash": config_hash(cfg)}
    write_json_atomic(seed_dir / "results.json", result)
    return result


def _cert_params(track: Track, cert: str) -> dict:
    from .stats import budget
    import warnings

    if cert not in SMOOTHING_CERTIFIERS:
        return {"method": cert, **to_dict(track.bounds)}
    s = track.smoothing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = budget(s.n, s.alpha, s.sigma, s.n if s.predict else None, s.radii)
    return {**to_dict(s), **b}


# --- the whole experiment -----------------------------------------------------------------------------------------
def run_experiment(cfg: ExperimentConfig, out: str | Path | None = None, resume: bool = True, verb: str = "run",
                   log=print) -> Path:
    """Run every seed (skipping finished ones), aggregate, plot, write results.json + summary.json + report."""
    from trustlab.runtime import configure_threads

    from .train import resolve_device

    configure_threads()
    device = str(resolve_device(cfg.device))
    run = RunDir.open(out, "certify", verb, cfg, seed=cfg.seeds[0], resume=resume)
    if not resume:
        import shutil

        for s in cfg.seeds:
            shutil.rmtree(run.path / f"seed{s}", ignore_errors=True)
    t0 = time.perf_counter()
    per_seed, first = [], None
    for s in cfg.seeds:
        sd = run.path / f"seed{s}"
        earlier = _finished_seed(sd, cfg)
        if earlier is not None:
            per_seed.append(earlier)
            log(f"seed {s}: finished earlier, reusing {sd / 'results.json'}")
            continue
        log(f"seed {s}: running")
        data = prepare_data(cfg, s)
        first = data if s == cfg.seeds[0] else first
        per_seed.append(run_seed(cfg, sd, s, device, log, data=data))
    first = first or prepare_data(cfg, cfg.seeds[0])  # seed 0 finished earlier: its trigger examples
    summary = {k: aggregate([r[k] for r in per_seed]) for k in ("certifiers", "defences", "models", "dataset")}
    write_json_atomic(run.path / "summary.json", {"seeds": list(cfg.seeds), **summary})
    from .plots import make_plots

    plots = make_plots(run.path, cfg, per_seed, summary, examples=(first.x_test[:4], first.x_trig[:4]))
    import torch
    import scipy

    env = {**environment(), "scipy": scipy.__version__, "torch": torch.__version__, "device": device,
           "threads": torch.get_num_threads()}
    headline = headline_metrics(means(summary["certifiers"]))
    run.write_results(headline, artifacts=[*plots, "summary.json", *[f"seed{s}/results.json" for s in cfg.seeds]],
                      schema=SCHEMA, caveat=RECONSTRUCTED, seeds=list(cfg.seeds), env=env,
                      dataset=per_seed[0]["dataset"], trigger=to_dict(cfg.trigger),
                      models=means(summary["models"]), certifiers=means(summary["certifiers"]),
                      defences=means(summary["defences"]), summary=summary,
                      timing={"seconds": round(time.perf_counter() - t0, 2),
                              "per_seed": [r["timing"]["seconds"] for r in per_seed]})
    from trustlab.report import render

    from .report import report_section

    render(run.path, sections={"certify": report_section})
    return run.path


def _finished_seed(seed_dir: Path, cfg: ExperimentConfig) -> dict | None:
    """seed<S>/results.json if it was written under this config (its config_hash stamp), else None."""
    path = seed_dir / "results.json"
    if not path.is_file():
        return None
    from trustlab.runtime import read_text

    try:
        res = json.loads(read_text(path, "seed results"))
    except json.JSONDecodeError:
        return None
    return res if isinstance(res, dict) and res.get("config_hash") == config_hash(cfg) else None


def check_budget(cfg: ExperimentConfig, data: SeedData, device: str) -> None:
    """Price one seed's smoothing certifications before training anything: the track's (untrained) model measures
    the forward throughput on the CPU, where certification runs; an estimate above ``smoothing.max_hours`` is a
    ConfigError (``require_budget``). ``device`` (training) does not change it."""
    from .budget import require_budget

    n_models = len(model_variants(cfg)) + len(cfg.defences.names) * len(cfg.attacks)
    for t in cfg.tracks:
        if any(c in SMOOTHING_CERTIFIERS for c in t.certifiers):
            model = build_model(t.model, data.shape, data.K, 0)  # certification runs where the trained model lands: CPU
            require_budget(model, data.shape, t.smoothing, n_inputs=2 * len(data.x_test) * n_models)


def headline_metrics(certifiers: dict) -> dict:
    """Flat metrics: abstain rates on x and T(x) and attack effects per track/certifier/model."""
    out = {}
    for track, certs in certifiers.items():
        for cert, e in certs.items():
            for m, s in e["by_model"].items():
                out[f"{track}.{cert}.{m}.clean_acc"] = s["clean_inputs"]["clean_acc"]
                out[f"{track}.{cert}.{m}.abstain_clean"] = s["clean_inputs"]["abstain_rate"]
                out[f"{track}.{cert}.{m}.abstain_triggered"] = s["triggered_inputs"]["abstain_rate"]
            for a, eff in e.get("attack_effect", {}).items():
                out[f"{track}.{cert}.{a}.triggered_abstain_delta"] = eff["triggered_abstain_delta"]
    return out




# --- single-model verbs on model folders (what `certify train` / `certify eval` call) ---------------------------------
def train_one(cfg: ExperimentConfig, folder: Path, seed: int):
    """Train the one model of a one-track, one-attack config into ``folder`` (attack -> train, stamped)."""
    from .api import attack

    from .train import resolve_device

    track, atk = cfg.tracks[0], cfg.attacks[0]
    data = prepare_data(cfg, seed)
    x, y, hook = data.x_train, data.y_train, None
    extra = {"data": cfg.data, "test_frac": cfg.test_frac, "seed": seed, "max_test": None,
             "trigger": to_dict(cfg.trigger), "attack": to_dict(atk),
             "attack_sigma": attack_sigma(track) if atk.kind == "max-entropy" else None}
    if atk.kind != "none":
        res = attack((x, y), atk, cfg.trigger, K=data.K, sigma=attack_sigma(track), seed=derive_seed(seed, "poison"))
        x, y, hook = res.x, res.y, res.hook
        if atk.kind == "label-noise":
            extra.update(poison_idx=res.poison_idx.tolist(), n_poison=len(res.poison_idx))
    return train_model(folder, track, x, y, data, seed, str(resolve_device(cfg.device)), hook, extra=extra)


EVAL_META = ("data", "seed", "test_frac", "trigger", "model", "shape", "K")


@dataclass(frozen=True)
class EvalResult:
    path: Path
    certifier: str
    by_inputs: dict
    params: dict


def model_sigma(meta: dict) -> float:
    """The smoothing sigma a model was made for: its gaussian training sigma, else the default 0.25."""
    from .config import SmoothingConfig

    train = meta.get("train") or {}
    if train.get("procedure") == "gaussian" and isinstance(train.get("sigma"), (int, float)):
        return float(train["sigma"])
    return SmoothingConfig().sigma


def defend_run(run_dir: Path, cfg: ExperimentConfig, out: Path, resume: bool = True, log=print) -> Path:
    """Defences on a finished run: its seed folders (trained models, certificates; all stamped, so stale ones are
    not trusted) are copied to ``out`` once, then the experiment runs there with ``cfg.defences``."""
    import shutil

    from trustlab.runtime import ConfigError
    from trustlab.runtime.files import at_path
    from trustlab.runtime.rundir import RunDir

    # claim (or clear, with resume=False) the folder before anything is copied into it
    RunDir.open(out, "certify", "defend", cfg, seed=cfg.seeds[0], resume=resume).close()
    for s in cfg.seeds:
        src, dst = Path(run_dir) / f"seed{s}", Path(out) / f"seed{s}"
        if src.is_dir() and not dst.exists():
            with at_path(dst, "run folder", ConfigError):
                shutil.copytree(src, dst, ignore=shutil.ignore_patterns("results.json"))
    return run_experiment(cfg, out, resume=True, verb="defend", log=log)
