"""The VFL report section: defence table with baseline rows, DCS, honesty notes and plots."""

from __future__ import annotations

from pathlib import Path

from trustlab.report import Bullets, Heading, Image, Table, Text, fmt

HONESTY = [
    "Recovery from hash codes comes out at about the class mean: the codes leak the label, and little more.",
    "The consistency loss makes each party's code agree with its class code, so a party's own messages reveal "
    "the label: compare the label-leak accuracy of hash with vanilla (the paper's abstract claims less leakage; "
    "the paper may measure a different leakage — unverified).",
    "hash_laplace noise is eps per coordinate per release; epochs compose, so no end-to-end eps is claimed. "
    "gaussian/laplace claim no formal DP. gsparse protects gradients only; forward messages are unchanged.",
    "SSIM on 8x4 strips uses a 3x3 window: only its order across defences is meaningful.",
]


def _m(v, key="mean"):
    return v.get(key) if isinstance(v, dict) else v


def report_section(results: dict, run_dir: Path) -> list:
    blocks: list = [Heading("HashVFL (vertical federated learning)", 2)]
    if results.get("status") not in (None, "ok"):
        err = results.get("error") or {}
        blocks.append(Text(f"Run {results.get('status')}: {err.get('type')}: {err.get('message')}"))
        return blocks
    rows = (results.get("sweep") or {}).get("rows")
    if rows:
        cfg = results.get("config", {}).get("base", {})
        d = cfg.get("data", {})
        blocks.append(Text(f"Dataset {d.get('name')}, {d.get('n_parties')} parties, L={cfg.get('defence', {}).get('code_len')}, "
                           f"{cfg.get('train', {}).get('epochs')} epochs; seeds {results.get('config', {}).get('seeds')}. "
                           "Reconstruction of party 0's test rows; MSE on [0,1] pixels (mean ± std over seeds)."))
        head = ("defence", "test acc", "inverse MSE", "inverse SSIM", "white-box MSE", "decoded-class MSE",
                "label leak", "AUROC noise", "C-DCS")
        body = [(r["label"], *[_pm(r[k]) for k in ("acc", "inverse_mse", "inverse_ssim", "whitebox_mse", "decoded_mse",
                                                    "label_leak", "auroc_uniform", "c_dcs")]) for r in rows]
        r0 = rows[0]
        for b in ("aux_mean", "class_mean", "noise"):
            body.append((f"baseline: {b.replace('_', ' ')}", "—", _pm(r0[f"{b}_mse"]), "—", _pm(r0[f"{b}_mse"]),
                         "—", "—", "—", "—"))
        body.append(("baseline: majority class (label)", "—", "—", "—", "—", "—", _maj(results), "—", "—"))
        blocks.append(Table(head, body, caption="Defences side by side, with the baselines every reconstruction "
                                                "figure must be read against"))
        blocks.append(Text("DCS (VFLAIR) = 1/(1+sqrt((1-β)AP²+β(MP−MP*)²)), β=0.5, MP* = vanilla accuracy of the same "
                           "seed; reconstruction AP = clip(1 − MSE/MSE_aux_mean, 0, 1); label AP = leak accuracy."))
    else:
        blocks += _single(results)
    blocks += [Heading("Honesty notes", 3), Bullets(HONESTY)]
    for name, cap in (("recon_grid", "originals, class mean and reconstructions"), ("tradeoff", "accuracy vs "
                      "reconstruction MSE"), ("hamming_hist", "Hamming distance to o_y"),
                      ("bit_balance", "bit balance"), ("train_curve", "training curve")):
        if (Path(run_dir) / "plots" / f"{name}.png").is_file():
            blocks.append(Image(f"plots/{name}.png", cap))
    return blocks


def _pm(v) -> str:
    if isinstance(v, dict):
        if v.get("mean") is None:
            return "—"
        return fmt(v["mean"]) + (f" ± {v['std']:.2g}" if v.get("std") else "")
    return fmt(v)


def _maj(results) -> str:
    for c in (results.get("sweep") or {}).get("cells", {}).values():
        ll = (c.get("attacks") or {}).get("label_leak")
        if ll:
            return fmt(ll["majority"])
    return "—"


def _single(r: dict) -> list:
    tr = r.get("train", {})
    cfg = r.get("config", {})
    out = [Text(f"{cfg.get('data', {}).get('name')} with defence {cfg.get('defence', {}).get('kind')}: test accuracy "
                f"{fmt(tr.get('test_acc'))}, train accuracy {fmt(tr.get('train_acc'))}, "
                f"{fmt(r.get('message', {}).get('bytes_per_sample'))} bytes per sample on the wire.")]
    rows = []
    for name, a in (r.get("attacks") or {}).items():
        if isinstance(a, dict) and "mse" in a:
            rows.append((name, a.get("mse"), a.get("psnr"), a.get("ssim"), a.get("semantic_acc")))
    for name, a in (r.get("baselines") or {}).items():
        rows.append((f"baseline: {name}", a.get("mse"), a.get("psnr"), a.get("ssim"), a.get("semantic_acc")))
    if rows:
        out.append(Table(("reconstruction", "MSE", "PSNR", "SSIM", "semantic acc"), rows))
    ll = (r.get("attacks") or {}).get("label_leak")
    if ll:
        out.append(Text(f"Label leak (k={ll['k']} per class): {fmt(ll['acc'])} vs majority {fmt(ll['majority'])} and "
                        f"raw features {fmt(ll['raw_features'])}."))
    det = r.get("detection") or {}
    if det:
        out.append(Table(("abnormal set", "AUROC", "TPR", "FPR"),
                         [(k, v.get("auroc"), v.get("tpr"), v.get("fpr")) for k, v in det.items() if "auroc" in v]))
    if r.get("dcs"):
        out.append(Text(f"C-DCS {fmt(r['dcs'].get('c_dcs'))} (MP* = {fmt(r['dcs'].get('ref_acc'))})."))
    return out
