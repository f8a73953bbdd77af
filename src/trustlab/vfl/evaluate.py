"""``evaluate(run_dir)``: the attacks, their baselines, bit balance, detection and DCS on a trained run's saved
messages (re-runnable offline), merged into results.json."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from trustlab.runtime import ConfigError, DataError, RunDir, configure_threads, from_dict, load_yaml

from .config import HASHED, AttackConfig, VFLConfig

ATTACKS = ("whitebox", "inverse", "label", "decode", "detect")


def load_run(run_dir: str | Path) -> dict:
    """Everything a trained run folder holds for the attacks."""
    run_dir = Path(run_dir)
    if not (run_dir / "splits.npz").is_file() or not (run_dir / "meta.json").is_file():
        raise DataError(f"{str(run_dir)!r} holds no trained VFL run (splits.npz/meta.json missing)",
                        hint="train first: trustlab vfl train --config F --run-dir D")
    cfg = from_dict(VFLConfig, load_yaml(run_dir / "config.yaml"), where="config.yaml")
    meta = json.loads((run_dir / "meta.json").read_text())
    with np.load(run_dir / "splits.npz", allow_pickle=False) as z:
        sp = {k: z[k] for k in z.files}
    n = len(meta["parties"])
    msgs = {s: [np.load(run_dir / "messages" / f"{s}_p{i}.npy") for i in range(n)] for s in ("train", "aux", "test")}
    codes = np.load(run_dir / "codes.npy") if (run_dir / "codes.npy").is_file() else None
    results = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").is_file() else {}
    return {"dir": run_dir, "cfg": cfg, "meta": meta, "splits": sp, "msgs": msgs, "codes": codes, "results": results}


def target_features(run: dict, t: int, aux_data: str | None) -> np.ndarray:
    """Party t's raw rows in A's aligned order: from ``--aux-data`` (by id) or by re-loading the dataset."""
    ids = run["splits"]["ids"].astype(str)
    if aux_data:
        from .data import load_party_file

        pd_ = load_party_file(aux_data)
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


def party_model(run: dict, t: int):
    """Party t's bottom (+ hash head) with its shared weights, or None if it did not share them."""
    import torch

    from .models import build_party_model

    path = run["dir"] / "state" / f"p{t}.pt"
    if not path.is_file():
        return None
    p = run["meta"]["parties"][t]
    cfg = run["cfg"]
    model = build_party_model(p["d"], cfg.model, cfg.defence, p["image_shape"], 0)
    model.load_state_dict(torch.load(path, weights_only=True))
    return model.eval()


def top_model(run: dict):
    import torch

    from .models import TopMLP

    cfg, meta = run["cfg"], run["meta"]
    top = TopMLP(len(meta["parties"]) * meta["width"], cfg.model.top_hidden, len(meta["classes"]))
    top.load_state_dict(torch.load(run["dir"] / "state" / "top.pt", weights_only=True))
    return top.eval()


def evaluate(run_dir: str | Path, attacks=ATTACKS, attack_cfg: AttackConfig | None = None,
             aux_data: str | None = None, ref_acc: float | None = None, plots: bool = True) -> dict:
    """Run the chosen attacks; write results.json (status ok) and plots; return the results dict."""
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
    run = load_run(run_dir)
    cfg = run["cfg"]
    ac = attack_cfg or cfg.attack
    n_parties = len(run["meta"]["parties"])
    t = ac.target_party
    if not 0 <= t < n_parties:
        raise ConfigError(f"attack.target_party={t} but the run has {n_parties} parties")
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
    if "inverse" in attacks:
        xr = inverse_attack(m_aux, x_aux, m_t, shape is not None, ac.inv_epochs, ac.inv_lr, ac.inv_batch,
                            cfg.train.seed)
        att["inverse_net"] = recon_metrics(x_t, xr, shape, onehot, clf, y_t)
        recon["inverse_net"] = xr
    if "whitebox" in attacks:
        model = party_model(run, t)
        if model is None:
            att["whitebox"] = {"skipped": f"party {t} did not share its model (--share-model)"}
        else:
            xr = whitebox_invert(model, m_t, kind, x_aux, shape, ac.wb_steps, ac.wb_lr, ac.tv, ac.l2, ac.prior,
                                 cfg.defence.clip_norm)
            att["whitebox"] = recon_metrics(x_t, xr, shape, onehot, clf, y_t)
            recon["whitebox"] = xr
    codes = run["codes"]
    if "decode" in attacks and codes is not None:
        c_hat = decode(m_t, codes)
        xr = class_means(x_aux, y_aux, X.shape[1], len(codes))[c_hat]
        att["decoded_class_mean"] = {**recon_metrics(x_t, xr, shape, onehot, clf, y_t),
                                     "decode_acc": float(np.mean(c_hat == y_t))}
        recon["decoded_class_mean"] = xr
    if "label" in attacks:
        ok_te = test[np.isfinite(X[test]).all(1)]
        m_te = run["msgs"]["test"][t][np.searchsorted(sp["test"], ok_te)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            att["label_leak"] = label_leak(m_aux, x_aux, y_aux, m_te, X[ok_te], y[ok_te], ac.leak_k, cfg.train.seed)
    res["attacks"] = att
    res["attack_config"] = {"target_party": t, "n_targets": int(len(tgt)), "wb_steps": ac.wb_steps,
                            "tv": ac.tv, "l2": ac.l2, "prior": ac.prior, "inv_epochs": ac.inv_epochs,
                            "leak_k": ac.leak_k}
    if "detect" in attacks and kind in HASHED and codes is not None:
        res["detection"] = detection(run, t, ac.detect_sets, shape, X)
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
    return json.loads((rd.path / "results.json").read_text())


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


def detection(run: dict, t: int, sets, shape, X) -> dict:
    """Score s = sum_i d_H(h_i, o_yhat) (XOR + popcount on packed codes); abnormal ``uniform`` (party t's input
    replaced by noise) and ``swap`` (party t's message from another sample); threshold at the 95th percentile of
    clean aux scores."""
    import torch

    from .codes import hamming_packed, pack_bits
    from .metrics import detection_auroc

    codes = run["codes"]
    top = top_model(run)
    packed_codes = pack_bits(codes)

    def scores(msgs):
        with torch.no_grad():
            yhat = top(torch.from_numpy(np.concatenate(msgs, 1).astype(np.float32))).argmax(1).numpy()
        return sum(hamming_packed(pack_bits(m), packed_codes[yhat]) for m in msgs).astype(float)

    clean = scores(run["msgs"]["test"])
    ref = scores(run["msgs"]["aux"])
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
            noise = rng.random((n, d)) if shape is not None else rng.standard_normal((n, d))
            with torch.no_grad():
                msgs[t] = model(torch.from_numpy(noise.astype(np.float32))).numpy()
        else:
            perm = rng.permutation(n)
            msgs[t] = msgs[t][np.roll(perm, 1)][np.argsort(perm)]
        out[s] = detection_auroc(clean, scores(msgs), ref)
    return out
