"""CLI verbs ``verify``, ``robustness``, ``assign`` and ``identify`` (thin: parse -> call in a RunDir -> print).

``register(app)`` adds them to the lab's typer app. Nothing heavy is imported at module level.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from trustlab.runtime.cli_options import (config_option, out_option, resume_option, seed_option, threads_option,
                                          use_threads)
from trustlab.runtime.errors import ConfigError, DataError, Interrupted


def _resolve(cls, config: Optional[Path], overrides: dict[str, Any]):
    """The config file's keys (if any) overridden by the flags given on the command line."""
    from .runs import resolve_config

    return resolve_config(cls, config, overrides)


def _threads(threads: Optional[int] = None) -> None:
    from trustlab.runtime import configure_threads

    use_threads(threads)
    configure_threads()


def verify_cmd(
    config: Optional[Path] = config_option(None, help="YAML file of VerifyConfig fields."),
    fingerprints: Optional[str] = typer.Option(None, "--fingerprints", help="fingerprints.json (private)."),
    model: Optional[str] = typer.Option(None, "--model", help="Local suspect: HF folder, registry name, hub id."),
    endpoint: Optional[str] = typer.Option(None, "--endpoint", help="OpenAI-compatible base URL, e.g. "
                                                                     "http://127.0.0.1:8000/v1."),
    served_model: Optional[str] = typer.Option(None, "--served-model", help="Model name the endpoint serves."),
    api: Optional[str] = typer.Option(None, "--api", help="completions | chat."),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="Variable holding the API key."),
    match: Optional[str] = typer.Option(None, "--match", help="exact | lenient."),
    num_queries: Optional[int] = typer.Option(None, "--num-queries", help="Query a seeded subset of M keys."),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="Significance level (default 1e-3)."),
    null_p: Optional[float] = typer.Option(None, "--null-p", help="Override the null hit rate p0."),
    wrapper: Optional[int] = typer.Option(None, "--wrapper", help="Wrap keys in TEST_TEMPLATES[i] (0-9)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Sampling temperature (0 = greedy)."),
    samples: Optional[int] = typer.Option(None, "--samples", help="Samples per key (needs temperature > 0)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Keys per batch / request."),
    seed: Optional[int] = seed_option(None, help="Seed of the key subset and of sampling (default 0)."),
    max_retries: int = typer.Option(5, "--max-retries", help="Retries of a failed HTTP call (429, 5xx, timeout)."),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds per HTTP request to --endpoint: a total "
                                                          "deadline, however slowly the server sends."),
    concurrency: int = typer.Option(4, "--concurrency", help="Parallel requests when a server takes one "
                                                            "prompt per request."),
    out: Optional[Path] = out_option(None, help="Run folder (default runs/fingerprint-verify-<UTC>)."),
    threads: Optional[int] = threads_option(None),
    mode: str = typer.Option("fixed", "--mode", help="fixed: every key (or --num-queries), the reference test | "
                                                     "sequential: keys a batch at a time until the evidence decides "
                                                     "(needs --secret; --num-queries is its budget)."),
    secret: Optional[Path] = typer.Option(None, "--secret", help="The owner's secret: seeds the sequential order "
                                                                  "and keeps the revealed-key ledger beside it."),
    ledger: Optional[Path] = typer.Option(None, "--ledger", help="Revealed-key ledger (default "
                                                                  "<secret>.ledger.jsonl; never in a run folder)."),
    step: Optional[int] = typer.Option(None, "--step", help="Sequential: keys per batch (default: the fewest that "
                                                            "could still decide)."),
) -> None:
    """Test a suspect model (weights or endpoint) for the fingerprints: verdict, p-value, Hoeffding bound; with
    --mode sequential an anytime-valid test that reveals the fewest keys; with --secret a ledger of revealed keys."""
    from .config import VerifyConfig

    cfg = _resolve(VerifyConfig, config, dict(
        fingerprints=fingerprints, model=model, endpoint=endpoint, served_model=served_model, api=api,
        api_key_env=api_key_env, match=match, num_queries=num_queries, alpha=alpha, null_p=null_p,
        wrapper=wrapper, temperature=temperature, samples=samples, batch_size=batch_size, seed=seed))
    use_threads(threads)
    run_dir = run_verify(cfg, out, max_retries=max_retries, concurrency=concurrency, timeout=timeout, mode=mode,
                         secret=secret, ledger=ledger, step=step)
    res = json.loads((run_dir / "verify_result.json").read_text())
    typer.echo(res["line"])
    if res.get("ledger_warning"):
        typer.echo(f"warning: {res['ledger_warning']}")
    if res["unanswered"]:
        typer.echo(f"unanswered keys ({len(res['unanswered'])}): {', '.join(map(str, res['unanswered'][:20]))}"
                   + (" ..." if len(res["unanswered"]) > 20 else ""))
    for note in res["notes"]:
        typer.echo(f"note: {note}")
    typer.echo(f"caveat: {res['caveat']}")
    typer.echo(f"wrote {run_dir / 'verify_result.json'}")


def run_verify(cfg, out: Optional[Path], *, max_retries: int = 5, concurrency: int = 4,
               timeout: Optional[float] = None, mode: str = "fixed", secret: Optional[Path] = None,
               ledger: Optional[Path] = None, step: Optional[int] = None) -> Path:
    """Load the fingerprint file and the suspect, verify inside a RunDir; returns the run folder. ``mode``:
    ``fixed`` (``verify``) or ``sequential`` (``sequential.verify_sequential``, needs ``secret``); with ``secret``
    every key sent is first recorded in the ledger beside it, and unrevealed keys are drawn first."""
    from trustlab.runtime.io import write_json_atomic
    from trustlab.runtime.rundir import RunDir

    from .fpset import FingerprintSet
    from .verify import backend_for

    if cfg.fingerprints is None:
        raise ConfigError("verify needs the fingerprint file", hint="pass --fingerprints fingerprints.json")
    if cfg.model is None and cfg.endpoint is None:
        raise ConfigError("verify needs a suspect: a local model or an endpoint",
                          hint="pass --model DIR_OR_NAME, or --endpoint URL --served-model NAME")
    if isinstance(max_retries, bool) or max_retries < 0 or concurrency < 1:
        raise ConfigError(f"--max-retries must be >= 0 and --concurrency >= 1, got {max_retries} and {concurrency}",
                          hint="e.g. --max-retries 5 --concurrency 4")
    from .sequential import SequentialConfig

    if mode not in ("fixed", "sequential"):
        raise ConfigError(f"--mode must be fixed or sequential, got {mode!r}",
                          hint="--mode fixed (every key, the reference) or --mode sequential --secret FILE")
    if secret is None and (mode == "sequential" or ledger is not None):
        raise ConfigError("--mode sequential needs the owner's secret (it seeds the key order)" if ledger is None
                          else "--ledger needs --secret (the ledger is authenticated with the secret)",
                          hint="pass --secret owner.secret (the file `trustlab fingerprint generate` wrote)")
    scfg = SequentialConfig(step=step)
    fps = FingerprintSet.load(cfg.fingerprints)
    from .verify import null_override

    null_override(fps, cfg)  # a --null-p below the proven null is refused before the suspect is loaded
    key, led = (None, None)
    if secret is not None:
        from .ledger import open_for

        key, led = open_for(secret, ledger, fps)  # wrong secret or a damaged ledger: exit 2 before any query
    _threads()
    run = RunDir.open(out, "fingerprint", "verify", cfg, cfg.seed, new_only=True)  # before the suspect loads
    backend = backend_for(cfg, max_retries=max_retries, concurrency=concurrency)
    suspect = _suspect(backend, cfg)
    from trustlab.runtime.progress import is_quiet, task

    from .backends import endpoint_plan

    n_plan = cfg.num_queries or len(fps.fingerprints)
    backend, plan = endpoint_plan(backend, n_plan, timeout)
    if plan is not None and mode == "sequential":  # n_plan is a budget: the test usually stops far earlier
        plan = plan.replace(f" for {n_plan} key(s):", f" for at most {n_plan} key(s) (the sequential budget; it "
                            "stops as soon as the evidence decides):", 1)
    if plan is not None and not is_quiet():
        typer.echo(plan, err=True)
    try:
        with task("verify: keys answered", cfg.num_queries or len(fps.fingerprints)) as bar:
            if plan is not None:
                backend.on_answer = bar.advance
            res = _verify_mode(fps, backend, cfg, mode, key, led, scfg, suspect, str(run.path))
    except KeyboardInterrupt:
        raise Interrupted("verification interrupted; nothing was written", hint="run the same command again") from None
    d = res.to_dict()
    if mode == "fixed" and led is not None:
        _ledger_fields(d, fps, backend, cfg, led)
    d["mode"] = mode
    write_json_atomic(run.path / "verify_result.json", d)
    keys = (("decision", "m", "M", "p_value", "alpha", "answered", "keys_revealed", "e_value") if mode == "sequential"
            else ("decision", "m", "M", "p0", "p_value", "hoeffding_bound", "alpha", "queried", "answered",
                  "mean_hit_rate", "any_hit_rate"))
    metrics = {k: d[k] for k in keys}
    if d.get("unrevealed") is not None:
        metrics["unrevealed"] = d["unrevealed"]
    run.write_results(metrics, artifacts=["verify_result.json"], mode=mode,
                      verify=[{k: v for k, v in d.items() if k != "fingerprints"}], caveat=d["caveat"],
                      suspect=suspect)
    return run.path


def _verify_mode(fps, backend, cfg, mode, key, led, scfg, suspect, run):
    """One verification: sequential, or fixed-M (the keys drawn unrevealed-first and logged when there is a ledger)."""
    from .sequential import fixed_keys, verify_sequential
    from .verify import verify

    if mode == "sequential":
        return verify_sequential(fps, backend, cfg, key, scfg, ledger=led, suspect=suspect, run=run)
    keys = None
    if led is not None:
        keys = fixed_keys(fps, key, led, cfg.num_queries)
        led.append(set_digest=fps.set_digest, keys=keys, suspect=suspect, verb="verify", mode="fixed", run=run)
    return verify(fps, backend, cfg, keys=keys)


def _ledger_fields(d: dict, fps, backend, cfg, led) -> None:
    """A fixed-M verdict's ledger report: keys never revealed, and a warning when too few remain for the test."""
    from .sequential import fixed_min_keys, ledger_status, planned_nulls

    p0 = planned_nulls(fps, backend, cfg, [])[1]
    d["unrevealed"], d["ledger_warning"] = ledger_status(led, fps, p0, lambda ps: fixed_min_keys(ps, cfg.alpha),
                                                         cfg.alpha)
    d["ledger"] = str(led.path)
    d["line"] += f"; {d['unrevealed']} key(s) of the set never revealed"


def _suspect(backend, cfg) -> dict:
    """What was verified: a local model's identity from the object, or the endpoint and its served model name."""
    model = getattr(backend, "model", None)
    if hasattr(model, "state_dict"):
        from trustlab.models.identity import model_identity

        return model_identity(model).to_dict()
    return {"endpoint": cfg.endpoint, "served_model": cfg.served_model}


def robustness_cmd(
    config: Optional[Path] = config_option(None, help="YAML file of RobustnessConfig fields."),
    fingerprinted: Optional[str] = typer.Option(None, "--fingerprinted", help="The fingerprinted model folder."),
    base: Optional[str] = typer.Option(None, "--base", help="The base model (reference)."),
    fingerprints: Optional[str] = typer.Option(None, "--fingerprints", help="fingerprints.json."),
    experiments: Optional[str] = typer.Option(None, "--experiments", help="Comma-separated: sft,merge,wrappers,"
                                                                         "temperature,quant,suppress,utility,fpr."),
    seed: Optional[int] = seed_option(None, help="Seed of every experiment (default 0)."),
    out: Optional[Path] = out_option(None, help="Run folder (default runs/fingerprint-robustness-<UTC>)."),
    resume: bool = resume_option(help="Skip experiments already in robustness.json."),
    threads: Optional[int] = threads_option(None),
) -> None:
    """Robustness of the fingerprints to fine-tuning, merging, wrappers, sampling, quantization, suppression."""
    from .config import RobustnessConfig
    from .robustness import run_robustness

    exps = None if experiments is None else tuple(e.strip() for e in experiments.split(",") if e.strip())
    cfg = _resolve(RobustnessConfig, config, dict(fingerprinted=fingerprinted, base=base, fingerprints=fingerprints,
                                                  experiments=exps, seed=seed))
    _threads(threads)
    try:
        result = run_robustness(cfg, out_dir=out, resume=resume)
    except KeyboardInterrupt:
        raise Interrupted("robustness run interrupted; finished experiments are saved",
                          hint=f"resume with: trustlab fingerprint robustness --out {out or '<the run folder>'}"
                               " (same flags)") from None
    for line in result.summary_lines():
        typer.echo(line)
    typer.echo(f"wrote {result.run_dir / 'robustness.json'}")


def assign_cmd(
    secret: Path = typer.Option(..., "--secret", help="The owner's secret file."),
    copies: int = typer.Option(..., "--copies", help="Number of model copies N_c."),
    pool: int = typer.Option(..., "--pool", help="Pool size P (fingerprints generated for all copies)."),
    max_coalition: int = typer.Option(3, "--max-coalition", help="Largest coalition K; p = 1/(2K)."),
    p: Optional[float] = typer.Option(None, "--p", help="Override the inclusion rate p."),
    out: Path = out_option(Path("assignment.json"), help="Where to write the assignment (private)."),
) -> None:
    """Assign pool fingerprints to model copies: A[f,c] = u("assign|f|c")/2^64 < p."""
    from trustlab.runtime.io import write_json_atomic

    from .collusion import assign, assignment_record, default_p
    from .secret import commitment, load_secret

    key = load_secret(secret)
    rate = default_p(max_coalition) if p is None else p
    a = assign(key, copies, pool, rate)
    write_json_atomic(out, assignment_record(a, rate, max_coalition, commitment(key)))  # with its digest
    typer.echo(f"{copies} copies x {pool} fingerprints: inclusion rate {a.mean():.3f} (p = {rate:.3f}), "
               f"{a.sum(0).mean():.1f} fingerprints per copy; wrote {out}")


def load_assignment(path: Path):
    """bool[pool, copies] from an ``assign`` file; errors name the field."""
    import numpy as np

    from trustlab.runtime.files import read_text

    try:
        d = json.loads(read_text(path, what="assignment file"))
    except json.JSONDecodeError as exc:
        raise DataError(f"assignment file {str(path)!r} is not valid JSON ({exc.msg})",
                        hint="pass the file written by `trustlab fingerprint assign`") from None
    for k in ("copies", "pool", "fingerprints_of_copy"):
        if not isinstance(d, dict) or k not in d:
            raise DataError(f"assignment file {str(path)!r}: field {k!r} is missing",
                            hint="pass the file written by `trustlab fingerprint assign`")
    from .collusion import check_assignment_record

    check_assignment_record(d, f"assignment file {str(path)!r}")
    a = np.zeros((int(d["pool"]), int(d["copies"])), dtype=bool)
    for c, fs in enumerate(d["fingerprints_of_copy"]):
        if any(not isinstance(f, int) or not 0 <= f < a.shape[0] for f in fs) or c >= a.shape[1]:
            raise DataError(f"assignment file {str(path)!r}: field 'fingerprints_of_copy[{c}]' is out of range",
                            hint="pass the file written by `trustlab fingerprint assign`")
        a[fs, c] = True
    return a


def load_hits(path: Path, pool: int):
    """Pool-ordered hits from a verify_result.json (fingerprint ids 0..P-1) or a JSON list of 0/1."""
    import numpy as np

    from trustlab.runtime.files import read_text

    try:
        d = json.loads(read_text(path, what="hits file"))
    except json.JSONDecodeError as exc:
        raise DataError(f"hits file {str(path)!r} is not valid JSON ({exc.msg})",
                        hint="pass a verify_result.json or a JSON list of 0/1") from None
    if isinstance(d, dict) and "fingerprints" in d:
        hits = np.zeros(pool, dtype=bool)
        for row in d["fingerprints"]:
            if not isinstance(row.get("id"), int) or not 0 <= row["id"] < pool:
                raise DataError(f"hits file {str(path)!r}: fingerprint id {row.get('id')!r} is outside the pool "
                                f"(0..{pool - 1})", hint="verify the suspect with the pool's fingerprint file")
            hits[row["id"]] = bool(row.get("hit"))
        return hits
    if isinstance(d, list) and all(v in (0, 1, True, False) for v in d):
        return np.array(d, dtype=bool)
    raise DataError(f"hits file {str(path)!r} must be a verify_result.json or a JSON list of 0/1",
                    hint="run `trustlab fingerprint verify` against the suspect first")


def identify_cmd(
    assignment: Path = typer.Option(..., "--assignment", help="The file written by `assign`."),
    hits: Path = typer.Option(..., "--hits", help="verify_result.json of the suspect over the pool, or 0/1 list."),
    top: int = typer.Option(5, "--top", help="Copies to list."),
) -> None:
    """Name the copy (or coalition member) behind a suspect from its hits on the pool."""
    from .collusion import identify_host

    a = load_assignment(assignment)
    ident = identify_host(load_hits(hits, a.shape[0]), a)
    d = ident.to_dict(top)
    typer.echo(f"best match: copy {', '.join(map(str, d['best'])) or 'none (no hits)'}")
    for row in d["top"]:
        typer.echo(f"  copy {row['copy']:>5}: {row['score']}/{row['size']} of its fingerprints hit "
                   f"({row['fraction']:.2f}), p = {row['p_value']:.2g}")


def register(app: typer.Typer) -> None:
    """Add verify, robustness, assign and identify to the fingerprint app."""
    app.command("verify")(verify_cmd)
    app.command("robustness")(robustness_cmd)
    app.command("assign")(assign_cmd)
    app.command("identify")(identify_cmd)
