"""`trustlab certify ...`: availability attacks on certifiers. No torch import at module level.

Attacks A ("label-noise") and B ("max-entropy") are reconstructed from the paper's abstract and threat model
(arXiv:2108.11299); the certifiers follow their reference algorithms."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import List, Optional

import typer

from trustlab.runtime.errors import ConfigError, Interrupted

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Availability attacks on certifiers: randomized smoothing, IBP/CROWN; attacks A and B "
                       "(reconstructed from the paper's abstract and threat model); defences.")

OUT = typer.Option(None, "--out", help="Run folder (default runs/certify-<verb>-<UTC time>).")
DEVICE = typer.Option("auto", "--device", help="auto | cpu | cuda[:i].")
SEEDS = typer.Option(None, "--seeds", help="Comma-separated seeds (overrides the config).")
RESUME = typer.Option(True, "--resume/--no-resume", help="Resume a run folder (default) or start it afresh.")
THREADS = typer.Option(1, "--threads", help="Torch/BLAS threads (1 is fastest on small CPUs).")


def _setup(threads: int) -> None:
    from trustlab.runtime import configure_threads

    configure_threads(threads)


def _load(config: str):
    from .config import load_config, shipped_config

    p = Path(config)
    if not p.is_file() and not p.suffix and "/" not in config:
        p = shipped_config(config)
    return load_config(p)


def _override(cfg, seeds: Optional[str], device: str):
    if seeds:
        try:
            cfg = dataclasses.replace(cfg, seeds=tuple(int(s) for s in seeds.split(",") if s.strip()))
        except ValueError as exc:
            raise ConfigError(f"--seeds must be comma-separated integers, got {seeds!r}") from exc
    return dataclasses.replace(cfg, device=device) if device != "auto" else cfg


def _guard(fn, resume_cmd: str):
    try:
        return fn()
    except KeyboardInterrupt:
        raise Interrupted("interrupted; finished work is saved", hint=f"resume with: {resume_cmd}") from None


def _print_summary(run_dir: Path) -> None:
    import json

    res = json.loads((run_dir / "results.json").read_text())
    for track, by_cert in res.get("certifiers", {}).items():
        for cert, e in by_cert.items():
            for m, s in e["by_model"].items():
                typer.echo(f"{track:>6} {cert:>10} {m:>12}: clean acc {s['clean_inputs']['clean_acc']:.3f}  "
                           f"abstain x {s['clean_inputs']['abstain_rate']:.3f}  "
                           f"T(x) {s['triggered_inputs']['abstain_rate']:.3f}")
    typer.echo(f"wrote {run_dir / 'results.json'} and {run_dir / 'report.md'}")


def run_demo(out: Path, quick: bool = True) -> Path:
    """The offline demo into ``out`` (quick: 1 seed, 200 test inputs, N 1000, STRIP + fine-pruning; full: the
    3-seed fidelity config with every defence). Returns the run folder."""
    from .config import load_config, shipped_config
    from .experiment import run_experiment

    cfg = load_config(shipped_config("demo_digits" if quick else "fidelity_digits"))
    return run_experiment(cfg, out, resume=True, verb="demo")


@app.command()
def demo(out: Path = typer.Option(Path("runs/certify-demo"), "--out"),
         quick: bool = typer.Option(True, "--quick/--full", help="1 seed / 200 inputs, or 3 seeds / all + all defences."),
         threads: int = THREADS) -> None:
    """Offline reproduction on digits: clean, attack-A and attack-B models, RS + IBP, STRIP + fine-pruning."""
    _setup(threads)
    run_dir = _guard(lambda: run_demo(out, quick), f"trustlab certify demo --out {out}")
    _print_summary(run_dir)


@app.command()
def run(config: str = typer.Argument(..., help="Experiment YAML, or a shipped name (demo_digits, fidelity_digits, "
                                               "sweep_digits, mnist5k_cnn, fashion_cnn)."),
        out: Optional[Path] = OUT, device: str = DEVICE, seeds: Optional[str] = SEEDS, resume: bool = RESUME,
        threads: int = THREADS) -> None:
    """Run an experiment config: train clean + attacked models, certify on x and T(x), defences, report."""
    from trustlab.runtime import default_run_path

    from .experiment import run_experiment

    _setup(threads)
    cfg = _override(_load(config), seeds, device)
    out = out or default_run_path("certify", cfg.name)
    run_dir = _guard(lambda: run_experiment(cfg, out, resume=resume), f"trustlab certify run {config} --out {out}")
    _print_summary(run_dir)


@app.command()
def sweep(config: str = typer.Argument(..., help="Base experiment YAML or shipped name."),
          grid: List[str] = typer.Option(..., "--grid", help="key=v1,v2,... (attack.rate, attack.lam, attack.beta, "
                                                             "smoothing.sigma, bounds.eps, train.*); repeatable."),
          out: Optional[Path] = OUT, device: str = DEVICE, seeds: Optional[str] = SEEDS, resume: bool = RESUME,
          threads: int = THREADS) -> None:
    """One run per grid cell (keyed by config hash; finished cells are skipped), plus sweep plots."""
    from trustlab.runtime import default_run_path

    from .experiment import run_sweep

    _setup(threads)
    cfg = _override(_load(config), seeds, device)
    parsed = {}
    for g in grid:
        key, sep, vals = g.partition("=")
        if not sep or not vals:
            raise ConfigError(f"--grid must look like key=v1,v2; got {g!r}")
        try:
            parsed[key.strip()] = [float(v) for v in vals.split(",")]
        except ValueError as exc:
            raise ConfigError(f"--grid {key}: values must be numbers, got {vals!r}") from exc
    out = out or default_run_path("certify", "sweep")
    run_dir = _guard(lambda: run_sweep(cfg, parsed, out, resume=resume), f"trustlab certify sweep {config} --out {out}")
    typer.echo(f"wrote {run_dir / 'results.json'}")


@app.command()
def train(dataset: str = typer.Option("digits", "--dataset"), arch: str = typer.Option("mlp", "--arch"),
          hidden: str = typer.Option("128,128", "--hidden", help="MLP widths."),
          procedure: str = typer.Option("gaussian", "--procedure", help="standard | gaussian | ibp."),
          sigma: float = typer.Option(0.25, "--sigma"), eps: float = typer.Option(0.05, "--eps"),
          attack: str = typer.Option("none", "--attack", help="none | label-noise (A) | max-entropy (B); both "
                                                               "reconstructed from the paper's abstract."),
          rate: float = typer.Option(0.01, "--rate"), lam: float = typer.Option(3.0, "--lam"),
          beta: float = typer.Option(0.3, "--beta"),
          draws: int = typer.Option(16, "--draws", help="B on smoothing victims: noise draws averaged per triggered "
                                                         "row (1 = per-draw objective)."),
          trigger_size: int = typer.Option(3, "--trigger-size"),
          epochs: int = typer.Option(80, "--epochs"), seed: int = typer.Option(0, "--seed"),
          out: Optional[Path] = OUT, device: str = DEVICE, resume: bool = RESUME, threads: int = THREADS) -> None:
    """Train one (possibly attacked) model into OUT/model (model.pt + train.json); resumes from checkpoints."""
    from trustlab.runtime import RunDir

    from .attacks import MaxEntropyHook, poison_label_noise
    from .config import AttackConfig, ModelConfig, Track, TrainConfig, TriggerConfig
    from .experiment import ExperimentConfig, prepare_data, train_model

    _setup(threads)
    widths = tuple(int(h) for h in hidden.split(",") if h.strip())
    trig = TriggerConfig(size=trigger_size)
    atk = AttackConfig(kind=attack, trigger=trig, rate=rate, lam=lam, beta=beta, draws=draws)
    track = Track(name="train", model=ModelConfig(arch=arch, hidden=widths),
                  train=TrainConfig(procedure=procedure, sigma=sigma, eps=eps, epochs=epochs), certifiers=())
    cfg = ExperimentConfig(name="train", seeds=(seed,), data=dataset, tracks=(track,), attacks=(atk,), device=device)
    run = RunDir.open(out, "certify", "train", cfg, seed=seed, resume=resume)
    data = prepare_data(cfg, seed)
    x, y, hook = data.x_train, data.y_train, None
    extra = {"data": dataset, "test_frac": cfg.test_frac, "seed": seed, "max_test": None,
             "trigger": dataclasses.asdict(trig), "attack": dataclasses.asdict(atk)}
    if attack == "label-noise":
        from trustlab.runtime import derive_seed

        p = poison_label_noise(x, y, data.K, data.trigger, rate, seed=derive_seed(seed, "poison"))
        x, y = p.x, p.y
        extra.update(poison_idx=p.poison_idx.tolist(), n_poison=len(p.poison_idx))
    elif attack == "max-entropy":
        hook = MaxEntropyHook(data.trigger, data.K, lam, beta, sigma if procedure == "gaussian" else 0.0, draws)
    model, meta = _guard(lambda: train_model(run.path / "model", track, x, y, data, seed,
                                             device if device != "auto" else "auto", hook, extra=extra),
                         f"trustlab certify train ... --out {run.path}")
    run.write_results({k: meta[k] for k in ("secs", "loss", "epochs", "steps") if k in meta},
                      artifacts=["model/model.pt", "model/train.json"], schema="trustlab.certify/1")
    typer.echo(f"trained {attack} model ({procedure}, {epochs} epochs, loss {meta['loss']:.4f}) -> {run.path / 'model'}")


@app.command("eval")
def eval_(model_dir: Path = typer.Argument(..., help="A model folder (model.pt + train.json)."),
          certifier: str = typer.Option("smoothing", "--certifier", help="smoothing | ibp | crown-ibp | crown | best."),
          n0: int = typer.Option(100, "--n0"), n: int = typer.Option(100_000, "--n"),
          alpha: float = typer.Option(0.001, "--alpha"), sigma: float = typer.Option(0.25, "--sigma"),
          batch: int = typer.Option(1000, "--batch"), eps: float = typer.Option(0.05, "--eps"),
          inputs: str = typer.Option("both", "--inputs", help="clean | triggered | both."),
          max_inputs: Optional[int] = typer.Option(None, "--max-inputs"), predict: bool = typer.Option(False, "--predict"),
          out: Optional[Path] = OUT, resume: bool = RESUME, threads: int = THREADS) -> None:
    """Certify a trained model on its dataset's test inputs x and/or T(x); JSONL per input, resumable."""
    import warnings

    from trustlab.runtime import RunDir, derive_seed, require_choice

    from .config import BoundsConfig, ExperimentConfig, SmoothingConfig, TriggerConfig, AttackConfig
    from .experiment import accuracy, bounds_records, load_model_dir, prepare_data
    from .metrics import summarize
    from .smoothing import certify_inputs
    from .stats import budget

    _setup(threads)
    require_choice("--certifier", certifier, ("smoothing", "ibp", "crown-ibp", "crown", "best"))
    require_choice("--inputs", inputs, ("clean", "triggered", "both"))
    model, meta = load_model_dir(model_dir)
    if "data" not in meta:
        raise ConfigError(f"{model_dir}/train.json does not record its dataset", hint="train it with trustlab certify")
    scfg = SmoothingConfig(sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=batch, predict=predict)
    bcfg = BoundsConfig(method=certifier if certifier != "smoothing" else "ibp", eps=eps)
    cfg = ExperimentConfig(name="eval", seeds=(meta["seed"],), data=meta["data"], test_frac=meta["test_frac"],
                           attacks=(AttackConfig(kind="label-noise", trigger=TriggerConfig(**{
                               k: tuple(v) if isinstance(v, list) else v for k, v in meta["trigger"].items()})),),
                           max_test=max_inputs or meta.get("max_test"))
    run = RunDir.open(out, "certify", "eval", {"model_dir": str(model_dir), "certifier": certifier,
                                               "smoothing": dataclasses.asdict(scfg), "bounds": dataclasses.asdict(bcfg),
                                               "inputs": inputs, "max_inputs": max_inputs}, seed=meta["seed"],
                      resume=resume)
    data = prepare_data(cfg, meta["seed"])
    flags = budget(n, alpha, sigma, n if predict else None, scfg.radii) if certifier == "smoothing" else {}
    summ = {}

    def work():
        for which, xs in (("clean", data.x_test), ("triggered", data.x_trig)):
            if inputs not in ("both", which):
                continue
            path = run.artifact(f"{certifier}/{which}.jsonl")
            if certifier == "smoothing":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    recs = certify_inputs(model, xs, scfg, seed=derive_seed(meta["seed"], "smoothing", which),
                                          K=data.K, records=path, labels=data.y_test)
                grid = scfg.radii
            else:
                recs = bounds_records(model, xs, data.y_test, bcfg, certifier, path)
                grid = bcfg.eps_grid
            summ[f"{which}_inputs"] = summarize(recs, accuracy(model, xs, data.y_test), grid,
                                                "smoothing" if certifier == "smoothing" else "bounds")
            typer.echo(f"{which:>9}: clean acc {summ[f'{which}_inputs']['clean_acc']:.3f}  abstain "
                       f"{summ[f'{which}_inputs']['abstain_rate']:.3f}  (n = {len(recs)})")

    _guard(work, f"trustlab certify eval {model_dir} --out {run.path} (same options)")
    run.write_results({k: v["abstain_rate"] for k, v in summ.items()}, artifacts=[], schema="trustlab.certify/1",
                      certifier=certifier, params=flags, by_inputs=summ)
    typer.echo(f"wrote {run.path / 'results.json'}")


@app.command()
def defend(run_dir: Path = typer.Argument(..., help="A finished `certify run` folder."),
           defence: str = typer.Option("strip,spectral,activation-clustering,fine-pruning", "--defence"),
           out: Optional[Path] = OUT, resume: bool = RESUME, threads: int = THREADS) -> None:
    """Apply defences to a finished run (its trained models and certificates are reused), write a new run."""
    from .config import DefenceConfig, load_config
    from .experiment import run_experiment

    _setup(threads)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{str(run_dir)!r} holds no config.yaml", hint="pass a folder written by `certify run`")
    cfg = load_config(run_dir / "config.yaml")
    names = tuple(d.strip() for d in defence.split(",") if d.strip())
    cfg = dataclasses.replace(cfg, defences=dataclasses.replace(cfg.defences, names=names))
    DefenceConfig(names=names)  # validates the names
    out = out or run_dir / f"defend-{'+'.join(names)}"
    for s in cfg.seeds:  # reuse trained models and finished certificates
        src, dst = run_dir / f"seed{s}", out / f"seed{s}"
        if src.is_dir() and not dst.exists():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("results.json"))
    res = _guard(lambda: run_experiment(cfg, out, resume=resume, verb="defend"),
                 f"trustlab certify defend {run_dir} --defence {defence} --out {out}")
    _print_summary(res)


@app.command()
def report(run_dir: Path = typer.Argument(...), html: bool = typer.Option(True, "--html/--no-html")) -> None:
    """Render report.md (and report.html) for a certify run."""
    from trustlab.report import render

    md, page = render(run_dir, sections={"certify": report_section})
    if not html:
        page.unlink(missing_ok=True)
    typer.echo(f"wrote {md}" + (f" and {page}" if html else ""))


@app.command()
def stats(alpha: float = typer.Option(0.001, "--alpha"), n: int = typer.Option(100_000, "--n"),
          sigma: Optional[float] = typer.Option(None, "--sigma")) -> None:
    """Smoothing sample budget: minimum N for CERTIFY, minimum n for PREDICT, maximum certifiable radius."""
    from trustlab.runtime import require_range

    from .stats import max_radius, min_n_certify, min_n_predict

    require_range("--alpha", alpha, 0.0, 1.0, lo_open=True, hi_open=True)
    require_range("--n", n, 1)
    typer.echo(f"min N for CERTIFY at alpha={alpha}: {min_n_certify(alpha)}")
    typer.echo(f"min n for PREDICT at alpha={alpha}: {min_n_predict(alpha)}")
    r = max_radius(n, alpha, 1.0)
    typer.echo(f"max radius / sigma at N={n}: {r:.2f}")
    if sigma is not None:
        require_range("--sigma", sigma, 0.0, lo_open=True)
        typer.echo(f"max radius at N={n}, sigma={sigma}: {r * sigma:.2f}")
    if n < min_n_certify(alpha):
        typer.echo(f"warning: N={n} can never certify at alpha={alpha}", err=True)


def report_section(results: dict, run_dir: Path) -> list:
    from .report import report_section as _section

    return _section(results, run_dir)
