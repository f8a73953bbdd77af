"""``evaluate(run_dir)``: the attacks, their baselines, bit balance, detection and DCS on a trained run's saved
messages (re-runnable offline), merged into results.json."""

from __future__ import annotations

import json
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trustlab.runtime import (ConfigError, DataError, RunDir, at_path, configure_threads, from_dict, load_stamped,
                              load_yaml, read_text)

from .attack_records import AttackRecords
from .config import HASHED, AttackConfig, VFLConfig

ATTACKS = ("whitebox", "inverse", "label", "decode", "detect")


def retrain_hint(run_dir: Path) -> str:
    return f"retrain the run: trustlab vfl train --out {shlex.quote(str(run_dir))} --no-resume"


def _json(path: Path, what: str, run_dir: Path):
    try:
        return json.loads(read_text(path, what))
    except json.JSONDecodeError as exc:
        raise DataError(f"{what} {str(path)!r} is not valid JSON ({exc.msg}, line {exc.lineno})",
                        hint=retrain_hint(run_dir)) from None


def _npy(path: Path, what: str, run_dir: Path) -> np.ndarray:
    """``np.load`` without pickles; a missing, truncated or object-typed file is a DataError naming it."""
    with at_path(path, what):
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, EOFError) as exc:
            raise DataError(f"{what} {str(path)!r} is truncated or not a plain array ({exc})".splitlines()[0],
                            hint=retrain_hint(run_dir)) from None


def _stamped(run: dict, path: Path, what: str):
    """``load_stamped`` with a hint that names this run's retrain command (in-memory weights of a
    ``TrainResult`` are used as they are)."""
    if "states" in run:
        return run["states"].get(Path(path).name)
    try:
        return load_stamped(path, run["stamp"], what)
    except (ConfigError, DataError) as exc:
        raise type(exc)(exc.message, hint=retrain_hint(run["dir"])) from None


def load_run(run_dir: str | Path) -> dict:
    """Everything a trained run folder holds for the attacks."""
    run_dir = Path(run_dir)
    if not (run_dir / "splits.npz").is_file() or not (run_dir / "meta.json").is_file():
        raise DataError(f"{str(run_dir)!r} holds no trained VFL run (splits.npz/meta.json missing)",
                        hint=f"train first: trustlab vfl train --config digits --out {shlex.quote(str(run_dir))}")
    cfg = from_dict(VFLConfig, load_yaml(run_dir / "config.yaml"), where="config.yaml")
    meta = _json(run_dir / "meta.json", "run metadata", run_dir)
    with at_path(run_dir / "splits.npz", "splits file"):
        try:
            with np.load(run_dir / "splits.npz", allow_pickle=False) as z:
                sp = {k: z[k] for k in z.files}
        except (ValueError, EOFError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno is not None:
                raise
            raise DataError(f"splits file {str(run_dir / 'splits.npz')!r} is truncated or corrupt",
                            hint=retrain_hint(run_dir)) from None
    n = len(meta["parties"])
    msgs = {s: [_npy(run_dir / "messages" / f"{s}_p{i}.npy", "message file", run_dir) for i in range(n)]
            for s in ("train", "aux", "test")}
    codes = _npy(run_dir / "codes.npy", "class codes", run_dir) if (run_dir / "codes.npy").is_file() else None
    results = _json(run_dir / "results.json", "results file", run_dir) if (run_dir / "results.json").is_file() else {}
    from .label import state_stamp

    rid = read_text(run_dir / "run_id", "run id file").strip() if (run_dir / "run_id").is_file() else ""
    return {"dir": run_dir, "cfg": cfg, "meta": meta, "splits": sp, "msgs": msgs, "codes": codes, "results": results,
            "stamp": state_stamp(rid, cfg)}


def target_features(run: dict, t: int, aux_data: str | None) -> np.ndarray:
    """Party t's raw rows in A's aligned order: from ``--aux-data`` (by id) or by re-loading the dataset."""
    ids = run["splits"]["ids"].astype(str)
    if aux_data:
        from .data import load_party_file

        pd_ = load_party_file(aux_data)
        check_aux_matches(pd_, run["meta"]["parties"][t], t, aux_data)
        where = {str(k): j for j, k in enumerate(pd_.ids)}
        rows = [where.get(k, -1) for k in ids]
        missing = sum(r < 0 for r in rows)
        if missing == len(rows):
            raise DataError(f"--aux-data {aux_data!r} shares no ids with the run", hint="pass the target party's file")
        X = np.full((len(ids), pd_.X.shape[1]), np.nan, np.float32)
        ok = np.asarray(rows) >= 0
        X[ok] = pd_.X[np.asarray(rows)[ok]]
        return X
    from .data import load_vertical

    if run["cfg"].transport.kind != "inproc":
        raise ConfigError("after a gRPC run the label party never saw raw features",
                          hint="pass the target party's rows with --aux-data party0.npz")
    vd = load_vertical(run["cfg"])
    where = {str(k): j for j, k in enumerate(vd.parties[t].ids)}
    return vd.parties[t].X[[where[k] for k in ids]]


def check_aux_matches(pd_, p_meta: dict, t: int, aux_data: str) -> None:
    """The ``--aux-data`` rows must be party t's columns: same width, image shape and feature names (by hash, as
    the party reported them at hello); another party's block would give a meaningless MSE."""
    d, shape = int(p_meta["d"]), p_meta.get("image_shape")
    own = tuple(pd_.image_shape) if pd_.image_shape else None
    where = f"--aux-data {aux_data!r}"
    fix = f"pass party {t}'s own file (party{t}.npz from export-parties), or choose --target-party"
    if pd_.d != d:
        raise DataError(f"{where} has {pd_.d} columns but party {t} has {d}: it is not party {t}'s block", hint=fix)
    if shape is not None and own is not None and tuple(shape) != own:
        raise DataError(f"{where} holds images of shape {own} but party {t}'s are {tuple(shape)}", hint=fix)
    from .data import features_sha256

    want = p_meta.get("features_sha256")
    if want and pd_.named and features_sha256(pd_.feature_names) != want:
        raise DataError(f"{where} has other columns than party {t} (feature names differ, e.g. "
                        f"{pd_.feature_names[0]!r})", hint=fix)


def party_model(run: dict, t: int):
    """Party t's bottom (+ hash head) with its shared weights, or None if it did not share them."""
    from .models import build_party_model

    state = _stamped(run, run["dir"] / "state" / f"p{t}.pt", f"party {t} model")
    if state is None:
        return None
    p = run["meta"]["parties"][t]
    cfg = run["cfg"]
    model = build_party_model(p["d"], cfg.model, cfg.defence, p["image_shape"], 0)
    _load_state(model, state, run["dir"] / "state" / f"p{t}.pt")
    return model.eval()


def _load_state(model, state, path) -> None:
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise DataError(f"model file {str(path)!r} does not fit this run's model ({str(exc).splitlines()[0][:160]})",
                        hint=retrain_hint(Path(path).parent.parent)) from None


def top_model(run: dict):
    from .models import TopMLP

    cfg, meta = run["cfg"], run["meta"]
    path = run["dir"] / "state" / "top.pt"
    state = _stamped(run, path, "top model")
    if state is None:
        raise DataError(f"{str(run['dir'])!r} has no top model (state/top.pt)", hint=retrain_hint(run["dir"]))
    top = TopMLP(len(meta["parties"]) * meta["width"], cfg.model.top_hidden, len(meta["classes"]))
    _load_state(top, state, path)
    return top.eval()


@dataclass
class EvalResult:
    """What ``evaluate`` returns: each attack's figures beside its baselines, detection and DCS, plus the whole
    record written to results.json."""

    attacks: dict[str, Any]
    baselines: dict[str, Any]
    detection: dict[str, Any] | None
    dcs: dict[str, Any] | None
    results: dict[str, Any]


def evaluate(run, attacks=ATTACKS, attack_cfg: AttackConfig | None = None,
             aux_data: str | None = None, ref_acc: float | None = None, plots: bool = True,
             resume: bool = True) -> EvalResult:
    """Run the chosen attacks on a ``TrainResult`` (in memory) or a trained run folder (offline re-run); write
    results.json (status ok) and plots into the run folder; return an ``EvalResult``. Each finished attack is a
    record of the run's ``attacks.jsonl`` (``attack_records``): run again, an interrupted evaluation reads the
    attacks it finished back; ``resume=False`` runs them all again."""
    configure_threads()
    from .attacks.inverse_net import inverse_attack
    from .attacks.label_leak import label_leak
    from .attacks.whitebox import whitebox_invert
    from .codes import decode
    from .metrics import baselines, class_means, recon_metrics
    from .train import write

    bad = [a for a in attacks if a not in ATTACKS]
    if bad:
        raise ConfigError(f"unknown attack(s) {', '.join(bad)}", hint=f"choose from {', '.join(ATTACKS)}")
    from .train import TrainResult

    run = dict(run.run) if isinstance(run, TrainResult) else load_run(run)
    cfg = run["cfg"]
    ac = attack_cfg or cfg.attack
    n_parties = len(run["meta"]["parties"])
    t = ac.target_party
    if not 0 <= t < n_parties:
        raise ConfigError(f"attack.target_party={t} but the run has {n_parties} parties",
                          hint=f"choose --target-party between 0 and {n_parties - 1}")
    kind = cfg.defence.kind
    p_meta = run["meta"]["parties"][t]
    shape = tuple(p_meta["image_shape"]) if p_meta["image_shape"] else None
    onehot = tuple(tuple(g) for g in p_meta["onehot"])
    sp, y = run["splits"], run["splits"]["y"]
    X = target_features(run, t, aux_data)
    aux, test, train = sp["aux"], sp["test"], sp["train"]
    aux = aux[np.isfinite(X[aux]).all(1)]
    rng = np.random.default_rng(cfg.train.seed + 7)
    n_t = min(ac.n_targets, len(test))  # clamped
    pick = np.sort(rng.permutation(len(test))[:n_t])
    tgt = test[pick]
    if not np.isfinite(X[tgt]).all():
        tgt_ok = np.isfinite(X[tgt]).all(1)
        pick, tgt = pick[tgt_ok], tgt[tgt_ok]
    x_t, y_t, x_aux, y_aux = X[tgt], y[tgt], X[aux], y[aux]
    m_aux = run["msgs"]["aux"][t][np.searchsorted(sp["aux"], aux)]
    m_t = run["msgs"]["test"][t][pick]
    clf = None
    if shape is not None:
        from sklearn.linear_model import LogisticRegression

        ok = train[np.isfinite(X[train]).all(1)]
        clf = LogisticRegression(max_iter=1000).fit(X[ok], y[ok]) if len(ok) else None
    res = dict(run["results"])
    res.pop("error", None)
    res["baselines"] = baselines(x_t, y_t, x_aux, y_aux, shape, onehot, clf, cfg.train.seed)
    att: dict = {}
    recon = {"original": x_t, "class_mean": class_means(x_aux, y_aux, X.shape[1], len(run["meta"]["classes"]))[y_t]}
    records = AttackRecords(run, ac, t, aux_data, resume=resume)

    def attack(key, compute):
        result, arrays = records.run(key, compute)
        att[key] = result
        recon.update(arrays)

    def inverse():
        xr = inverse_attack(m_aux, x_aux, m_t, shape is not None, ac.inv_epochs, ac.inv_lr, ac.inv_batch,
                            cfg.train.seed)
        return recon_metrics(x_t, xr, shape, onehot, clf, y_t), {"inverse_net": xr}

    def whitebox():
        model = party_model(run, t)
        if model is None:
            return {"skipped": f"party {t} did not share its model (--share-model)"}, {}
        xr = whitebox_invert(model, m_t, kind, x_aux, shape, ac.wb_steps, ac.wb_lr, ac.tv, ac.l2, ac.prior,
                             cfg.defence.clip_norm)
        return recon_metrics(x_t, xr, shape, onehot, clf, y_t), {"whitebox": xr}

    def decoded():
        c_hat = decode(m_t, codes)
        xr = class_means(x_aux, y_aux, X.shape[1], len(codes))[c_hat]
        return ({**recon_metrics(x_t, xr, shape, onehot, clf, y_t), "decode_acc": float(np.mean(c_hat == y_t))},
                {"decoded_class_mean": xr})

    def leak():
        ok_te = test[np.isfinite(X[test]).all(1)]
        m_te = run["msgs"]["test"][t][np.searchsorted(sp["test"], ok_te)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return label_leak(m_aux, x_aux, y_aux, m_te, X[ok_te], y[ok_te], ac.leak_k, cfg.train.seed), {}

    codes = run["codes"]
    for name, key, compute in (("inverse", "inverse_net", inverse), ("whitebox", "whitebox", whitebox),
                               ("decode", "decoded_class_mean", decoded), ("label", "label_leak", leak)):
        if name in attacks and (name != "decode" or codes is not None):
            attack(key, compute)
    res["attacks"] = att
    res["attack_config"] = {"target_party": t, "n_targets": int(len(tgt)), "wb_steps": ac.wb_steps,
                            "tv": ac.tv, "l2": ac.l2, "prior": ac.prior, "inv_epochs": ac.inv_epochs,
                            "leak_k": ac.leak_k}
    if "detect" in attacks and kind in HASHED and codes is not None:
        res["detection"] = records.run("detection", lambda: (detection(run, t, ac.detect_sets, shape, X), {}))[0]
    acc = res.get("train", {}).get("test_acc")
    if ref_acc is not None and acc is not None:
        res["dcs"] = dcs_block(att, res["baselines"], acc, ref_acc)
    np.savez(run["dir"] / "recon.npz", y=y_t, image_shape=np.asarray(shape or ()), **recon)
    rd = RunDir(run["dir"], "vfl", res.get("verb", "train"), cfg, cfg.train.seed,
                started=res.get("started") or RunDir.__dataclass_fields__["started"].default_factory())
    if plots:
        from .plots import run_plots

        run_plots(rd.path, res, recon, shape, run["msgs"]["test"], codes, y[test])
    write(rd, {k: v for k, v in res.items() if k not in ("lab", "verb", "trustlab_version", "started", "finished",
                                                         "seed", "config", "config_hash", "environment", "schema",
                                                         "status")})
    record = json.loads((rd.path / "results.json").read_text())
    return EvalResult(att, res["baselines"], res.get("detection"), res.get("dcs"), record)


def dcs_block(att: dict, base: dict, acc: float, ref_acc: float, beta: float = 0.5) -> dict:
    """DCS per attack (reconstruction AP = clip(1 - MSE/MSE_aux_mean, 0, 1); label AP = leak accuracy),
    T-DCS = mean per attack type, C-DCS = the mean over the two types (equal weights)."""
    from .metrics import dcs, recon_ap

    per = {}
    aux_mse = base["aux_mean"]["mse"]
    for name in ("inverse_net", "whitebox"):
        if name in att and att[name].get("mse") is not None:
            per[name] = dcs(recon_ap(att[name]["mse"], aux_mse), acc, ref_acc, beta)
    if "label_leak" in att:
        per["label_leak"] = dcs(att["label_leak"]["acc"], acc, ref_acc, beta)
    types = {"reconstruction": [per[k] for k in ("inverse_net", "whitebox") if k in per],
             "label": [per[k] for k in ("label_leak",) if k in per]}
    t_dcs = {k: float(np.mean(v)) for k, v in types.items() if v}
    return {"ref_acc": ref_acc, "beta": beta, "per_attack": per, "t_dcs": t_dcs,
            "c_dcs": float(np.mean(list(t_dcs.values()))) if t_dcs else None}


def uniform_inputs(rng, n: int, d: int, images: bool) -> np.ndarray:
    """The ``uniform`` abnormal inputs: U[0,1] pixels for images, N(0,1) for standardised tables."""
    return (rng.random((n, d)) if images else rng.standard_normal((n, d))).astype(np.float32)


def abnormal_message(model, defence, x: np.ndarray, party: int, name: str) -> np.ndarray:
    """What party ``party`` would send for input ``x``: its eval-mode model output through the run's defence,
    exactly as for the clean messages (for hash_laplace: the code plus fresh Laplace noise), so that clean and
    abnormal scores differ only by the input."""
    import torch

    with torch.no_grad():
        return defence.party(model(torch.from_numpy(x)), (party, f"eval:detect-{name}", 0, 0)).numpy()


def detection(run: dict, t: int, sets, shape, X) -> dict:
    """Score s = sum_i d_H(h_i, o_yhat) (XOR + popcount on packed codes); abnormal ``uniform`` (party t's input
    replaced by noise) and ``swap`` (party t's message from another sample); threshold at the 95th percentile of
    clean aux scores (``hashed.hamming_scores`` against the top model's prediction)."""
    import torch

    from .hashed import hamming_scores
    from .metrics import detection_auroc

    codes = run["codes"]
    top = top_model(run)

    def scores(msgs):
        with torch.no_grad():
            yhat = top(torch.from_numpy(np.concatenate(msgs, 1).astype(np.float32))).argmax(1).numpy()
        return hamming_scores(msgs, codes, yhat)

    clean = scores(run["msgs"]["test"])
    ref = scores(run["msgs"]["aux"])
    from .defences import build_defence

    defence = build_defence(run["cfg"].defence, run["cfg"].train.seed)
    out = {}
    rng = np.random.default_rng(run["cfg"].train.seed + 11)
    n = len(clean)
    for s in sets:
        msgs = [m.copy() for m in run["msgs"]["test"]]
        if s == "uniform":
            model = party_model(run, t)
            if model is None:
                out[s] = {"skipped": f"party {t} did not share its model"}
                continue
            d = run["meta"]["parties"][t]["d"]
            x = uniform_inputs(rng, n, d, shape is not None)
            with torch.no_grad():
                msgs[t] = abnormal_message(model, defence, x, t, s)
        else:
            perm = rng.permutation(n)
            msgs[t] = msgs[t][np.roll(perm, 1)][np.argsort(perm)]
        out[s] = detection_auroc(clean, scores(msgs), ref)
    return out
