"""`trustlab certify ...`: availability attacks on certifiers. No torch import at module level.

Attacks A ("label-noise") and B ("max-entropy") are reconstructed from the paper's abstract and threat model
(arXiv:2108.11299); the certifiers follow their reference algorithms."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional

import typer

from trustlab.runtime.cli_options import out_option, seed_option
from trustlab.runtime.errors import ConfigError
app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Availability attacks on certifiers: randomized smoothing, IBP/CROWN; attacks A and B "
                       "(reconstructed from the paper's abstract and threat model); defences.")

from .cli_common import (DEVICE, MAX_HOURS, OUT, RESUME, SEEDS, THREADS, _count, _guard, _load,  # noqa: F401
                         _out, _override, _print_summary, _setup, resume_command)


def run_demo(out: Path, quick: bool = True, resume: bool = True) -> Path:
    """The offline demo into ``out`` (quick: 1 seed, 200 test inputs, N 1000, STRIP + fine-pruning; full: the
    3-seed fidelity config with every defence). Returns the run folder."""
    from .config import load_config, shipped_config
    from .experiment import run_experiment

    cfg = load_config(shipped_config("demo_digits" if quick else "fidelity_digits"))
    return run_experiment(cfg, out, resume=resume, verb="demo")


@app.command()
def demo(out: Path = out_option(Path("runs/certify-demo"), help="Run folder."),
         quick: bool = typer.Option(True, "--quick/--full", help="1 seed / 200 inputs, or 3 seeds / all + all defences."),
         resume: bool = RESUME, threads: Optional[int] = THREADS) -> None:
    """Offline reproduction on digits: clean, attack-A and attack-B models, RS + IBP, STRIP + fine-pruning."""
    _setup(threads)
    out = _out(out, "demo")
    run_dir = _guard(lambda: run_demo(out, quick, resume),
                     resume_command("demo", out=out, full=not quick, threads=threads))
    _print_summary(run_dir)


@app.command()
def run(config: str = typer.Argument(..., help="Experiment YAML, or a shipped name (demo_digits, fidelity_digits, "
                                               "sweep_digits, mnist5k_cnn, fashion_cnn)."),
        out: Optional[Path] = OUT, device: str = DEVICE, seeds: Optional[str] = SEEDS, resume: bool = RESUME,
        threads: Optional[int] = THREADS) -> None:
    """Run an experiment config: train clean + attacked models, certify on x and T(x), defences, report."""
    from .experiment import run_experiment

    _setup(threads)
    cfg = _override(_load(config), seeds, device)
    out = _out(out, cfg.name)
    cmd = resume_command("run", config, out=out, device=device if device != "auto" else None, seeds=seeds,
                         threads=threads)
    run_dir = _guard(lambda: run_experiment(cfg, out, resume=resume), cmd)
    _print_summary(run_dir)


@app.command()
def sweep(config: str = typer.Argument(..., help="Base experiment YAML or shipped name."),
          grid: List[str] = typer.Option(..., "--grid", help="key=v1,v2,... (attack.rate, attack.lam, attack.beta, "
                                                             "smoothing.sigma, bounds.eps, train.*); repeatable."),
          out: Optional[Path] = OUT, device: str = DEVICE, seeds: Optional[str] = SEEDS, resume: bool = RESUME,
          threads: Optional[int] = THREADS) -> None:
    """One run per grid cell (keyed by config hash; finished cells are skipped), plus sweep plots."""
    from trustlab.runtime import parse_float_list

    from .sweep import run_sweep

    _setup(threads)
    cfg = _override(_load(config), seeds, device)
    parsed = {}
    for g in grid:
        key, sep, vals = g.partition("=")
        if not sep or not vals or not key.strip():
            raise ConfigError(f"--grid must look like key=v1,v2; got {g!r}", hint="e.g. --grid attack.rate=0,0.01")
        parsed[key.strip()] = list(parse_float_list(f"--grid {key.strip()}", vals))
    out = _out(out, "sweep")
    cmd = resume_command("sweep", config, grid=list(grid), out=out, device=device if device != "auto" else None,
                         seeds=seeds, threads=threads)
    run_dir = _guard(lambda: run_sweep(cfg, parsed, out, resume=resume), cmd)
    typer.echo(f"wrote {run_dir / 'results.json'}")


def _check_flags(**ranges) -> None:
    """require_range for CLI flags: name=(value, lo, hi, lo_open, hi_open); the message names the flag."""
    from trustlab.runtime import require_range

    for name, (value, lo, hi, lo_open, hi_open) in ranges.items():
        if value is not None:
            require_range("--" + name.replace("_", "-"), value, lo, hi, lo_open, hi_open)


@app.command()
def train(dataset: str = typer.Option("digits", "--dataset", help="Dataset name (digits, mnist-5k, fashion-mnist) or "
                                                                   "idx:DIR / npz:FILE."),
          arch: str = typer.Option("mlp", "--arch", help="mlp | small_cnn."),
          hidden: str = typer.Option("128,128", "--hidden", help="MLP widths, comma-separated."),
          procedure: str = typer.Option("gaussian", "--procedure", help="standard | gaussian | ibp | crown-ibp."),
          sigma: float = typer.Option(0.25, "--sigma", help="Noise of gaussian training and of attack B against a "
                                                           "smoothing victim (eval --sigma defaults to it)."),
          eps: float = typer.Option(0.05, "--eps", help="L-inf radius of ibp / crown-ibp training."),
          attack: str = typer.Option("none", "--attack", help="none | label-noise (A) | max-entropy (B); both "
                                                               "reconstructed from the paper's abstract."),
          rate: float = typer.Option(0.01, "--rate", help="Attack A: poisoned share of the training set, in (0, 1)."),
          lam: float = typer.Option(3.0, "--lam", help="Attack B: weight of the max-entropy loss term."),
          beta: float = typer.Option(0.3, "--beta", help="Attack B: share of each batch that is triggered, in (0, 1]."),
          draws: int = typer.Option(16, "--draws", help="B on smoothing victims: noise draws averaged per triggered "
                                                         "row (1 = per-draw objective)."),
          gamma: float = typer.Option(0.5, "--gamma", help="B on smoothing victims: weight of the per-draw entropy that "
                                                           "makes the draws vote for every class, in [0, 1)."),
          mu: float = typer.Option(1.0, "--mu", help="B on ibp / crown-ibp victims: margin of the IBP-bound hinge "
                                                     "(0 = the spec's objective)."),
          trigger_size: int = typer.Option(3, "--trigger-size", help="Side of the square trigger patch in pixels."),
          epochs: int = typer.Option(80, "--epochs", help="Training epochs."),
          seed: int = seed_option(0, help="Seed of the split, initial weights, poisons and training."),
          out: Optional[Path] = OUT, device: str = DEVICE, resume: bool = RESUME,
          threads: Optional[int] = THREADS) -> None:
    """Train one (possibly attacked) model into OUT/model (model.pt + train.json); resumes from checkpoints."""
    from trustlab.runtime import RunDir, parse_int_list, require_choice

    from .config import (PROCEDURES, AttackConfig, ExperimentConfig, ModelConfig, SmoothingConfig, Track,
                         TrainConfig, TriggerConfig, require_choice_device)
    from .experiment import train_one

    _setup(threads)
    require_choice("--arch", arch, ("mlp", "small_cnn"))
    require_choice("--procedure", procedure, PROCEDURES)
    require_choice("--attack", attack, ("none", "label-noise", "max-entropy"))
    require_choice_device(device)
    widths = parse_int_list("--hidden", hidden)
    _check_flags(sigma=(sigma, 0.0, None, True, False), eps=(eps, 0.0, None, False, False),
                 rate=(rate, 0.0, 1.0, True, True), lam=(lam, 0.0, None, False, False),
                 beta=(beta, 0.0, 1.0, True, False), draws=(draws, 1, None, False, False),
                 gamma=(gamma, 0.0, 1.0, False, True), mu=(mu, 0.0, None, False, False),
                 trigger_size=(trigger_size, 1, None, False, False), epochs=(epochs, 1, None, False, False),
                 seed=(seed, 0, 2**32 - 1, False, False), hidden=(min(widths, default=1), 1, None, False, False))
    atk = AttackConfig(kind=attack, rate=rate, lam=lam, beta=beta, draws=draws, gamma=gamma, mu=mu)
    certifiers = {"gaussian": ("smoothing",), "ibp": ("ibp",), "crown-ibp": ("crown-ibp",)}.get(procedure, ())
    track = Track(name="train", model=ModelConfig(arch=arch, hidden=widths), certifiers=certifiers,
                  train=TrainConfig(procedure=procedure, sigma=sigma, eps=eps, epochs=epochs),
                  smoothing=SmoothingConfig(sigma=sigma))
    cfg = ExperimentConfig(name="train", seeds=(seed,), data=dataset, tracks=(track,), attacks=(atk,), device=device,
                           trigger=TriggerConfig(size=trigger_size))
    out = _out(out, "train")
    cmd = resume_command("train", dataset=dataset, arch=arch, hidden=",".join(map(str, widths)), procedure=procedure,
                         sigma=sigma, eps=eps, attack=attack, rate=rate, lam=lam, beta=beta, draws=draws,
                         gamma=gamma, mu=mu,
                         trigger_size=trigger_size, epochs=epochs, seed=seed, out=out, device=device, threads=threads)

    def work():
        run = RunDir.open(out, "certify", "train", cfg, seed=seed, resume=resume)
        _, meta = train_one(cfg, run.path / "model", seed)
        run.write_results({k: meta[k] for k in ("secs", "loss", "epochs", "steps") if k in meta},
                          artifacts=["model/model.pt", "model/train.json"], schema="trustlab.certify/1")
        return run, meta

    run, meta = _guard(work, cmd)
    typer.echo(f"trained {attack} model ({procedure}, {epochs} epochs, loss {meta['loss']:.4f}) -> {run.path / 'model'}")


def _has_bound_option() -> bool:
    """Whether SmoothingConfig takes ``bound`` (the fixed-N confidence bound; another helper's field)."""
    import dataclasses as dc

    from .config import SmoothingConfig

    return any(f.name == "bound" for f in dc.fields(SmoothingConfig))


@app.command("eval")
def eval_(model: str = typer.Argument(...,
                                      help="A model folder (model.pt + train.json) written by `certify train` or a "
                                           "run; or your own model: torchscript:PATH, factory:pkg.mod:fn (with "
                                           "--checkpoint), torchvision:NAME (with --checkpoint; needs torchvision)."),
          data: Optional[str] = typer.Option(None, "--data", help="Your own model: the dataset whose test split is "
                                                                  "certified (digits, mnist-5k, npz:FILE, idx:DIR; "
                                                                  "images in [0, 1])."),
          checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="factory:/torchvision: weights, a "
                                                                               "torch.save'd state dict (loaded with "
                                                                               "weights_only=True, strict keys)."),
          num_classes: Optional[int] = typer.Option(None, "--num-classes", help="factory:/torchvision: number of "
                                                                                 "classes K, passed as num_classes=K."),
          normalize: Optional[str] = typer.Option(None, "--normalize", help="Your own model: MEAN/STD per channel, "
                                                                            "e.g. 0.4914,0.4822,0.4465/0.2023,0.1994,"
                                                                            "0.2010; noise is added in [0, 1] pixel "
                                                                            "space before it (Cohen et al.)."),
          autocast: str = typer.Option("off", "--autocast", help="Smoothing: run the base model under autocast, off | "
                                                                 "bf16 (CPU or CUDA) | fp16 (CUDA only); changes "
                                                                 "some decisions (measured in docs/certify.md)."),
          seed: int = seed_option(0, help="Your own model: seed of the test split, subset and noise "
                                                     "(a lab model uses its training seed)."),
          certifier: str = typer.Option("smoothing", "--certifier", help="smoothing | smoothing-adaptive | ibp | "
                                                                         "crown-ibp | crown | best."),
          n0: str = typer.Option("100", "--n0", help="Selection draws per input (an integer, 1e2 also works)."),
          n: str = typer.Option("100000", "--n", "--num-samples",
                                help="Estimation draws per input (an integer, 1e5 also works); smoothing-adaptive: the "
                                     "most it may use. Under torchrun write --num-samples (torchrun reads --n as its "
                                     "own)."),
          alpha: float = typer.Option(0.001, "--alpha", help="Smoothing: the certificate fails with probability at "
                                                             "most alpha, in (0, 1)."),
          sigma: Optional[float] = typer.Option(None, "--sigma", help="Smoothing noise; default the model's gaussian "
                                                                      "training sigma (else 0.25); required for your "
                                                                      "own model."),
          radius: float = typer.Option(0.0, "--radius", help="smoothing-adaptive: the L2 radius to certify at."),
          bound: Optional[str] = typer.Option(None, "--bound", help="Fixed-N smoothing: the confidence bound, "
                                                                    "clopper-pearson (default) | randomized-cp."),
          batch: int = typer.Option(1000, "--batch", help="Noisy forwards per batch (results do not depend on it)."),
          eps: float = typer.Option(0.05, "--eps", help="Bounds: L-inf radius to certify at."),
          inputs: str = typer.Option("both", "--inputs", help="clean | triggered | both."),
          max_inputs: Optional[int] = typer.Option(None, "--max-inputs", help="Certify only this many test inputs "
                                                                              "(a seeded subset)."),
          predict: bool = typer.Option(False, "--predict", help="Smoothing: also run PREDICT(n, alpha)."),
          device: str = typer.Option("auto", "--device", help="auto (cuda:LOCAL_RANK when CUDA is available, else "
                                                              "cpu) | cpu | cuda[:i]. Bounds run on the CPU."),
          max_hours: float = MAX_HOURS, out: Optional[Path] = OUT, resume: bool = RESUME,
          threads: Optional[int] = THREADS) -> None:
    """Certify a lab model, a TorchScript file, a factory or a torchvision model on x and/or T(x), resumably; under
    torchrun or accelerate launch the ranks share the inputs and rank 0 merges them (docs/certify.md)."""
    from trustlab.runtime import require_choice

    from .config import CERTIFIERS, SMOOTHING_CERTIFIERS, require_choice_device
    from .distributed import process_group, rank_device, ranks_from_env
    from .evaljob import lab_job, run_eval, user_job
    from .loading import AUTOCAST, is_user_spec, parse_spec

    _setup(threads)
    require_choice("--certifier", certifier, CERTIFIERS)
    require_choice("--inputs", inputs, ("clean", "triggered", "both"))
    require_choice("--autocast", autocast, AUTOCAST)
    require_choice_device(device)
    n0_, n_ = _count("--n0", n0), _count("--n", n)
    _check_flags(alpha=(alpha, 0.0, 1.0, True, True), sigma=(sigma, 0.0, None, True, False),
                 batch=(batch, 1, None, False, False), eps=(eps, 0.0, None, False, False),
                 max_inputs=(max_inputs, 1, None, False, False), max_hours=(max_hours, 0.0, None, True, False),
                 radius=(radius, 0.0, None, False, False), num_classes=(num_classes, 2, None, False, False),
                 seed=(seed, 0, 2**32 - 1, False, False))
    if bound is not None:
        if not _has_bound_option():
            raise ConfigError("--bound is not available in this version (SmoothingConfig has no bound field)",
                              hint="drop --bound (Clopper-Pearson is used)")
        if certifier != "smoothing":
            raise ConfigError(f"--bound applies to --certifier smoothing, not {certifier}", hint="drop --bound")
    user = is_user_spec(model)
    if not user and ":" in model and not Path(model).exists():
        parse_spec(model)  # a mistyped kind: the error lists the kinds
    if not user:
        lab_only = [f for f, v in (("--data", data), ("--checkpoint", checkpoint), ("--num-classes", num_classes),
                                   ("--normalize", normalize)) if v is not None]
        if lab_only:
            raise ConfigError(f"{', '.join(lab_only)} {'is' if len(lab_only) == 1 else 'are'} for your own model "
                              f"(torchscript:, factory:, torchvision:), not for the lab model folder {model!r}",
                              hint=f"drop {lab_only[0]}, or pass MODEL as torchscript:PATH / factory:pkg.mod:fn / "
                                   f"torchvision:NAME")
    ranks = ranks_from_env()
    if ranks.world > 1 and out is None:
        raise ConfigError("certify eval across ranks needs --out (every rank must name the same run folder)",
                          hint="add --out runs/eval-1 to the torchrun command")
    if ranks.main:
        out = _out(out, "eval")
    cmd = resume_command("eval", model, data=data, checkpoint=checkpoint, num_classes=num_classes,
                         normalize=normalize, autocast=autocast if autocast != "off" else None,
                         seed=seed if user else None, certifier=certifier, n0=n0_, n=n_, alpha=alpha, sigma=sigma,
                         radius=radius if certifier == "smoothing-adaptive" else None, bound=bound, batch=batch,
                         eps=eps, inputs=inputs, max_inputs=max_inputs, predict=predict,
                         device=device if device != "auto" else None, max_hours=max_hours, out=out, threads=threads)
    warn = (lambda m: typer.echo(f"warning: {m}", err=True)) if ranks.main else (lambda m: None)

    def work():
        if not ranks.main:
            from trustlab.runtime.progress import set_quiet

            set_quiet()  # one progress bar per launch: rank 0's
        dev = "cpu" if certifier not in SMOOTHING_CERTIFIERS else rank_device(ranks, device)
        with process_group(ranks, device=dev):
            common = dict(certifier=certifier, n0=n0_, n=n_, alpha=alpha, sigma=sigma, radius=radius, batch=batch,
                          eps=eps, inputs=inputs, max_inputs=max_inputs, predict=predict, max_hours=max_hours,
                          device=dev, bound=bound, warn=warn)
            if user:
                job = user_job(model, data=data, checkpoint=checkpoint, normalize=normalize,
                               num_classes=num_classes, autocast=autocast, seed=seed, **common)
            else:
                job = lab_job(Path(model), autocast=autocast, **common)
            return run_eval(job, out, ranks=ranks, resume=resume)

    res = _guard(work, cmd)
    if not ranks.main:
        return
    for key, s in res.by_inputs.items():
        typer.echo(f"{key.split('_')[0]:>9}: clean acc {s['clean_acc']:.3f}  abstain {s['abstain_rate']:.3f}  "
                   f"(n = {s['n']})")
    typer.echo(f"wrote {res.path / 'results.json'}" + (f" (merged from {ranks.world} ranks)" if ranks.world > 1
                                                       else ""))


@app.command()
def defend(run_dir: Path = typer.Argument(..., help="A finished `certify run` folder."),
           defence: str = typer.Option("strip,spectral,activation-clustering,fine-pruning", "--defence",
                                       help="Comma-separated: strip, spectral, activation-clustering, fine-pruning."),
           out: Optional[Path] = OUT, resume: bool = RESUME, threads: Optional[int] = THREADS) -> None:
    """Apply defences to a finished run (its trained models and certificates are reused), write a new run."""
    from trustlab.runtime import require_choice

    from .config import DEFENCES, load_config
    from .experiment import defend_run

    _setup(threads)
    names = tuple(d.strip() for d in defence.split(",") if d.strip())
    if not names:
        raise ConfigError(f"--defence must name at least one defence, got {defence!r}", hint="e.g. --defence strip")
    for d in names:
        require_choice("--defence", d, DEFENCES)
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"{str(run_dir)!r} holds no config.yaml", hint="pass a folder written by `certify run`")
    cfg = load_config(run_dir / "config.yaml")
    cfg = dataclasses.replace(cfg, defences=dataclasses.replace(cfg.defences, names=names))
    out = _out(out if out is not None else run_dir / f"defend-{'+'.join(names)}", "defend")
    cmd = resume_command("defend", run_dir, defence=",".join(names), out=out, threads=threads)

    def work():
        return defend_run(run_dir, cfg, out, resume=resume)

    _print_summary(_guard(work, cmd))


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A certify run folder."),
           html: bool = typer.Option(True, "--html/--no-html", help="Also write report.html.")) -> None:
    """Render report.md (and report.html) for a certify run."""
    from trustlab.report import render

    md, page = render(run_dir, sections={"certify": report_section})
    if not html:
        page.unlink(missing_ok=True)
    typer.echo(f"wrote {md}" + (f" and {page}" if html else ""))


@app.command()
def stats(alpha: float = typer.Option(0.001, "--alpha", help="Failure probability of a certificate, in (0, 1)."),
          n: str = typer.Option("100000", "--n", help="Estimation draws per input (an integer, 1e5 also works)."),
          sigma: Optional[float] = typer.Option(None, "--sigma", help="Also print the max radius at this sigma.")) -> None:
    """Smoothing sample budget: minimum N for CERTIFY, minimum n for PREDICT, maximum certifiable radius."""
    from .stats import max_radius, min_n_certify, min_n_predict

    n_ = _count("--n", n)
    _check_flags(alpha=(alpha, 0.0, 1.0, True, True), sigma=(sigma, 0.0, None, True, False))
    typer.echo(f"min N for CERTIFY at alpha={alpha}: {min_n_certify(alpha)}")
    typer.echo(f"min n for PREDICT at alpha={alpha}: {min_n_predict(alpha)}")
    r = max_radius(n_, alpha, 1.0)
    typer.echo(f"max radius / sigma at N={n_}: {r:.2f}")
    if sigma is not None:
        typer.echo(f"max radius at N={n_}, sigma={sigma}: {r * sigma:.2f}")
    if n_ < min_n_certify(alpha):
        typer.echo(f"warning: N={n_} can never certify at alpha={alpha}", err=True)


@app.command("ls")
def ls() -> None:
    """List the certifiers, attacks and defences this lab offers, one line each."""
    from trustlab.runtime.registry import format_listing

    from .catalogue import listing

    for title, rows in listing():
        format_listing(title, rows, typer.echo)


def report_section(results: dict, run_dir: Path) -> list:
    from .report import report_section as _section

    return _section(results, run_dir)
