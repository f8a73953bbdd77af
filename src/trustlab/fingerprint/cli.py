"""``trustlab fingerprint``: generate, embed, verify, robustness, assign, identify, inspect, demo, ls.

Thin layer: every verb reads ``--config x.yaml`` (keys = the dataclass fields; unknown keys are an error listing
the valid ones), lets kebab-case flags override it, calls the Python verb inside a ``RunDir`` and prints a short
table. verify / robustness / assign / identify come from ``cli_verify.register``. Nothing heavy at import time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from trustlab.runtime.cli_options import (config_option, out_option, resume_option, seed_option, threads_option,
                                          use_threads)
from trustlab.runtime.errors import Interrupted

from .cli_verify import register as register_verify
from .demo import run_demo as _run_demo
from .runs import LAB, SMOLLM2, resolve_config, run_embed, run_generate  # noqa: F401 - re-exported for notebooks

app = typer.Typer(name="fingerprint", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="OML 1.0 model fingerprinting: embed secret key/response pairs, prove ownership.")


def _threads(threads: Optional[int] = None) -> None:
    from trustlab.runtime import configure_threads

    use_threads(threads)
    configure_threads()


def _table(title: str, rows: list[tuple[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, show_header=False)
    for k, v in rows:
        t.add_row(k, str(v))
    Console().print(t)


# --- generate ---------------------------------------------------------------------------------------------
@app.command()
def generate(
    config: Optional[Path] = config_option(None, help="YAML file of GenerateConfig fields."),
    secret: Path = typer.Option(..., "--secret", help="Secret file: created (mode 0600) if absent, never "
                                                      "overwritten."),
    out: Path = out_option(Path("fingerprints.json"), help="Fingerprint file to write (private)."),
    model: Optional[str] = typer.Option(None, "--model", help="Target model: registry name, folder, hub id."),
    key_model: Optional[str] = typer.Option(None, "--key-model", help="Key generator LM (default: the target)."),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="perinucleus | english | random_word | "
                                                                    "english_random."),
    num_fingerprints: Optional[int] = typer.Option(None, "-n", "--num-fingerprints",
                                                   help="Number of (key, response) pairs (default 32)."),
    key_length: Optional[int] = typer.Option(None, "--key-length", help="Key length in tokens, >= 8 (default 16)."),
    response_length: Optional[int] = typer.Option(None, "--response-length",
                                                  help="Response length in tokens (default 1)."),
    key_temperature: Optional[float] = typer.Option(None, "--key-temperature",
                                                    help="Sampling temperature of the key generator (default 0.5)."),
    nucleus_t: Optional[float] = typer.Option(None, "--nucleus-t",
                                              help="Perinucleus: probability mass of the skipped nucleus, (0, 1) "
                                                   "(default 0.8)."),
    nucleus_k: Optional[int] = typer.Option(None, "--nucleus-k",
                                            help="Perinucleus: candidate tokens just past the nucleus (default 3)."),
    alnum_filter: Optional[bool] = typer.Option(None, "--alnum-filter/--no-alnum-filter",
                                                help="Keep only alphanumeric response candidates (default on)."),
    prompt_format: Optional[str] = typer.Option(None, "--prompt-format", help="raw | chat."),
    seed_words: Optional[str] = typer.Option(None, "--seed-words", help="File of seed words, one per line."),
    null_p: Optional[float] = typer.Option(None, "--null-p", help="Null hit rate (strategy english only)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Keys generated per batch (default 16)."),
    seed: Optional[int] = seed_option(None, help="Seed of the key sampling (default 0)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing fingerprint file."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Run record folder (default "
                                                                   "runs/fingerprint-generate-<UTC>)."),
    threads: Optional[int] = threads_option(None),
) -> None:
    """Generate secret-keyed fingerprints for a model (the secret never enters the fingerprint file)."""
    from .config import GenerateConfig

    cfg = resolve_config(GenerateConfig, config, dict(
        model=model, key_model=key_model, strategy=strategy, num_fingerprints=num_fingerprints, key_length=key_length,
        response_length=response_length, key_temperature=key_temperature, nucleus_t=nucleus_t, nucleus_k=nucleus_k,
        alnum_filter=alnum_filter, prompt_format=prompt_format, seed_words=seed_words, null_p=null_p,
        batch_size=batch_size, seed=seed))
    _threads(threads)
    path, skipped = run_generate(cfg, secret, out, overwrite, run_dir)
    if skipped:
        typer.echo(f"{path} already holds fingerprints of this config and secret; skipping")
        return
    _print_set(path)


def _print_set(path: Path) -> None:
    from .fpset import FingerprintSet

    fps = FingerprintSet.load(path)
    probs = [f.base_prob for f in fps.fingerprints if f.base_prob is not None]
    _table(f"fingerprints {path}", [
        ("fingerprints", len(fps)), ("strategy", fps.strategy), ("null p0", f"{fps.null_p:.4g}" if fps.null_p else "-"),
        ("mean base_prob", f"{sum(probs) / len(probs):.4g}" if probs else "-"),
        ("set_digest", fps.set_digest), ("secret_commitment", fps.secret_commitment),
        ("rejected keys", fps.params.get("rejected"))])


# --- embed ----------------------------------------------------------------------------------------------------
@app.command()
def embed(
    config: Optional[Path] = config_option(None, help="YAML file of EmbedConfig fields."),
    model: Optional[str] = typer.Option(None, "--model", help="Model to fingerprint: registry name, folder, hub id."),
    fingerprints: Optional[str] = typer.Option(None, "--fingerprints", help="fingerprints.json."),
    out: Optional[Path] = out_option(None, help="Run folder (default: out_dir, else "
                                                           "runs/fingerprint-embed-<UTC>)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (default: the model's preset)."),
    lambda_wa: Optional[float] = typer.Option(None, "--lambda-wa", help="Weight averaging toward the base, [0, 1)."),
    wa_mode: Optional[str] = typer.Option(None, "--wa-mode", help="per_step | final."),
    beta_dm: Optional[float] = typer.Option(None, "--beta-dm", help="Benign data share, [0, 1)."),
    benign_source: Optional[str] = typer.Option(None, "--benign-source", help="chat-corpus or jsonl:FILE."),
    max_epochs: Optional[int] = typer.Option(None, "--max-epochs", help="Epoch cap (default: the model's preset)."),
    early_stop_loss: Optional[float] = typer.Option(None, "--early-stop-loss",
                                                    help="Stop when the fingerprint loss falls below this "
                                                         "(default 0.005)."),
    stop_after_full_match: Optional[int] = typer.Option(None, "--stop-after-full-match",
                                                        help="Stop after this many epochs at 100% exact match "
                                                             "(0: off, the default)."),
    micro_batch_size: Optional[int] = typer.Option(None, "--micro-batch-size",
                                                   help="Rows per forward; gradients accumulate (default 8)."),
    augment_prompts: Optional[bool] = typer.Option(None, "--augment-prompts/--no-augment-prompts",
                                                   help="Also train each key inside a prompt template (default off)."),
    append_eos: Optional[bool] = typer.Option(None, "--append-eos/--no-append-eos",
                                              help="End each response with EOS (default off)."),
    lora: Optional[bool] = typer.Option(None, "--lora/--no-lora", help="LoRA (peft) instead of a full fine-tune."),
    lora_r: Optional[int] = typer.Option(None, "--lora-r", help="LoRA rank (with --lora)."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="auto | float32 | bfloat16 (the model is cast for training)."),
    save_every: Optional[int] = typer.Option(None, "--save-every", help="Checkpoint every N epochs (0: never)."),
    no_metadata: bool = typer.Option(False, "--no-metadata", help="Do not ship trustlab_fingerprint.json."),
    seed: Optional[int] = seed_option(None, help="Seed of the data order and benign mix (default 0)."),
    resume: bool = resume_option(help="Continue an interrupted run of this config from its checkpoint (default), or "
                                     "start afresh, discarding what the folder holds."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace what the folder holds, also a run of another config (= --no-resume)."),
    threads: Optional[int] = threads_option(None),
) -> None:
    """Fine-tune the fingerprints into a model (full or LoRA, per-step weight averaging, benign mixing)."""
    import dataclasses

    from trustlab.runtime.rundir import default_run_path

    from .config import EmbedConfig

    cfg = resolve_config(EmbedConfig, config, {
        "model": model, "fingerprints": fingerprints, "lr": lr, "lambda_wa": lambda_wa, "wa_mode": wa_mode,
        "beta_dm": beta_dm, "benign_source": benign_source, "max_epochs": max_epochs,
        "early_stop_loss": early_stop_loss, "stop_after_full_match": stop_after_full_match,
        "micro_batch_size": micro_batch_size, "augment_prompts": augment_prompts, "append_eos": append_eos,
        "lora.enabled": lora, "lora.r": lora_r, "dtype": dtype, "save_every": save_every,
        "write_metadata": False if no_metadata else None, "seed": seed})
    if cfg.model is None:
        cfg = dataclasses.replace(cfg, model=SMOLLM2)
    out = out or (Path(cfg.out_dir) if cfg.out_dir else default_run_path(LAB, "embed"))
    _threads(threads)
    import warnings

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            run_dir, result = run_embed(cfg, out, resume=resume and not overwrite, overwrite=overwrite or not resume)
        for w in caught:
            if issubclass(w.category, UserWarning) and "trustlab" in str(w.filename):
                typer.echo(f"warning: {w.message}", err=True)
    except KeyboardInterrupt:
        from trustlab.runtime.rundir import resume_command

        raise Interrupted("embed interrupted; the last checkpoint is kept",
                          hint=f"resume with: {resume_command()}") from None
    if result is None:
        typer.echo(f"{run_dir} already holds a finished embed run of this config; skipping")
        return
    _table(f"embed {run_dir}", [("epochs", result.epochs), ("exact-match accuracy", f"{result.accuracy:.3f}"),
                                ("fp loss", f"{result.fp_loss:.4f}"), ("converged", result.converged),
                                ("stop", result.stop_reason), ("lr / lambda / beta",
                                f"{result.settings['lr']:g} / {result.settings['lambda_wa']:g} / "
                                f"{result.settings['beta_dm']:g}"), ("model", run_dir / "model")])


# --- inspect ----------------------------------------------------------------------------------------------
def inspect_path(path: Path, secret: Optional[Path] = None) -> dict[str, Any]:
    """Public summary of a fingerprint file or a fingerprinted model folder (never a key, response or secret)."""
    from trustlab.runtime.errors import DataError
    from trustlab.runtime.files import read_text

    from .fpset import FingerprintSet

    if path.is_dir():
        meta = path / "trustlab_fingerprint.json"
        if not meta.is_file():
            raise DataError(f"{str(path)!r} holds no trustlab_fingerprint.json",
                            hint="pass a model folder written by `trustlab fingerprint embed`, or a fingerprints.json")
        info = json.loads(read_text(meta, "model metadata"))
        kind = "model"
    else:
        fps = FingerprintSet.load(path, check_digest=False)  # the digest is recomputed and reported below
        problem = fps.digest_problem()
        probs = [f.base_prob for f in fps.fingerprints if f.base_prob is not None]
        info = {"num_fingerprints": len(fps), "strategy": fps.strategy, "null_p": fps.null_p,
                "null_p_heuristic": fps.null_p_heuristic, "params": fps.params, "base_model": fps.base_model,
                "key_model": fps.key_model, "set_digest": fps.set_digest,
                "set_digest_recomputed": fps.compute_digest(), "digest_holds": problem is None,
                "digest_problem": problem, "secret_commitment": fps.secret_commitment,
                "created": fps.created, "mean_base_prob": sum(probs) / len(probs) if probs else None,
                "max_base_prob": max(probs) if probs else None}
        kind = "fingerprints"
    if secret is not None:
        from .secret import check_commitment, load_secret

        check_commitment(load_secret(secret), info["secret_commitment"])
        info["secret_matches_commitment"] = True
    return {"kind": kind, **info}


@app.command()
def inspect(path: Path = typer.Argument(..., help="fingerprints.json or a fingerprinted model folder."),
            secret: Optional[Path] = typer.Option(None, "--secret", help="Check a secret file against the "
                                                                        "commitment (SecretMismatch if not)."),
            as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Summarise a fingerprint file or model metadata: counts, digest, commitment (never the secret or keys).
    A fingerprint file's digest is recomputed: when it does not hold, the summary is printed and the exit is 2."""
    info = inspect_path(path, secret)
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
    else:
        _table(f"{info['kind']} {path}", [(k, v) for k, v in info.items() if k != "kind"])
    if info.get("digest_holds") is False:
        from trustlab.runtime.errors import DataError

        from .fpset import _EDITED_HINT, _LEGACY_HINT

        problem = info["digest_problem"]
        legacy = problem.startswith("was written before")
        raise DataError(f"fingerprint file {str(path)!r}{' ' if legacy else ': '}{problem}; the stated set_digest "
                        f"does not vouch for this content", hint=_LEGACY_HINT if legacy else _EDITED_HINT)


# --- demo -------------------------------------------------------------------------------------------------
def run_demo(out: Path, quick: bool = True, resume: bool = True) -> Path:
    """The offline demo (quick: the fp-tiny profile; full: SmolLM2); returns the run folder holding results.json.
    ``resume=False`` starts afresh, removing only what the earlier demo in ``out`` wrote."""
    return _run_demo(Path(out), profile="tiny" if quick else "smollm2", resume=resume)


@app.command()
def demo(out: Path = out_option(Path("runs/fingerprint-demo"), help="Run folder of the demo."),
         profile: str = typer.Option("smollm2", "--profile", help="smollm2 (about 10 min on 2 cores) | tiny "
                                                                  "(about 1 min)."),
         resume: bool = resume_option(help="Resume the demo in --out (default: its finished steps are kept) or "
                                           "start it afresh (only the files the earlier demo wrote are removed; "
                                           "the secret beside the folder is kept)."),
         threads: Optional[int] = threads_option(None)) -> None:
    """generate -> embed -> verify (owned) -> verify base -> benign SFT -> re-verify -> utility -> report."""
    from trustlab.runtime.rundir import resume_command
    from trustlab.runtime.validate import require_choice

    require_choice("--profile", profile, ("smollm2", "tiny"))
    _threads(threads)
    try:
        run_dir = _run_demo(out, profile=profile, resume=resume)
    except KeyboardInterrupt:
        raise Interrupted("demo interrupted; finished steps are kept",
                          hint=f"resume with: {resume_command(out=out)}") from None
    res = json.loads((run_dir / "results.json").read_text())
    for line in res["metrics"].get("lines", []):
        typer.echo(line)
    typer.echo(f"wrote {run_dir / 'report.md'}")


@app.command("ls")
def ls() -> None:
    """List the response schemes (fingerprint strategies) and the robustness experiments, one line each."""
    from trustlab.runtime.registry import format_listing

    from .robustness import EXPERIMENTS
    from .strategies import SCHEMES

    format_listing("schemes", SCHEMES.listing(), typer.echo)
    format_listing("experiments", EXPERIMENTS.listing(), typer.echo)


def report_section(results: dict, run_dir: Path):
    """The lab's report section (rendered by the verify helper's report module)."""
    from .report import report_section as section

    return section(results, run_dir)


register_verify(app)
