"""``trustlab fingerprint demo``: the whole owner-and-auditor story offline, into one run folder.

generate -> embed -> verify the fingerprinted model (OWNED) -> verify the base (not owned) -> short benign SFT ->
re-verify -> utility before/after -> report section with plots. Profiles:
- ``tiny``: fp-tiny, N = 32 at the tiny preset (about a minute; ``trustlab demo --quick``);
- ``smollm2``: SmolLM2-135M-Instruct, N = 16, ``stop_after_full_match = 3``, SFT ``max_steps`` 20, a trivia-MC
  subset of 100 (spec §5: under 15 minutes on 2 CPU cores with the model cache built).
The owner's secret is written beside the run folder (``<out>.secret``), never inside it.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from trustlab.runtime.validate import check_types, require_range


@dataclass(frozen=True)
class DemoConfig:
    """What a demo profile runs."""

    profile: Literal["tiny", "smollm2"] = "tiny"
    model: str = "fp-tiny"
    num_fingerprints: int = 32
    stop_after_full_match: int = 0
    sft_max_steps: int = 20
    sft_lr: float = 1e-5
    mc_subset: int = 100
    ppl_docs: int = 100
    seed: int = 0

    def __post_init__(self):
        check_types(self)
        require_range("num_fingerprints", self.num_fingerprints, 1)
        require_range("sft_max_steps", self.sft_max_steps, 1)


PROFILES = {
    "tiny": DemoConfig(profile="tiny", model="fp-tiny", num_fingerprints=32, sft_lr=1e-4, ppl_docs=100),
    "smollm2": DemoConfig(profile="smollm2", model="smollm2-135m-instruct", num_fingerprints=16,
                          stop_after_full_match=3, sft_max_steps=20, sft_lr=1e-5, mc_subset=100, ppl_docs=50),
}


def run_demo(out: str | Path, profile: str = "tiny", cfg: DemoConfig | None = None, resume: bool = True) -> Path:
    """Run the demo into ``out`` and return it (``results.json``, ``report.md``/``.html``, ``plots/``).

    ``resume`` (default) keeps the finished steps of an earlier demo in ``out``; ``resume=False`` first removes what
    that demo wrote (the run folder's manifest: its nested generate/embed/robustness runs included) and nothing
    else. The secret beside the folder is kept either way, so a fresh run draws the same fingerprints."""
    from trustlab.report import render
    from trustlab.runtime.rundir import RunDir

    from . import CAVEAT
    from .config import EmbedConfig, GenerateConfig, RobustnessConfig
    from .fpset import FingerprintSet
    from .plots import training_curve
    from .robustness import run_robustness
    from .runs import run_embed, run_generate
    from .tiny import resolve_model_ref

    from trustlab.models import load_causal_lm

    out = Path(out)
    cfg = cfg or PROFILES[profile]
    run = RunDir.open(out, "fingerprint", "demo", config=cfg, seed=cfg.seed, resume=resume)
    secret = out.with_name(out.name + ".secret")
    base, tok = load_causal_lm(resolve_model_ref(cfg.model))
    lines = []

    # 1. owner: generate secret-keyed fingerprints on the base model
    gcfg = GenerateConfig(model=cfg.model, num_fingerprints=cfg.num_fingerprints, seed=cfg.seed)
    fp_path, _ = run_generate(gcfg, secret, out / "fingerprints.json", run_dir=out / "generate", lm=(base, tok))
    fps = FingerprintSet.load(fp_path)
    lines.append(f"generated {len(fps)} {fps.strategy} fingerprints; commitment {fps.secret_commitment[:16]}..., "
                 f"set digest {fps.set_digest[:16]}...")

    # 2. owner: embed them (a fresh copy of the base: the base itself stays untouched for the audit)
    ecfg = EmbedConfig(model=cfg.model, fingerprints=str(fp_path), stop_after_full_match=cfg.stop_after_full_match,
                       save_every=0, seed=cfg.seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, _ = load_causal_lm(resolve_model_ref(cfg.model))
        embed_dir, result = run_embed(ecfg, out / "embed", resume=True, lm=(model, tok), fps=fps)  # skip if done
    if result is None:  # finished earlier: reload what it wrote
        import json

        summary = json.loads((embed_dir / "embed_result.json").read_text())
        from trustlab.runtime.io import read_jsonl

        history = read_jsonl(embed_dir / "train_log.jsonl")
    else:
        summary, history = result.summary(), result.history
    lines.append(f"embedded: {summary['accuracy']:.0%} exact match after {summary['epochs']} epochs "
                 f"(lr {summary['settings']['lr']:g}, lambda {summary['settings']['lambda_wa']:g}, "
                 f"beta {summary['settings']['beta_dm']:g})")
    lines += [f"warning: {w.message}" for w in caught if issubclass(w.category, UserWarning)]
    plots = [training_curve(history, out / "plots" / "training_curve.png")]

    # 3-7. auditor: verify F and B, then benign SFT, re-verify, utility before/after, false positives
    fmodel, _ = load_causal_lm(str(embed_dir / "model"))
    rcfg = RobustnessConfig(fingerprinted=str(embed_dir / "model"), base=cfg.model, fingerprints=str(fp_path),
                            experiments=("sft", "utility", "fpr"), sft_lr=cfg.sft_lr, sft_epochs=1,
                            sft_max_steps=cfg.sft_max_steps, mc_subset=cfg.mc_subset, ppl_docs=cfg.ppl_docs,
                            seed=cfg.seed)
    rob = run_robustness(rcfg, out_dir=out / "robustness", resume=True, models=(fmodel, tok, base), fps=fps)
    r = rob.results
    lines += rob.summary_lines()
    from .plots import robustness_plots

    plots += robustness_plots(r, out / "plots")
    verify_rows = [r["clean"]] + [v for v in (r.get("fpr") or {}).values() if isinstance(v, dict) and "line" in v]
    metrics = {"lines": lines, "accuracy": summary["accuracy"], "epochs": summary["epochs"],
               "owned": r["clean"]["decision"], "base": (r.get("fpr") or {}).get("base", {}).get("decision"),
               "ppl_ratio": (r.get("utility") or {}).get("ppl_ratio"),
               "mc_ratio": (r.get("utility") or {}).get("mc_ratio"),
               "sft_exact": [e["exact"] for e in (r.get("sft") or {}).get("epochs", [])]}
    run.write_results(metrics, artifacts=[*plots, fp_path, embed_dir / "model"], embed=summary,
                      verify=[{"target": row.get("label"), "match": "exact", "alpha": rcfg.alpha,
                               **{k: v for k, v in row.items() if k != "hits"}} for row in verify_rows], robustness=r,
                      caveat=CAVEAT, profile=dataclasses.asdict(cfg))
    from .report import report_section

    render(out, sections={"fingerprint": report_section})
    run.close()  # the report files join the manifest (a rerun or --no-resume must know them as the demo's)
    return out
