"""The VFL report section: defence table with baseline rows, DCS, honesty notes and plots."""

from __future__ import annotations

from pathlib import Path

from trustlab.report import Bullets, Heading, Image, Summary, Table, Text, fmt

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
        blocks.append(Summary(f"This run did not finish ({results.get('status')}): {err.get('type')}: "
                              f"{err.get('message')}. There are no results to read."))
        return blocks
    rows = (results.get("sweep") or {}).get("rows")
    if rows:
        cfg = results.get("config", {}).get("base", {})
        d = cfg.get("data", {})
        blocks.append(Summary(sweep_summary(rows, results.get("config", {}).get("seeds"))))
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
                                                "figure must be read against", notes=COLUMNS))
        blocks.append(Text("DCS (VFLAIR) = 1/(1+sqrt((1-β)AP²+β(MP−MP*)²)), β=0.5, MP* = vanilla accuracy of the same "
                           "seed; reconstruction AP = clip(1 − MSE/MSE_aux_mean, 0, 1); label AP = leak accuracy."))
    else:
        blocks += _single(results)
    blocks += [Heading("Honesty notes", 3), Bullets(HONESTY)]
    for name, cap in CAPTIONS.items():
        if (Path(run_dir) / "plots" / f"{name}.png").is_file():
            blocks.append(Image(f"plots/{name}.png", cap))
    return blocks


COLUMNS = ("test acc: accuracy of the joint model. inverse / white-box / decoded-class MSE: mean squared pixel error "
           "of party 0's features reconstructed by an inverse network trained on auxiliary data, by white-box "
           "optimisation, and by decoding the class from the code and drawing its mean image; lower = more leakage; "
           "read them against the baselines below (a reconstruction no better than the class mean reveals the class, "
           "not the image). inverse SSIM: structural similarity of the inverse-network reconstruction (1 = identical). "
           "label leak: accuracy of a k-NN guessing the label from party 0's messages (majority class: the floor). "
           "AUROC noise: how well the Hamming distance to the class code separates genuine messages from random "
           "ones (hashed defences only). C-DCS: the defence capability score below.",)
CAPTIONS = {
    "recon_grid": "Reconstruction of party 0's feature strips (columns: the first test rows). Rows: the original "
                  "strip, the class-mean baseline, then each defence's reconstruction by the inverse network. Look at "
                  "whether a defence's row still shows the original's strokes or only the class mean's blur.",
    "tradeoff": "Test accuracy against inverse-network reconstruction MSE, one point per defence (further right = "
                "more private); the dashed and dotted lines are the aux-mean and class-mean baselines. The y axis "
                "spans at least 5 points so a small accuracy gap is not drawn as a cliff.",
    "hamming_hist": "Hamming distance between each party's binarised message and the code of the true class: mass at "
                    "0 means the messages are the class code, which is what makes HashVFL robust and what leaks the "
                    "label.",
    "bit_balance": "Mean of each code bit over the test set per party: bars near 0 are balanced bits; bars near ±1 "
                   "carry no information.",
    "train_curve": "Training loss (left axis) and batch accuracy (right axis, 0..1) per epoch of the hashed model.",
}


def sweep_summary(rows: list[dict], seeds) -> str:
    """What the sweep shows, in words: each defence's reconstruction error against no defence and the class-mean
    baseline, its accuracy, and its label leak."""
    by = {r["label"]: r for r in rows}
    ref = by.get("none") or rows[0]
    m = lambda r, k: (r.get(k) or {}).get("mean")  # noqa: E731
    cm = m(ref, "class_mean_mse")
    parts = []
    if m(ref, "inverse_mse") is not None:
        rel = "below" if cm is not None and m(ref, "inverse_mse") < cm else "at or above"
        parts.append(f"Without a defence (`{ref['label']}`), an inverse network reconstructs party 0's features with "
                     f"MSE {fmt(m(ref, 'inverse_mse'))}, {rel} the class-mean baseline {fmt(cm)}"
                     + (", so the messages leak the image itself" if rel == "below" else "") + ".")
    for r in rows:
        if r is ref or m(r, "inverse_mse") is None:
            continue
        mse, acc = m(r, "inverse_mse"), m(r, "acc")
        if cm is not None and mse >= 0.9 * cm:
            what = "about the class-mean baseline or worse: the messages reveal the class, not the image"
        else:
            what = "still below the class-mean baseline: the image leaks"
        s = (f"With `{r['label']}` the MSE is {fmt(mse)} ({what}); test accuracy {fmt(acc)} against "
             f"{fmt(m(ref, 'acc'))} without a defence")
        if m(r, "label_leak") is not None and m(ref, "label_leak") is not None:
            s += (f"; a k-NN guesses the label from its messages with accuracy {fmt(m(r, 'label_leak'))} "
                  f"(no defence: {fmt(m(ref, 'label_leak'))})")
        parts.append(s + ".")
    n = len(seeds or [])
    parts.append("These are figures of one seed, so differences of a few thousandths are noise." if n == 1 else
                 f"Means over {n} seeds (± std in the table).")
    return " ".join(parts)


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


def _single_attack_words(r: dict) -> str:
    inv = (r.get("attacks") or {}).get("inverse_net") or {}
    cm = (r.get("baselines") or {}).get("class_mean") or {}
    if inv.get("mse") is None or cm.get("mse") is None:
        return "."
    rel = "below" if inv["mse"] < cm["mse"] else "at or above"
    return (f"; the inverse network reconstructs party 0's features with MSE {fmt(inv['mse'])}, {rel} the class-mean "
            f"baseline {fmt(cm['mse'])}" + (" (the image leaks)." if rel == "below" else " (only the class leaks)."))


def _single(r: dict) -> list:
    tr = r.get("train", {})
    cfg = r.get("config", {})
    out = [Summary(f"{cfg.get('data', {}).get('name')} with defence {cfg.get('defence', {}).get('kind')}: test accuracy "
                f"{fmt(tr.get('test_acc'))}, train accuracy {fmt(tr.get('train_acc'))}, "
                f"{fmt(r.get('message', {}).get('bytes_per_sample'))} bytes per sample on the wire"
                + _single_attack_words(r) + " One run, one seed.")]
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
