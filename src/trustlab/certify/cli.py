"""`trustlab certify ...`: availability attacks on certifiers. No torch import at module level.

Attacks A ("label-noise") and B ("max-entropy") are reconstructed from the paper's abstract and threat model
(arXiv:2108.11299); the certifiers follow their reference algorithms."""

from __future__ import annotations

import dataclasses
import math
import shlex
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
MAX_HOURS = typer.Option(24.0, "--max-hours", help="Refuse a smoothing budget estimated (from measured throughput) "
                                                   "to take longer than this.")


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
    from trustlab.runtime import parse_int_list, require_range

    from .config import require_choice_device

    require_choice_device(device)
    if seeds:
        try:
            parsed = parse_int_list("--seeds", seeds)
        except ConfigError as exc:
            raise ConfigError(exc.message, hint="e.g. --seeds 0,1,2") from None
        for s in parsed:
            require_range("--seeds", s, 0, 2**32 - 1)
        if not parsed:
            raise ConfigError(f"--seeds must list at least one seed, got {seeds!r}", hint="e.g. --seeds 0,1,2")
        cfg = dataclasses.replace(cfg, seeds=parsed)
    return dataclasses.replace(cfg, device=device) if device != "auto" else cfg


def _out(out: Optional[Path], name: str) -> Path:
    """The run folder: ``--out`` or runs/certify-<name>-<UTC time>, checked writable before any work starts."""
    from trustlab.runtime import default_run_path, writable_dir

    return writable_dir(out if out is not None else default_run_path("certify", name))


def _count(flag: str, text: str) -> int:
    """A sample count flag: an integer, also written as 1e5 or 100_000; ConfigError naming the flag otherwise."""
    t = str(text).strip().replace("_", "")
    try:
        v = int(t)
    except ValueError:
        try:
            f = float(t)
        except ValueError:
            f = math.nan
        if not (math.isfinite(f) and f.is_integer()):
            raise ConfigError(f"{flag} must be a whole number of samples, got {text!r}",
                              hint=f"e.g. {flag} 100000 (or 1e5)") from None
        v = int(f)
    if v < 1:
        raise ConfigError(f"{flag} must be >= 1, got {v}", hint=f"e.g. {flag} 100000")
    return v


def resume_command(verb: str, *positional, **flags) -> str:
    """The exact command that resumes this call: ``trustlab certify VERB ARGS --<flag> <value> ...`` (True flags bare,
    False/None left out); it never carries --no-resume."""
    parts = ["trustlab", "certify", verb, *map(str, positional)]
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif value is None or value is False:
            continue
        elif isinstance(value, (list, tuple)):
            for v in value:
                parts += [flag, str(v)]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def _guard(fn, resume_cmd: str):
    """Run ``fn``; Ctrl-C becomes ``Interrupted`` (exit 130) whose hint is the exact command that resumes."""
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


def run_demo(out: Path, quick: bool = True, resume: bool = True) -> Path:
    """The offline demo into ``out`` (quick: 1 seed, 200 test inputs, N 1000, STRIP + fine-pruning; full: the
    3-seed fidelity config with every defence). Returns the run folder."""
    from .config import load_config, shipped_config
    from .experiment import run_experiment

    cfg = load_config(shipped_config("demo_digits" if quick else "fidelity_digits"))
    return run_experiment(cfg, out, resume=resume, verb="demo")


@app.command()
def demo(out: Path = typer.Option(Path("runs/certify-demo"), "--out"),
         quick: bool = typer.Option(True, "--quick/--full", help="1 seed / 200 inputs, or 3 seeds / all + all defences."),
         resume: bool = RESUME, threads: int = THREADS) -> None:
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
        threads: int = THREADS) -> None:
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
          threads: int = THREADS) -> None:
    """One run per grid cell (keyed by config hash; finished cells are skipped), plus sweep plots."""
    from trustlab.runtime import parse_float_list

    from .experiment import run_sweep

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
def train(dataset: str = typer.Option("digits", "--dataset"), arch: str = typer.Option("mlp", "--arch",
                                                                                       help="mlp | small_cnn."),
          hidden: str = typer.Option("128,128", "--hidden", help="MLP widths."),
          procedure: str = typer.Option("gaussian", "--procedure", help="standard | gaussian | ibp."),
          sigma: float = typer.Option(0.25, "--sigma", help="Noise of gaussian training and of attack B against a "
                                                           "smoothing victim (certify it with the same eval --sigma)."),
          eps: float = typer.Option(0.05, "--eps"),
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
    from trustlab.runtime import RunDir, derive_seed, parse_int_list, require_choice

    from .attacks import poison_label_noise
    from .config import (AttackConfig, ModelConfig, SmoothingConfig, Track, TrainConfig, TriggerConfig,
                         require_choice_device)
    from .experiment import ExperimentConfig, attack_sigma, max_entropy_hook, prepare_data, train_model

    _setup(threads)
    require_choice("--arch", arch, ("mlp", "small_cnn"))
    require_choice("--procedure", procedure, ("standard", "gaussian", "ibp"))
    require_choice("--attack", attack, ("none", "label-noise", "max-entropy"))
    require_choice_device(device)
    widths = parse_int_list("--hidden", hidden)
    _check_flags(sigma=(sigma, 0.0, None, True, False), eps=(eps, 0.0, None, False, False),
                 rate=(rate, 0.0, 1.0, True, True), lam=(lam, 0.0, None, False, False),
                 beta=(beta, 0.0, 1.0, True, False), draws=(draws, 1, None, False, False),
                 trigger_size=(trigger_size, 1, None, False, False), epochs=(epochs, 1, None, False, False),
                 seed=(seed, 0, 2**32 - 1, False, False), hidden=(min(widths, default=1), 1, None, False, False))
    trig = TriggerConfig(size=trigger_size)
    atk = AttackConfig(kind=attack, trigger=trig, rate=rate, lam=lam, beta=beta, draws=draws)
    certifiers = {"gaussian": ("smoothing",), "ibp": ("ibp",)}.get(procedure, ())
    track = Track(name="train", model=ModelConfig(arch=arch, hidden=widths), certifiers=certifiers,
                  train=TrainConfig(procedure=procedure, sigma=sigma, eps=eps, epochs=epochs),
                  smoothing=SmoothingConfig(sigma=sigma))
    cfg = ExperimentConfig(name="train", seeds=(seed,), data=dataset, tracks=(track,), attacks=(atk,), device=device)
    out = _out(out, "train")
    cmd = resume_command("train", dataset=dataset, arch=arch, hidden=",".join(map(str, widths)), procedure=procedure,
                         sigma=sigma, eps=eps, attack=attack, rate=rate, lam=lam, beta=beta, draws=draws,
                         trigger_size=trigger_size, epochs=epochs, seed=seed, out=out, device=device, threads=threads)

    def work():
        run = RunDir.open(out, "certify", "train", cfg, seed=seed, resume=resume)
        data = prepare_data(cfg, seed)
        x, y, hook = data.x_train, data.y_train, None
        extra = {"data": dataset, "test_frac": cfg.test_frac, "seed": seed, "max_test": None,
                 "trigger": dataclasses.asdict(trig), "attack": dataclasses.asdict(atk),
                 "attack_sigma": attack_sigma(track) if attack == "max-entropy" else None}
        if attack == "label-noise":
            p = poison_label_noise(x, y, data.K, data.trigger, rate, seed=derive_seed(seed, "poison"))
            x, y = p.x, p.y
            extra.update(poison_idx=p.poison_idx.tolist(), n_poison=len(p.poison_idx))
        elif attack == "max-entropy":
            hook = max_entropy_hook(track, atk, data)
        model, meta = train_model(run.path / "model", track, x, y, data, seed, device, hook, extra=extra)
        run.write_results({k: meta[k] for k in ("secs", "loss", "epochs", "steps") if k in meta},
                          artifacts=["model/model.pt", "model/train.json"], schema="trustlab.certify/1")
        return run, meta

    run, meta = _guard(work, cmd)
    typer.echo(f"trained {attack} model ({procedure}, {epochs} epochs, loss {meta['loss']:.4f}) -> {run.path / 'model'}")


EVAL_META = ("data", "seed", "test_frac", "trigger", "model", "shape", "K")


@app.command("eval")
def eval_(model_dir: Path = typer.Argument(..., help="A model folder (model.pt + train.json)."),
          certifier: str = typer.Option("smoothing", "--certifier", help="smoothing | ibp | crown-ibp | crown | best."),
          n0: str = typer.Option("100", "--n0", help="Selection draws per input (an integer, 1e2 also works)."),
          n: str = typer.Option("100000", "--n", help="Estimation draws per input (an integer, 1e5 also works)."),
          alpha: float = typer.Option(0.001, "--alpha"), sigma: float = typer.Option(0.25, "--sigma"),
          batch: int = typer.Option(1000, "--batch"), eps: float = typer.Option(0.05, "--eps"),
          inputs: str = typer.Option("both", "--inputs", help="clean | triggered | both."),
          max_inputs: Optional[int] = typer.Option(None, "--max-inputs"), predict: bool = typer.Option(False, "--predict"),
          max_hours: float = MAX_HOURS, out: Optional[Path] = OUT, resume: bool = RESUME,
          threads: int = THREADS) -> None:
    """Certify a trained model on its dataset's test inputs x and/or T(x); stamped JSONL per input, resumable with
    the same settings (other settings are refused; --no-resume starts afresh)."""
    import warnings

    from trustlab.runtime import DataError, RunDir, derive_seed, from_dict, require_choice

    from .config import AttackConfig, BoundsConfig, ExperimentConfig, SmoothingConfig, TriggerConfig
    from .experiment import accuracy, bounds_records, load_model_dir, prepare_data
    from .metrics import summarize
    from .smoothing import certify_inputs, require_budget
    from .stats import budget

    _setup(threads)
    require_choice("--certifier", certifier, ("smoothing", "ibp", "crown-ibp", "crown", "best"))
    require_choice("--inputs", inputs, ("clean", "triggered", "both"))
    n0_, n_ = _count("--n0", n0), _count("--n", n)
    _check_flags(alpha=(alpha, 0.0, 1.0, True, True), sigma=(sigma, 0.0, None, True, False),
                 batch=(batch, 1, None, False, False), eps=(eps, 0.0, None, False, False),
                 max_inputs=(max_inputs, 1, None, False, False), max_hours=(max_hours, 0.0, None, True, False))
    scfg = SmoothingConfig(sigma=sigma, n0=n0_, n=n_, alpha=alpha, batch_size=batch, predict=predict,
                           max_hours=max_hours)
    bcfg = BoundsConfig(method=certifier if certifier != "smoothing" else "ibp", eps=eps)
    out = _out(out, "eval")
    cmd = resume_command("eval", model_dir, certifier=certifier, n0=n0_, n=n_, alpha=alpha, sigma=sigma, batch=batch,
                         eps=eps, inputs=inputs, max_inputs=max_inputs, predict=predict, max_hours=max_hours, out=out,
                         threads=threads)
    summ: dict = {}

    def work():
        model, meta = load_model_dir(model_dir)
        missing = [k for k in EVAL_META if k not in meta]
        if missing:
            raise DataError(f"{str(model_dir / 'train.json')!r} does not record {', '.join(missing)}",
                            hint="pass a model folder written by `trustlab certify train` or a run")
        trigger = from_dict(TriggerConfig, meta["trigger"], "train.json trigger")
        cfg = ExperimentConfig(name="eval", seeds=(meta["seed"],), data=meta["data"], test_frac=meta["test_frac"],
                               attacks=(AttackConfig(kind="label-noise", trigger=trigger),),
                               max_test=max_inputs or meta.get("max_test"))
        # batch size and the time limit are left out: certificates do not depend on them
        settings = {"model_dir": str(model_dir), "certifier": certifier, "inputs": inputs, "max_inputs": max_inputs,
                    "smoothing": {k: v for k, v in dataclasses.asdict(scfg).items()
                                  if k not in ("batch_size", "max_hours")} if certifier == "smoothing" else None,
                    "bounds": dataclasses.asdict(bcfg) if certifier != "smoothing" else None}
        run = RunDir.open(out, "certify", "eval", settings, seed=meta["seed"], resume=resume)
        data = prepare_data(cfg, meta["seed"])
        sets = [(w, xs) for w, xs in (("clean", data.x_test), ("triggered", data.x_trig)) if inputs in ("both", w)]
        flags = {}
        if certifier == "smoothing":
            attacked_at = meta.get("attack_sigma")
            if attacked_at not in (None, 0.0, sigma):
                typer.echo(f"warning: attack B trained this model against sigma {attacked_at}; certifying at "
                           f"--sigma {sigma}", err=True)
            require_budget(model, data.shape, scfg, len(sets) * len(data.x_test),
                           names={"n": "--n", "max_hours": "--max-hours"})
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                flags = budget(n_, alpha, sigma, n_ if predict else None, scfg.radii)
            for w in caught:
                typer.echo(f"warning: {w.message}", err=True)
        for which, xs in sets:
            path = run.artifact(f"{certifier}/{which}.jsonl")
            if certifier == "smoothing":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    recs = certify_inputs(model, xs, scfg, seed=derive_seed(meta["seed"], "smoothing", which),
                                          K=data.K, records=path, labels=data.y_test, resume=resume)
                grid = scfg.radii
            else:
                recs = bounds_records(model, xs, data.y_test, bcfg, certifier, path, resume=resume)
                grid = bcfg.eps_grid
            summ[f"{which}_inputs"] = summarize(recs, accuracy(model, xs, data.y_test), grid,
                                                "smoothing" if certifier == "smoothing" else "bounds")
            typer.echo(f"{which:>9}: clean acc {summ[f'{which}_inputs']['clean_acc']:.3f}  abstain "
                       f"{summ[f'{which}_inputs']['abstain_rate']:.3f}  (n = {len(recs)})")
        run.write_results({k: v["abstain_rate"] for k, v in summ.items()}, artifacts=[], schema="trustlab.certify/1",
                          certifier=certifier, params=flags, by_inputs=summ)
        return run

    run = _guard(work, cmd)
    typer.echo(f"wrote {run.path / 'results.json'}")


@app.command()
def defend(run_dir: Path = typer.Argument(..., help="A finished `certify run` folder."),
           defence: str = typer.Option("strip,spectral,activation-clustering,fine-pruning", "--defence"),
           out: Optional[Path] = OUT, resume: bool = RESUME, threads: int = THREADS) -> None:
    """Apply defences to a finished run (its trained models and certificates are reused), write a new run."""
    from trustlab.runtime import require_choice

    from .config import DEFENCES, load_config
    from .experiment import run_experiment

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
        from trustlab.runtime.files import at_path

        for s in cfg.seeds:  # reuse trained models and finished certificates (stamped: stale ones are not trusted)
            src, dst = run_dir / f"seed{s}", out / f"seed{s}"
            if src.is_dir() and not dst.exists():
                with at_path(dst, "run folder", ConfigError):
                    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("results.json"))
        return run_experiment(cfg, out, resume=resume, verb="defend")

    _print_summary(_guard(work, cmd))


@app.command()
def report(run_dir: Path = typer.Argument(...), html: bool = typer.Option(True, "--html/--no-html")) -> None:
    """Render report.md (and report.html) for a certify run."""
    from trustlab.report import render

    md, page = render(run_dir, sections={"certify": report_section})
    if not html:
        page.unlink(missing_ok=True)
    typer.echo(f"wrote {md}" + (f" and {page}" if html else ""))


@app.command()
def stats(alpha: float = typer.Option(0.001, "--alpha"), n: str = typer.Option("100000", "--n"),
          sigma: Optional[float] = typer.Option(None, "--sigma")) -> None:
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


def report_section(results: dict, run_dir: Path) -> list:
    from .report import report_section as _section

    return _section(results, run_dir)
