"""Shared pieces of the certify CLI: the common options, config loading and overrides, run folders, sample-count
flags, the resume command and the run summary. No torch import at module level."""

from __future__ import annotations

import dataclasses
import math
import shlex
from pathlib import Path
from typing import Optional

import typer

from trustlab.runtime.cli_options import out_option, resume_option, threads_option
from trustlab.runtime.errors import ConfigError, Interrupted

OUT = out_option(None, help="Run folder (default runs/certify-<verb>-<UTC time>).")
DEVICE = typer.Option("auto", "--device", help="auto | cpu | cuda[:i].")
SEEDS = typer.Option(None, "--seeds", help="Comma-separated seeds (overrides the config).")
RESUME = resume_option(help="Resume a run folder (default) or start it afresh.")
THREADS = threads_option(None)
MAX_HOURS = typer.Option(24.0, "--max-hours", help="Refuse a smoothing budget estimated (from measured throughput) "
                                                   "to take longer than this.")


def _setup(threads: Optional[int]) -> None:
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
