"""The lab's verbs as plain functions: ``generate`` -> ``judge`` -> ``metrics`` (``run_eval`` does all three);
``combine`` holds ``compare`` (paired differences between runs) and ``merge`` (shards into one run).

A run folder holds ``run.json`` (the resolved config, the generation fingerprint, versions, status),
``generations.jsonl`` and ``labels.jsonl`` (stamped, append-only, fsynced per record, resumable), ``results.json``
(schema ``trustlab.safety.results/1``, recomputed from the files every time), ``plots/`` and the report.
Resuming skips finished keys; a changed config is refused with the differing keys named. Only settings that change
what a record says count (``runtime.records`` states the rule): the throughput knobs (``batch_size``,
``concurrency``, ``threads``, ``base_urls``, timeouts, retries) and the extent settings (``limit``, ``start``,
``shard``, judges and parts, ``bootstrap``, ``tie``, ``primary``, ``reference``, ``retry_errors``) never do, so a
run is extended by them: ``--limit 4`` on a ``--limit 2`` run ends with the records of a fresh ``--limit 4`` run.
"""

from __future__ import annotations

import dataclasses
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from trustlab.runtime.config import config_diff, config_hash, from_dict, to_dict
from trustlab.runtime.errors import ConfigError, DataError, Interrupted
from trustlab.runtime.io import read_jsonl, write_json_atomic
from trustlab.runtime.records import RecordStore

from . import LAB, RESULTS_SCHEMA
from .config import FORCED, BackendConfig, EvalConfig, JudgeSpec, generation_fingerprint, generation_identity
from .provenance import backend_identity, require_same_model
from .store import is_failure, label_key, open_store

GENERATIONS = "generations.jsonl"
LABELS = "labels.jsonl"
RUN_JSON = "run.json"
_THROUGHPUT = dict(base_urls=(), batch_size=8, concurrency=32, threads=1, timeout_s=600.0, max_retries=6,
                   retry_min_s=1.0, retry_max_s=60.0)
# Settings that decide which records a run holds, or what is computed from them, never what a record says: a run is
# extended by them (runtime.records states the rule). Each is set to its default in the run folder's identity.
EXTENT = ("limit", "start", "shard", "judges", "parts", "primary", "bootstrap", "tie", "reference", "retry_errors")


# --- results --------------------


@dataclass
class GenerateResult:
    run_dir: Path
    n_prompts: int
    n_new: int
    n_records: int
    n_errors: int
    completion_tokens: int
    wall_s: float


@dataclass
class JudgeResult:
    run_dir: Path
    n_new: int
    n_labels: int
    by_status: dict[str, int] = field(default_factory=dict)


@dataclass
class MetricsResult:
    run_dir: Path
    results_path: Path
    metrics: dict[str, Any]
    report: Optional[Path] = None


@dataclass
class EvalResult:
    run_dir: Path
    generate: GenerateResult
    judge: JudgeResult
    metrics: MetricsResult

    @property
    def results_path(self) -> Path:
        return self.metrics.results_path


# --- run folders --------------------


def content_config(cfg: EvalConfig) -> EvalConfig:
    """``cfg`` with its throughput knobs and its ``EXTENT`` settings at their defaults: what a resume must agree on
    (the settings records depend on, plus the strategies and K that metrics are computed over)."""
    kind = cfg.backend.kind
    knobs = dict(_THROUGHPUT, base_urls=("http://throughput.knob/v1",) if kind == "openai" else ())
    extent = {f.name: (f.default_factory() if f.default is dataclasses.MISSING else f.default)
              for f in dataclasses.fields(EvalConfig) if f.name in EXTENT}
    return dataclasses.replace(cfg, backend=dataclasses.replace(cfg.backend, **knobs), **extent)


def _versions() -> dict[str, Any]:
    from trustlab import __version__

    out = {"trustlab": __version__, "python": sys.version.split()[0]}
    for mod in ("torch", "transformers", "openai", "vllm"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    return out


def _write_run_json(path: Path, cfg: EvalConfig, status: str, **extra: Any) -> None:
    old = _read_run_json(path, required=False) or {}
    write_json_atomic(path / RUN_JSON, {
        "lab": LAB, "config": to_dict(cfg), "fingerprint": generation_fingerprint(cfg),
        "identity": generation_identity(cfg), "versions": _versions(), "status": status,
        **{k: v for k, v in old.items() if k not in ("lab", "config", "fingerprint", "identity", "versions",
                                                      "status")}, **extra})


def _read_run_json(path: Path, required: bool = True) -> Optional[dict[str, Any]]:
    import json

    f = Path(path) / RUN_JSON
    if not f.is_file():
        if required:
            raise DataError(f"{str(path)!r} is not a safety run folder (no {RUN_JSON})",
                            hint="pass a folder written by `trustlab safety generate` or `eval`")
        return None
    try:
        return json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{str(f)!r} is corrupt ({type(exc).__name__})", hint="rerun the run with --no-resume") from None


def run_config(run_dir: str | Path) -> EvalConfig:
    """The EvalConfig a run folder was made with (from its run.json)."""
    data = _read_run_json(Path(run_dir))
    return from_dict(EvalConfig, data["config"])


# The verbs that write a safety run folder (generations, labels, results); judge and metrics continue one of these.
RUN_VERBS = ("generate", "eval", "merge", "build")


def _open(cfg: EvalConfig, out: Optional[str | Path], verb: str, resume: bool):
    """The run folder for ``verb``: new, or this lab's earlier generation run of the same config (resumed, or with
    ``resume=False`` cleared of what that run wrote, after every check passed)."""
    from trustlab.runtime.rundir import RunDir, default_run_path

    path = Path(out) if out is not None else default_run_path(LAB, verb, root="runs/safety")
    return RunDir.open(path, LAB, verb, config=content_config(cfg), seed=cfg.sampling.seed, resume=resume,
                       resumes=RUN_VERBS)


# bytes one sample costs before any text: its key in the done set, its record's fixed fields
SAMPLE_BYTES = 512


def _require_sample_budget(n_prompts: int, cfg: EvalConfig) -> None:
    """prompts x K x strategies samples must fit in memory as records and keys (exit 2 naming K otherwise)."""
    from trustlab.runtime.workload import require_memory

    n = n_prompts * cfg.sampling.k * len(cfg.strategies)
    require_memory(f"{n_prompts} prompt(s) x K={cfg.sampling.k} x {len(cfg.strategies)} strategies = {n} samples",
                   n * SAMPLE_BYTES, hint="lower -k or --limit (the paper uses K=5)")


def claim_run(cfg: EvalConfig, out: str | Path, resume: bool = True) -> None:
    """Claim (or resume) ``out`` for ``cfg``'s eval run now, before a caller writes sub-runs into it (the demo's
    baselines and benign run): a foreign folder or another config is refused before any work, not after it."""
    _open(cfg, out, "eval", resume).close()


def _attach(path: Path, verb: str):
    from trustlab.runtime.rundir import RunDir

    return RunDir.attach(path, LAB, verb, of=RUN_VERBS)


def _interrupted(path: Path, verb: str) -> Interrupted:
    from trustlab.runtime.rundir import resume_command

    return Interrupted(f"{verb} interrupted; every finished record is saved in {path}",
                       hint=f"resume with: {resume_command(out=path)}")


def generations_store(path: Path, cfg: EvalConfig) -> RecordStore:  # stamped with the generating model too
    model = {"model": m} if (m := (_read_run_json(path, required=False) or {}).get("model")) else {}
    return open_store(path / GENERATIONS, {**generation_identity(cfg), **model})


def labels_store(path: Path, cfg: EvalConfig) -> RecordStore:
    return open_store(path / LABELS, generation_identity(cfg), labels=True)


# --- generate --------------------


def _preflight(backend, cfg: EvalConfig) -> None:
    """Checks before any generation: forced strategies need a local renderer (and /v1/completions on servers)."""
    forced = any(s in FORCED for s in cfg.strategies)
    if forced or not getattr(backend, "prefers_chat", False):
        from .backends.base import messages_for

        backend.render(messages_for("ping", cfg.backend.system_prompt))
    probe = getattr(backend, "probe", None)
    if probe is not None:
        probe(completions=forced)
    tok = getattr(backend, "tokenizer", None)
    fmt = cfg.thinking.think_format
    if tok is not None and fmt.think_start and hasattr(tok, "get_vocab"):
        vocab = tok.get_vocab()
        missing = [t for t in (fmt.think_start, fmt.think_end) if t and t not in vocab]
        if missing:
            warnings.warn(f"think tag(s) {', '.join(missing)} are not vocabulary tokens of {cfg.backend.model!r}; "
                          "they are plain text to this model", stacklevel=3)


def generate(cfg: EvalConfig, out: Optional[str | Path] = None, resume: bool = True, backend: Any = None,
             verb: str = "generate", check_failures: bool = True) -> GenerateResult:
    """Generate K samples per prompt for every strategy into ``out/generations.jsonl`` (resumable). With
    ``check_failures``, a run where no generation succeeded or more than ``failures.FAIL_SHARE`` failed raises a
    BackendError (exit 4) after everything is written."""
    from trustlab.runtime.progress import progress

    from .backends.base import make_backend
    from .datasets import load_prompts
    from .thinking import GenRecord, generate_samples

    t0, run = time.perf_counter(), _open(cfg, out, verb, resume)
    prompts = load_prompts(cfg.dataset, cfg.limit, cfg.start, cfg.shard, prompt_column=cfg.prompt_column,
                           category_column=cfg.category_column, id_column=cfg.id_column, encoding=cfg.encoding)
    _require_sample_budget(len(prompts), cfg)
    own = backend is None
    if own:
        backend = make_backend(cfg.backend, think_format=cfg.thinking.think_format)
    n_new = 0
    try:
        model = backend_identity(backend)  # refused when the run's records came from another model
        require_same_model(run.path, (_read_run_json(run.path, required=False) or {}).get("model"), model)
        _write_run_json(run.path, cfg, "generating", model=model)
        store = generations_store(run.path, cfg)
        wider = {r.get("prompt_id") for r in store.latest()} - {p.prompt_id for p in prompts}
        if wider:  # an extent is only ever added to: metrics cover every record the run holds
            warnings.warn(f"{str(run.path)!r} also holds records of {len(wider)} prompt(s) outside this call's "
                          "--limit/--start/--shard (an earlier, wider call); they stay in the run and its metrics",
                          stacklevel=2)
        _preflight(backend, cfg)
        for strategy in cfg.strategies:
            done = store.done_keys(redo=is_failure if cfg.retry_errors else None)
            total = sum(1 for p in prompts for j in range(cfg.sampling.k) if f"{strategy}/{p.prompt_id}#{j}" not in done)
            gen = generate_samples(backend, prompts, cfg.thinking_for(strategy), cfg.sampling, skip=done,
                                   system_prompt=cfg.backend.system_prompt)
            for rec in progress(gen, description=f"generate {strategy}", total=total):
                store.append([rec.to_dict()])
                n_new += 1
    except KeyboardInterrupt:
        raise _interrupted(run.path, verb) from None
    finally:
        if own:
            backend.close()
    latest = [GenRecord.from_dict(r) for r in store.latest()]
    n_err = sum(r.status != "ok" for r in latest)
    tokens = sum(r.tokens for r in latest)
    run.event("generated", n_new=n_new, n_records=len(latest), n_errors=n_err)
    _write_run_json(run.path, cfg, "generated")
    if n_err:
        warnings.warn(f"{n_err} generation(s) failed for good; they are stored as errors (no text), excluded "
                      f"from metrics; rerun with --retry-errors to try them again", stacklevel=2)
    failed = generation_failure(run.path, cfg) if check_failures else None
    if failed is not None:
        raise failed
    return GenerateResult(run.path, len(prompts), n_new, len(latest), n_err, tokens, time.perf_counter() - t0)


def generation_failure(path: Path, cfg: EvalConfig):
    """The exit-4 error of a run whose generations mostly failed (``failures.failure``), else None."""
    from .failures import failure

    return failure(generations_store(path, cfg).latest(), "generation(s)", path)


def label_failure(path: Path, labels: Sequence[str]):
    """The exit-4 error of the first judge (by label) whose labels mostly failed, else None."""
    from .failures import failure

    cfg = run_config(path)
    rows = labels_store(path, cfg).latest()
    for name in labels:
        err = failure([r for r in rows if r["judge"] == name], f"label(s) of judge {name}", path, error_key="raw")
        if err is not None:
            return err
    return None


# --- judge --------------------


def _judge_hash(spec: JudgeSpec) -> str:
    return config_hash(spec)


def make_judges(specs: Sequence[JudgeSpec], backend_factory: Optional[Callable[[BackendConfig], Any]] = None,
                check: bool = True) -> list[tuple[JudgeSpec, Any]]:
    """(spec, judge) pairs, each pre-flight checked (API keys, reachability) before any work starts."""
    from .judges import make_judge

    judges = []
    for spec in specs:
        j = make_judge(spec, backend_factory)
        if check:
            j.check()
        judges.append((spec, j))
    return judges


def judge(run_dir: str | Path, judges: Optional[Sequence[JudgeSpec]] = None, parts: Optional[Sequence[str]] = None,
          retry_errors: bool = False, backend_factory: Optional[Callable[[BackendConfig], Any]] = None,
          chunk: int = 64, made: Optional[list] = None, check_failures: bool = True) -> JudgeResult:
    """Label every ok generation's parts with every judge into ``labels.jsonl`` (resumable, per judge and part).

    A label records its judge's settings hash: judging again under the same judge name with other settings is
    refused, naming them."""
    from trustlab.runtime.progress import progress

    from .judges import JudgeItem
    from .thinking import judged_text

    path = Path(run_dir)
    run = _attach(path, "judge")
    cfg = run_config(path)
    specs = tuple(judges) if judges is not None else cfg.judges
    parts = tuple(parts) if parts is not None else cfg.parts
    gens = [g for g in generations_store(path, cfg).latest() if g.get("status", "ok") == "ok"]
    store = labels_store(path, cfg)
    existing = store.latest()
    made = made if made is not None else make_judges(specs, backend_factory)
    n_new, by_status = 0, {}
    try:
        for spec, jd in made:
            h = _judge_hash(spec)
            clash = next((r for r in existing if r["judge"] == spec.label and r.get("judge_hash") != h), None)
            if clash is not None:
                old = clash.get("judge_spec") or {}
                diff = config_diff(old, to_dict(spec)) if old else []
                raise ConfigError(f"labels of judge {spec.label!r} in {str(path)!r} were made with other settings; "
                                  f"differing keys: {', '.join(diff) or 'unknown'}",
                                  hint="pass another options.label for the new settings, or delete labels.jsonl")
            done = {label_key(r) for r in existing if r["judge"] == spec.label
                    and (not retry_errors or r.get("status") != "error")}
            todo = [(g, part) for g in gens for part in parts
                    if f"{g['strategy']}/{g['key']}|{spec.label}|{part}" not in done]
            for start in progress(range(0, len(todo), chunk), description=f"judge {spec.label}",
                                  total=(len(todo) + chunk - 1) // chunk):
                batch = todo[start:start + chunk]
                items = [JudgeItem(prompt=g["prompt"], text=judged_text(g, part, cfg.thinking),
                                   context=g.get("context") or None) for g, part in batch]
                verdicts = jd.judge(items)
                labels = [{"key": g["key"], "strategy": g["strategy"], "prompt_id": g["prompt_id"],
                           "sample": g["sample"], "judge": spec.label, "part": part, **v.to_label(),
                           "judge_hash": h, "judge_spec": to_dict(spec)} for (g, part), v in zip(batch, verdicts)]
                store.append(labels)
                n_new += len(labels)
                for lab in labels:
                    by_status[lab["status"]] = by_status.get(lab["status"], 0) + 1
    except KeyboardInterrupt:
        raise _interrupted(path, "judge") from None
    finally:
        for _, jd in made:
            jd.close()
        run.close()
    failed = label_failure(path, [spec.label for spec, _ in made]) if check_failures else None
    if failed is not None:
        raise failed  # the labels are written; a judge whose requests mostly failed is exit 4
    return JudgeResult(path, n_new, len(store.latest()), by_status)



def _reference(path: Optional[str]) -> Optional[list[dict]]:
    if path is None:
        return None
    from trustlab.runtime.files import at_path

    if not Path(path).is_file():
        raise DataError(f"reference file {path!r} does not exist", hint="pass a JSONL of {key, strategy, unsafe}")
    with at_path(path, "reference file"):
        rows = read_jsonl(path, repair=False)
    for i, r in enumerate(rows):
        if "key" not in r or not isinstance(r.get("unsafe"), bool):
            raise DataError(f"line {i + 1} of reference file {path!r} needs 'key' and a boolean 'unsafe'",
                            hint='e.g. {"key": "p1#0", "strategy": "default", "unsafe": true}')
    return rows


def metrics(run_dir: str | Path, tie: Optional[str] = None, bootstrap: Optional[int] = None,
            primary: Optional[str] = None, reference: Optional[str] = None, report: bool = True,
            verb: str = "metrics", extra: Optional[dict] = None) -> MetricsResult:
    """Recompute ``results.json`` from the run's files (generations and labels), with plots and the report."""
    from .summary import summarize

    path = Path(run_dir)
    run = _attach(path, verb)
    cfg = run_config(path)
    tie = tie or cfg.tie
    n_boot = cfg.bootstrap if bootstrap is None else bootstrap
    gens = generations_store(path, cfg).latest()
    labels = labels_store(path, cfg).latest()
    if not gens:
        raise DataError(f"run {str(path)!r} holds no generations", hint="run `trustlab safety generate` first")
    summary = summarize(gens, labels, k=cfg.sampling.k, tie=tie, n_boot=n_boot, seed=cfg.sampling.seed,
                        primary=primary or cfg.primary, reference=_reference(reference or cfg.reference))
    for w in summary.get("warnings", []):
        warnings.warn(w, stacklevel=2)
    run.config, run.seed = cfg, cfg.sampling.seed
    artifacts = _plots(summary, gens, labels, path)
    info = _read_run_json(path)
    res = run.write_results(summary, artifacts, schema=RESULTS_SCHEMA, fingerprint=info.get("fingerprint"),
                            model=info.get("model"), versions=info.get("versions"), **(extra or {}))
    rep = _report(path) if report else None
    run.close()
    return MetricsResult(path, res, summary, rep)


def _plots(summary: dict, gens: list, labels: list, path: Path) -> list[Path]:
    from .plots import make_plots

    try:
        return [Path(p) for p in make_plots(summary, gens, labels, path / "plots")]
    except Exception as exc:  # the metrics are already computed: a failed figure must not lose them
        warnings.warn(f"plotting failed ({type(exc).__name__}: {exc}); results.json is complete, plots are "
                      "missing", stacklevel=3)
        return []


def _report(path: Path) -> Optional[Path]:
    from trustlab.report import render

    from .report import report_section

    md, _ = render(path, sections={LAB: report_section})
    return md


def run_eval(cfg: EvalConfig, out: Optional[str | Path] = None, resume: bool = True, backend: Any = None,
             backend_factory: Optional[Callable[[BackendConfig], Any]] = None,
             extra: Optional[dict] = None) -> EvalResult:
    """generate -> judge -> metrics (+ report). Judges are built and checked before any generation."""
    made = make_judges(cfg.judges, backend_factory)
    g = generate(cfg, out, resume, backend, verb="eval", check_failures=False)
    j = judge(g.run_dir, cfg.judges, cfg.parts, cfg.retry_errors, backend_factory, made=made, check_failures=False)
    m = metrics(g.run_dir, verb="eval", extra=extra)
    _write_run_json(g.run_dir, cfg, "done")
    failed = generation_failure(g.run_dir, cfg) or label_failure(g.run_dir, [s.label for s, _ in made])
    if failed is not None:
        raise failed  # results.json and the report hold what succeeded
    return EvalResult(g.run_dir, g, j, m)
