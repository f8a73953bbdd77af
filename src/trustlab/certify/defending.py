"""Defences inside an experiment: for each track and attack, apply each defence to the attacked model (results
cached in ``seed<S>/<track>/<attack>+<defence>/``, stamped), recertify, and score the effect against the clean
model's triggered abstain rate. STRIP flags go to the fallback too (fallback = abstain or flagged)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from trustlab.models.identity import weights_digest
from trustlab.runtime import config_hash, derive_seed, save_stamped, to_dict, write_json_atomic

from .certifiers import certify_model
from .data import SeedData
from .metrics import abstained, defence_effect
from .records import array_digest, cert_file, read_records
from .store import load_model_dir, train_model


def run_defences(cfg, seed_dir, seed, data: SeedData, models, certifiers, device, log) -> dict:
    """{defence: {attack: {track: {certifier: row}}}} for one seed."""
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
    return config_hash({"defence": name, "cfg": dcfg, "attack": to_dict(ctx.attack), "model": weights_digest(ctx.model),
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
    recs = {w: read_records(cert_file(folder.parent / attack.kind, cert, w)) for w in ("clean", "triggered")}
    ab = {w: np.array([abstained(r) for r in recs[w]]) for w in recs}
    by_tail = {}
    for tail in ("low", "both") if dcfg.strip_tail != "high" else ("high",):
        thr = strip_mod.thresholds(h_def, dcfg.strip_frr, tail)
        fc, ft = strip_mod.flag(h_clean, thr), strip_mod.flag(h_trig, thr)
        after = {"triggered_fallback": float(np.mean(ab["triggered"] | ft)),
                 "clean_fallback": float(np.mean(ab["clean"] | fc)), "clean_acc": before["clean_acc"]}
        by_tail[tail] = {"threshold": strip_mod.thresholds_json(thr), "strip_tpr_at_frr": float(ft.mean()),
                         "strip_frr_test": float(fc.mean()),
                         "strip_auroc": strip_mod.auroc(h_clean, h_trig, h_def, tail),
                         **defence_effect(before, after, ref)}
    head = by_tail.get(dcfg.strip_tail, by_tail[next(iter(by_tail))])
    return {**head, "tail": dcfg.strip_tail if dcfg.strip_tail in by_tail else next(iter(by_tail)),
            "by_tail": by_tail}
