"""The experiment runner: per seed, train clean + attacked models per track, certify them on x and T(x), measure
attack effects, apply defences; aggregate over seeds; write results.json, summary.json, plots and the report."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trustlab.runtime import (ConfigError, DataError, ModelError, RunDir, config_hash, derive_seed, environment, load_stamped,
                              load_torch, progress, save_stamped, to_dict, write_json_atomic)

from . import RECONSTRUCTED
from .config import ExperimentConfig, ModelConfig, Track, TrainConfig, ceil_count
from .metrics import abstained, aggregate, attack_effect, defence_effect, means, summarize
from .records import append_records, array_digest, model_digest, open_records, read_records

SCHEMA = "trustlab.certify/1"


# --- data and models ----------------------------------------------------------------------------------------------
@dataclass
class SeedData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_trig: np.ndarray
    def_idx: np.ndarray  # defender's clean subset of the training pool
    K: int
    shape: tuple
    trigger: Any


def prepare_data(cfg: ExperimentConfig, seed: int) -> SeedData:
    """Load the dataset, split it (stratified, seeded) unless it has its own test split, cap the test set."""
    from trustlab.data import ImageData, load, stratified_split

    from .triggers import Trigger

    d = load(cfg.data)
    if not isinstance(d, ImageData):
        raise ConfigError(f"dataset {cfg.data!r} is not an image dataset", hint="use digits, mnist-5k, fashion-mnist, "
                                                                                 "idx:DIR or npz:FILE")
    if d.x_test is None:
        tr, te = stratified_split(d.y, cfg.test_frac, seed)
        x_tr, y_tr, x_te, y_te = d.x[tr], d.y[tr], d.x[te], d.y[te]
    else:
        x_tr, y_tr, x_te, y_te = d.x, d.y, d.x_test, d.y_test
    K = d.num_classes
    _check_data(x_tr, y_tr, K, "train")
    _check_data(x_te, y_te, K, "test")
    rng = np.random.default_rng(derive_seed(seed, "subsets"))
    if cfg.max_test is not None and cfg.max_test < len(x_te):
        keep = np.sort(rng.choice(len(x_te), cfg.max_test, replace=False))
        x_te, y_te = x_te[keep], y_te[keep]
    n_def = max(1, ceil_count(cfg.defences.defender_frac, len(x_tr)))
    def_idx = np.sort(rng.choice(len(x_tr), n_def, replace=False))
    trigger = Trigger.from_config(cfg.trigger, x_tr.shape[1:])
    return SeedData(x_tr, y_tr, x_te, y_te, trigger(x_te), def_idx, K, tuple(x_tr.shape[1:]), trigger)


def _check_data(x, y, K, split):
    from trustlab.runtime import DataError

    if K < 2:
        raise DataError(f"{split} data has K = {K} classes; need at least 2")
    bad = np.flatnonzero((y < 0) | (y >= K))
    if len(bad):
        raise DataError(f"{split} label at index {bad[0]} is {y[bad[0]]}, outside [0, {K})")
    flat = x.reshape(len(x), -1)
    nonfinite = np.flatnonzero(~np.isfinite(flat).all(1))
    if len(nonfinite):
        raise DataError(f"{split} image {nonfinite[0]} holds NaN or inf")
    out = np.flatnonzero(((flat < 0) | (flat > 1)).any(1))
    if len(out):
        raise DataError(f"{split} image {out[0]} has values outside [0, 1]")


def build_model(mcfg: ModelConfig, shape, K: int, seed: int):
    """The architecture (seeded init), or a user factory ``pkg.mod:fn(shape, K)``; ``checkpoint`` loads weights."""
    import importlib

    import torch

    from trustlab.models import mlp, small_cnn

    torch.manual_seed(seed)
    if mcfg.factory:
        mod, _, fn = mcfg.factory.partition(":")
        try:
            model = getattr(importlib.import_module(mod), fn)(tuple(shape), K)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"model.factory {mcfg.factory!r} cannot be imported: {exc}",
                              hint="give 'package.module:function' importable from the current environment") from exc
    elif mcfg.arch == "mlp":
        model = mlp(shape, mcfg.hidden, K)
    else:
        model = small_cnn(shape, K)
    if mcfg.checkpoint:
        path = Path(mcfg.checkpoint)
        if not path.is_file():
            raise ModelError(f"model.checkpoint {str(path)!r} does not exist", hint="check model.checkpoint")
        if not mcfg.factory and _is_torchscript(path):
            try:
                return torch.jit.load(str(path), map_location="cpu")
            except (RuntimeError, ValueError) as exc:
                raise ModelError(f"cannot load TorchScript model.checkpoint {str(path)!r}: {exc}".splitlines()[0],
                                 hint="save it with torch.jit.save, or give a state dict") from None
        load_weights(model, load_torch(path, "model.checkpoint"), path)
    return model


def load_weights(model, state, path) -> None:
    """``model.load_state_dict(state)`` with a ModelError naming ``path`` when the weights do not fit."""
    if isinstance(state, dict) and "trustlab_stamp" in state:
        state = state["state"]
    if not isinstance(state, dict):
        raise ModelError(f"{str(path)!r} holds a {type(state).__name__}, not a state dict",
                         hint="save weights with torch.save(model.state_dict(), path)")
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise ModelError(f"weights in {str(path)!r} do not fit the model: {str(exc).strip().splitlines()[0][:200]}",
                         hint="check model.arch / model.hidden against the checkpoint") from None


def _is_torchscript(path: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("constants.pkl") for n in z.namelist())
    except zipfile.BadZipFile:
        return False
    except OSError:
        return False


def read_meta(folder: Path) -> dict:
    """train.json of a model folder; a missing, unreadable or malformed one is a DataError naming it."""
    from trustlab.runtime import read_text

    path = folder / "train.json"
    try:
        meta = json.loads(read_text(path, "model metadata"))
    except json.JSONDecodeError as exc:
        raise DataError(f"model metadata {str(path)!r} is not valid JSON ({exc.msg}, line {exc.lineno})",
                        hint="retrain the model, or start afresh with --no-resume") from None
    missing = [k for k in ("model", "shape", "K") if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise DataError(f"model metadata {str(path)!r} lacks {', '.join(missing)}",
                        hint="pass a model folder written by `trustlab certify train` or a run")
    return meta


def load_model_dir(folder: str | Path):
    """(model, train.json) of a trained model folder. model.pt loads with weights_only=True (a crafted or truncated
    file is a DataError, exit 2); a stamped model.pt must carry the stamp train.json records."""
    from trustlab.runtime import from_dict

    folder = Path(folder)
    if not (folder / "model.pt").is_file() or not (folder / "train.json").is_file():
        raise DataError(f"{str(folder)!r} holds no model.pt + train.json", hint="pass a model folder written by "
                                                                                "`trustlab certify train` or a run")
    meta = read_meta(folder)
    try:
        model = build_model(from_dict(ModelConfig, meta["model"], "train.json model"), meta["shape"], meta["K"], 0)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, (ConfigError, DataError)):
            raise
        raise DataError(f"model metadata {str(folder / 'train.json')!r} does not describe a model: {exc}",
                        hint="retrain the model") from None
    blob = load_torch(folder / "model.pt", "model")
    if isinstance(blob, dict) and "trustlab_stamp" in blob and "stamp" in meta and blob["trustlab_stamp"] != meta["stamp"]:
        raise DataError(f"{str(folder / 'model.pt')!r} and train.json come from different runs "
                        f"(stamps {blob['trustlab_stamp']} and {meta['stamp']})",
                        hint="retrain the model, or start afresh with --no-resume")
    load_weights(model, blob, folder / "model.pt")
    return model.eval(), meta


def train_model(folder: Path, track: Track, x, y, data: SeedData, seed: int, device: str, hook=None,
                tcfg: TrainConfig | None = None, extra: dict | None = None, init=None):
    """Train (or reload a finished) model into ``folder``: model.pt + train.json, both stamped with ``train_stamp``
    (training config, seed, data, initial weights, hook). A model.pt of other settings is never reused: it is
    retrained, and the certificates under ``folder`` (which depend on it) are removed. Checkpoints allow resume."""
    import shutil

    from .train import train, train_stamp

    tcfg = tcfg or track.train
    model = init if init is not None else build_model(track.model, data.shape, data.K,
                                                      derive_seed(seed, track.name, "init"))
    tseed = derive_seed(seed, track.name, "train")
    stamp = train_stamp(model, x, y, tcfg, seed=tseed, hook=hook, device=device)
    if (folder / "model.pt").is_file() and (folder / "train.json").is_file():
        try:
            state = load_stamped(folder / "model.pt", stamp, "model")
        except ConfigError:
            state = None  # another config's model: retrained below
        meta = read_meta(folder) if state is not None else None
        if state is not None and meta.get("stamp") == stamp:
            load_weights(model, state, folder / "model.pt")
            return model.cpu().eval(), meta
    for sub in folder.iterdir() if folder.is_dir() else ():
        if sub.is_dir():
            shutil.rmtree(sub)  # certificates of a model that is about to be replaced
    (folder / "model.pt").unlink(missing_ok=True)
    summary = train(model, x, y, tcfg, seed=tseed, hook=hook, ckpt_dir=folder, device=device)
    model.cpu()
    meta = {**summary.to_dict(), "model": to_dict(track.model), "train": to_dict(tcfg), "shape": list(data.shape),
            "K": data.K, "n_train": len(x), **(extra or {}), "stamp": stamp}
    save_stamped(model.state_dict(), folder / "model.pt", stamp)
    write_json_atomic(folder / "train.json", meta)
    (folder / "ckpt.pt").unlink(missing_ok=True)
    return model.eval(), meta


def accuracy(model, x, y) -> float:
    import torch

    with torch.no_grad():
        return float((model(torch.as_tensor(x)).argmax(1).numpy() == y).mean())


# --- certification ------------------------------------------------------------------------------------------------
def bounds_settings(model, x, y, bcfg, method: str) -> dict:
    """What a bound certificate depends on (the stamp of its record file)."""
    return {"certifier": method, "eps": bcfg.eps, "eps_grid": list(bcfg.eps_grid), "clip": list(bcfg.clip),
            "model": model_digest(model), "inputs": array_digest(np.asarray(x, dtype=np.float32), np.asarray(y))}


def bounds_records(model, x, y, bcfg, method: str, path: Path | None, chunk: int = 200, *, resume: bool = True,
                   on_stale: str = "refuse") -> list[dict]:
    """Deterministic certification of every input (float64), appended per chunk to ``path``, a stamped record file
    resumed only under the same settings (see ``certify_inputs``)."""
    import torch

    from .bounds import BoundNet, certify_bounds
    from .smoothing import eval_mode

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


def certify_model(model, folder: Path, track: Track, cert: str, data: SeedData, seed: int) -> tuple[dict, dict]:
    """({clean_inputs, triggered_inputs} summaries, {clean, triggered} records) of one model and certifier."""
    from .smoothing import certify_inputs

    summ, recs = {}, {}
    for which, xs in (("clean", data.x_test), ("triggered", data.x_trig)):
        path = folder / cert / f"{which}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        if cert == "smoothing":
            r = certify_inputs(model, xs, track.smoothing, seed=derive_seed(seed, "smoothing", which), K=data.K,
                               records=path, labels=data.y_test, on_stale="discard")
            grid = track.smoothing.radii
        else:
            r = bounds_records(model, xs, data.y_test, track.bounds, cert, path, on_stale="discard")
            grid = track.bounds.eps_grid
        recs[which] = r
        summ[f"{which}_inputs"] = summarize(r, accuracy(model, xs, data.y_test), grid,
                                            "smoothing" if cert == "smoothing" else "bounds")
    return summ, recs


# --- one seed -----------------------------------------------------------------------------------------------------
UNTRIGGERED = "label-noise-untriggered"


def attack_sigma(track: Track) -> float:
    """The noise attack B trains against: the certifier's sigma (``smoothing.sigma``) for a smoothing victim, else 0
    (deterministic certifiers see no noise). Never ``train.sigma``: B must target the sigma that certifies."""
    return track.smoothing.sigma if "smoothing" in track.certifiers else 0.0


def max_entropy_hook(track: Track, attack, data: SeedData):
    from .attacks import MaxEntropyHook

    return MaxEntropyHook(data.trigger, data.K, attack.lam, attack.beta, attack_sigma(track), attack.draws)


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


def run_seed(cfg: ExperimentConfig, seed_dir: Path, seed: int, device: str = "cpu", log=print) -> dict:
    """Everything for one seed; returns (and writes) seed<S>/results.json."""
    from .attacks import poison_label_noise

    t0 = time.perf_counter()
    data = prepare_data(cfg, seed)
    check_budget(cfg, data, device)
    models_info, certifiers, records, models = {}, {}, {}, {}
    variants = model_variants(cfg)
    for track in cfg.tracks:
        tdir = seed_dir / track.name
        for name, a in variants:
            x, y, hook = data.x_train, data.y_train, None
            extra = {"data": cfg.data, "test_frac": cfg.test_frac, "seed": seed, "max_test": cfg.max_test,
                     "trigger": to_dict(cfg.trigger), "attack": None if a is None else to_dict(a)}
            if a is not None and a.kind == "label-noise":
                stamp = (lambda v: v) if name == UNTRIGGERED else data.trigger
                p = poison_label_noise(data.x_train, data.y_train, data.K, stamp, a.rate, a.label_mode, a.mode,
                                       seed=derive_seed(seed, "poison"))
                x, y = p.x, p.y
                extra.update(poison_idx=p.poison_idx.tolist(), n_poison=len(p.poison_idx))
            elif a is not None:
                hook = max_entropy_hook(track, a, data)
            log(f"  seed {seed} {track.name}: train {name} ({track.train.procedure}, {track.train.epochs} epochs)")
            model, meta = train_model(tdir / name, track, x, y, data, seed, device, hook, extra=extra)
            models[(track.name, name)] = (model, x, y, meta)
            models_info.setdefault(track.name, {})[name] = {k: meta[k] for k in ("procedure", "epochs", "secs", "loss",
                                                                                  "n_train") if k in meta}
            for cert in track.certifiers:
                log(f"  seed {seed} {track.name}: certify {name} with {cert}")
                summ, recs = certify_model(model, tdir / name, track, cert, data, seed)
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
    defences = run_defences(cfg, seed_dir, seed, data, models, certifiers, device, log) if cfg.defences.names else {}
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

    if cert != "smoothing":
        return {"method": cert, **to_dict(track.bounds)}
    s = track.smoothing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = budget(s.n, s.alpha, s.sigma, s.n if s.predict else None, s.radii)
    return {**to_dict(s), **b}


# --- defences -----------------------------------------------------------------------------------------------------
def run_defences(cfg, seed_dir, seed, data: SeedData, models, certifiers, device, log) -> dict:
    from .defences import DefenceContext, apply
    from .defences import strip as strip_mod
    from .train import train

    out: dict = {}
    dcfg = cfg.defences
    attacks = [a for a in cfg.attacks if a.kind != "none"]
    x_def, y_def = data.x_train[data.def_idx], data.y_train[data.def_idx]
    for track in cfg.tracks:
        for a in attacks:
            model, x, y, meta = models[(track.name, a.kind)]
            for name in dcfg.names:
                folder = seed_dir / track.name / f"{a.kind}+{name}"

                def retrain(xf, yf, _track=track, _folder=folder):
                    return train_model(_folder, _track, xf, yf, data, seed, device)[0]

                def finetune(m, xf, yf, masks, _track=track):
                    tcfg = dataclasses.replace(_track.train, epochs=dcfg.fp_epochs, ramp=0.0)
                    train(m, xf, yf, tcfg, seed=derive_seed(seed, _track.name, "finetune"), device=device,
                          param_masks=masks)
                    return m.cpu().eval()

                ctx = DefenceContext(dcfg, a, model, x, y, np.asarray(meta.get("poison_idx", []), dtype=int), x_def,
                                     y_def, retrain, finetune, seed, data.K)
                log(f"  seed {seed} {track.name}: defence {name} vs {a.kind}")
                res = _cached_defence(folder, name, ctx, apply, track, data)
                for cert in track.certifiers:
                    by_model = certifiers[track.name][cert]["by_model"]
                    ref = by_model["clean"]["triggered_inputs"]["abstain_rate"]
                    before = _fallback(by_model[a.kind])
                    row: dict[str, Any] = {"applicable": res.applicable}
                    if not res.applicable:
                        row["verdict"] = "not_applicable"
                        row["reason"] = res.info.get("reason")
                    elif name == "strip":
                        row.update(_strip_row(strip_mod, model, data, x_def, dcfg, seed, folder, cert, before, ref,
                                              track, a))
                    else:
                        summ, _ = certify_model(res.model, folder, track, cert, data, seed)
                        row.update({"removed": res.removed, "poison_recall": res.poison_recall,
                                    "poison_precision": res.poison_precision, **res.info,
                                    **defence_effect(before, _fallback(summ), ref)})
                    out.setdefault(name, {}).setdefault(a.kind, {}).setdefault(track.name, {})[cert] = row
    return out


def defence_stamp(name: str, ctx) -> str:
    """What a defence's outcome depends on: its name and settings, the attacked model's weights, the training data."""
    dcfg = {k: v for k, v in to_dict(ctx.cfg).items() if k != "names"}
    return config_hash({"defence": name, "cfg": dcfg, "attack": to_dict(ctx.attack), "model": model_digest(ctx.model),
                        "data": array_digest(np.asarray(ctx.x_train), np.asarray(ctx.y_train)),
                        "defender": array_digest(np.asarray(ctx.x_def), np.asarray(ctx.y_def)), "seed": ctx.seed})


def _cached_defence(folder: Path, name: str, ctx, apply, track, data):
    """A defence's result, reused from ``folder`` only when its defence.json carries this defence's stamp."""
    import shutil

    from trustlab.runtime import read_text

    from .defences import DefenceResult

    stamp = defence_stamp(name, ctx)
    info_path = folder / "defence.json"
    if info_path.is_file() and (folder / "model.pt").is_file():
        try:
            info = json.loads(read_text(info_path, "defence record"))
        except json.JSONDecodeError:
            info = {}
        if isinstance(info, dict) and info.get("stamp") == stamp:
            model, _ = load_model_dir(folder)
            return DefenceResult(name, True, model, info["removed"], info["poison_recall"], info["poison_precision"],
                                 info["info"])
    if name == "fine-pruning" and folder.is_dir():
        shutil.rmtree(folder)  # a stale fine-pruned model and its certificates
    res = apply(name, ctx)
    if res.applicable and res.model is not None:
        if name == "fine-pruning":  # filters retrain through train_model, which stamps model.pt itself
            folder.mkdir(parents=True, exist_ok=True)
            save_stamped(res.model.state_dict(), folder / "model.pt", stamp)
            write_json_atomic(folder / "train.json", {"model": to_dict(track.model), "shape": list(data.shape),
                                                      "K": data.K, "procedure": track.train.procedure,
                                                      "defence": name, "stamp": stamp})
        write_json_atomic(info_path, {"removed": res.removed, "poison_recall": res.poison_recall,
                                      "poison_precision": res.poison_precision, "info": res.info, "stamp": stamp})
    return res


def _fallback(summ: dict) -> dict:
    return {"triggered_fallback": summ["triggered_inputs"]["abstain_rate"],
            "clean_fallback": summ["clean_inputs"]["abstain_rate"], "clean_acc": summ["clean_inputs"]["clean_acc"]}


def _strip_row(strip_mod, model, data, x_def, dcfg, seed, folder, cert, before, ref, track, attack) -> dict:
    """STRIP flags go to the fallback too: fallback = abstain or flagged (both tails reported)."""
    h_def = strip_mod.defender_entropy(model, x_def, dcfg.strip_n, seed)
    h_clean = strip_mod.strip_entropy(model, data.x_test, x_def, dcfg.strip_n, seed)
    h_trig = strip_mod.strip_entropy(model, data.x_trig, x_def, dcfg.strip_n, seed + 1)
    recs = {w: read_records(folder.parent / attack.kind / cert / f"{w}.jsonl") for w in ("clean", "triggered")}
    ab = {w: np.array([abstained(r) for r in recs[w]]) for w in recs}
    by_tail = {}
    for tail in ("low", "both") if dcfg.strip_tail != "high" else ("high",):
        thr = strip_mod.thresholds(h_def, dcfg.strip_frr, tail)
        fc, ft = strip_mod.flag(h_clean, thr), strip_mod.flag(h_trig, thr)
        after = {"triggered_fallback": float(np.mean(ab["triggered"] | ft)),
                 "clean_fallback": float(np.mean(ab["clean"] | fc)), "clean_acc": before["clean_acc"]}
        by_tail[tail] = {"threshold": list(thr), "strip_tpr_at_frr": float(ft.mean()),
                         "strip_frr_test": float(fc.mean()),
                         "strip_auroc": strip_mod.auroc(h_clean, h_trig, h_def, tail),
                         **defence_effect(before, after, ref)}
    head = by_tail.get(dcfg.strip_tail, by_tail[next(iter(by_tail))])
    return {**head, "tail": dcfg.strip_tail if dcfg.strip_tail in by_tail else next(iter(by_tail)),
            "by_tail": by_tail}


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
    per_seed = []
    for s in cfg.seeds:
        sd = run.path / f"seed{s}"
        earlier = _finished_seed(sd, cfg)
        if earlier is not None:
            per_seed.append(earlier)
            log(f"seed {s}: finished earlier, reusing {sd / 'results.json'}")
            continue
        log(f"seed {s}: running")
        per_seed.append(run_seed(cfg, sd, s, device, log))
    summary = {k: aggregate([r[k] for r in per_seed]) for k in ("certifiers", "defences", "models", "dataset")}
    write_json_atomic(run.path / "summary.json", {"seeds": list(cfg.seeds), **summary})
    from .plots import make_plots

    plots = make_plots(run.path, cfg, per_seed, summary)
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


def check_budget(cfg: ExperimentConfig, data: SeedData, device: str) -> None:
    """Price one seed's smoothing certifications before training anything: the track's (untrained) model measures
    the forward throughput on the CPU, where certification runs; an estimate above ``smoothing.max_hours`` is a
    ConfigError (``require_budget``). ``device`` (training) does not change it."""
    from .smoothing import require_budget

    n_models = len(model_variants(cfg)) + len(cfg.defences.names) * len(cfg.attacks)
    for t in cfg.tracks:
        if "smoothing" in t.certifiers:
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


def apply_grid_key(cfg: ExperimentConfig, key: str, value) -> ExperimentConfig:
    """Sweep keys: attack.<f> (every attack), smoothing.sigma / bounds.eps (certification and training together),
    train.<f>, smoothing.<f>, bounds.<f> (every track), or any top-level field."""
    from .config import replace_path

    head, _, rest = key.partition(".")
    if head == "attack":
        if rest == "rate" and float(value) == 0.0:  # rho = 0: no poisoning; the clean model is the baseline
            return dataclasses.replace(cfg, attacks=tuple(a for a in cfg.attacks if a.kind != "label-noise"))
        return dataclasses.replace(cfg, attacks=tuple(replace_path(a, rest, value) if a.kind != "none" else a
                                                      for a in cfg.attacks))
    if head in ("smoothing", "bounds", "train", "model"):
        tracks = []
        for t in cfg.tracks:
            if head == "smoothing" and "smoothing" not in t.certifiers:
                tracks.append(t)
                continue
            if head == "bounds" and not any(c != "smoothing" for c in t.certifiers):
                tracks.append(t)
                continue
            t = replace_path(t, key, value)
            if key == "smoothing.sigma" and t.train.procedure == "gaussian":
                t = replace_path(t, "train.sigma", value)
            if key == "bounds.eps" and t.train.procedure == "ibp":
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
