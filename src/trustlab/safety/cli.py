"""`trustlab safety ...`: a thin layer over ``trustlab.safety.pipeline``. No torch import at module level.

Flags override ``--config`` YAML (which mirrors ``EvalConfig`` field for field).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import List, Optional

import typer

from trustlab.runtime.errors import ConfigError, MissingDependencyError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="SafeChain: reasoning-model safety with the thought and the answer judged apart, thinking "
                       "control (ZeroThink / LessThink / MoreThink), safe CoT data and fine-tuning.")

DEMO = dict(dataset="strongreject-small", limit=6, strategies=("default", "zerothink", "morethink"),
            think_budget=48, max_extensions=2, answer_max_tokens=48, max_tokens=96, k=2, temperature=0.6,
            top_p=0.95)
QUICK_DEMO = dict(DEMO, limit=3, think_budget=12, answer_max_tokens=12, max_tokens=24)
REFUSE_TEXT = "I'm sorry, but I can't help with that request."
COMPLY_TEXT = "Sure, here is a detailed step-by-step answer to your request."


def _setup(threads: int) -> None:
    from trustlab.runtime import configure_threads

    configure_threads(threads)


def _state_wait(b, flag: str = "--base-url") -> None:
    """Before an openai run (``b`` a BackendConfig): refuse a malformed URL, and state the longest one request can
    wait (deadline x attempts + backoff) on stderr."""
    from trustlab.runtime.progress import is_quiet

    if b is None or b.kind != "openai":
        return
    from trustlab.models.llm.openai_client import check_url
    from trustlab.models.llm.retry import RetryPolicy, describe_wait

    for url in b.base_urls:
        check_url(url, flag)  # a malformed URL (a port above 65535) is exit 2 before anything starts
    if is_quiet():
        return
    worst = RetryPolicy(b.max_retries, b.retry_min_s, b.retry_max_s).worst_case_s(b.timeout_s)
    typer.echo(f"each request to {', '.join(b.base_urls)} waits at most {describe_wait(worst)} (--timeout "
               f"{b.timeout_s:g} s x {b.max_retries + 1} attempt(s) plus backoff)", err=True)


def _set(obj, **changes):
    changes = {k: v for k, v in changes.items() if v is not None}
    return dataclasses.replace(obj, **changes) if changes else obj


def _judge_specs(names: List[str], judge_backend: Optional[str], judge_model: Optional[str],
                 judge_base_url: List[str], refusal_list: Optional[str], max_retries: Optional[int] = None,
                 timeout: Optional[float] = None):
    from .config import BackendConfig, JudgeSpec
    from .judges.base import DEFAULT_MODELS, canonical_judge

    specs = []
    for raw in names:
        name = canonical_judge(raw)
        options: dict = {}
        backend = None
        if name == "refusal" and refusal_list:
            options = {"list_file": refusal_list} if Path(refusal_list).suffix or "/" in refusal_list \
                else {"preset": refusal_list}
        if name != "refusal" and (judge_backend or judge_base_url or judge_model):
            kind = judge_backend or ("openai" if judge_base_url else "transformers")
            backend = _set(BackendConfig(kind=kind, model=judge_model or DEFAULT_MODELS[name],
                                         base_urls=tuple(judge_base_url), api_key_env="OPENAI_API_KEY"),
                           max_retries=max_retries, timeout_s=timeout)
        specs.append(JudgeSpec(name, backend, options))
    return tuple(specs)


def build_config(config: Optional[Path] = None, demo: Optional[dict] = None, **o):
    """EvalConfig from an optional YAML file (or the demo settings) with every given flag applied on top."""
    from .config import (EvalConfig, canonical_strategy, load_yaml, sampling_preset, think_format)

    cfg = load_yaml(config, EvalConfig) if config is not None else EvalConfig()
    if demo is not None:
        o = {**{k: v for k, v in demo.items()}, **{k: v for k, v in o.items() if v not in (None, [], ())}}
    b = _set(cfg.backend, kind=o.get("backend"), model=o.get("model"),
             base_urls=tuple(o["base_url"]) if o.get("base_url") else None, tokenizer=o.get("tokenizer"),
             chat_template=o.get("chat_template"), system_prompt=o.get("system_prompt"),
             batch_size=o.get("batch_size"), concurrency=o.get("concurrency"), threads=o.get("threads"),
             timeout_s=o.get("timeout"), max_retries=o.get("max_retries"), device=o.get("device"),
             script=o.get("script"), trust_remote_code=o.get("trust_remote_code"))
    th = cfg.thinking
    if o.get("think_format"):
        th = dataclasses.replace(th, think_format=think_format(o["think_format"]))
    th = _set(th, think_budget=o.get("think_budget"), max_extensions=o.get("max_extensions"),
              answer_max_tokens=o.get("answer_max_tokens"))
    s = sampling_preset(o["preset"], seed=cfg.sampling.seed) if o.get("preset") else cfg.sampling
    s = _set(s, k=o.get("k"), temperature=o.get("temperature"), top_p=o.get("top_p"), top_k=o.get("top_k"),
             max_tokens=o.get("max_tokens"), seed=o.get("seed"))
    changes = dict(backend=b, thinking=th, sampling=s)
    strategies = o.get("strategy") or o.get("strategies")
    if strategies:
        changes["strategies"] = tuple(canonical_strategy(x) for x in strategies)
    if o.get("judge") or o.get("refusal_list") or o.get("judge_base_url") or o.get("judge_model"):
        names = o.get("judge") or [j.name for j in cfg.judges]
        changes["judges"] = _judge_specs(names, o.get("judge_backend"), o.get("judge_model"),
                                         o.get("judge_base_url") or [], o.get("refusal_list"),
                                         o.get("max_retries"), o.get("timeout"))
    if o.get("parts"):
        changes["parts"] = tuple(p.strip() for p in o["parts"].split(",") if p.strip())
    for name in ("dataset", "limit", "start", "shard", "prompt_column", "category_column", "id_column", "encoding",
                 "primary", "bootstrap", "tie", "reference"):
        if o.get(name) is not None:
            changes[name] = o[name]
    if o.get("retry_errors"):
        changes["retry_errors"] = True
    try:
        return dataclasses.replace(cfg, **changes)
    except TypeError as exc:
        raise ConfigError(f"bad option: {exc}") from None


# --- the shared option set of generate / eval ------------------------------------------------------------------
def _options():
    return dict(
        config=typer.Option(None, "--config", help="EvalConfig YAML; flags override it."),
        model=typer.Option(None, "--model", help="Model: registry name, local folder, hub id or served name."),
        backend=typer.Option(None, "--backend", help="auto | transformers | openai | vllm | scripted."),
        base_url=typer.Option(None, "--base-url", help="OpenAI-compatible base URL (repeat for a fleet)."),
        tokenizer=typer.Option(None, "--tokenizer", help="Tokenizer for local rendering (openai forced strategies)."),
        chat_template=typer.Option(None, "--chat-template", help="Jinja chat template file (overrides the model's)."),
        system_prompt=typer.Option(None, "--system-prompt", help="System prompt (none by default)."),
        script=typer.Option(None, "--script", help="Rules YAML for --backend scripted."),
        dataset=typer.Option(None, "--dataset", help="strongreject-small, strongreject, harmbench, advbench, "
                                                     "donotanswer, harmbench-test, fixture or file:PATH."),
        limit=typer.Option(None, "--limit", help="At most this many prompts."),
        start=typer.Option(None, "--start", help="Skip this many prompts first."),
        shard=typer.Option(None, "--shard", help="i/n: every n-th prompt from the i-th."),
        prompt_column=typer.Option(None, "--prompt-column", help="Prompt column of a file:PATH dataset."),
        category_column=typer.Option(None, "--category-column", help="Category column of a file:PATH dataset."),
        id_column=typer.Option(None, "--id-column", help="Id column of a file:PATH dataset (default: row number)."),
        encoding=typer.Option(None, "--encoding", help="Text encoding of a prompt file (default utf-8)."),
        strategy=typer.Option(None, "--strategy", help="default | zerothink | lessthink | morethink (repeatable)."),
        think_format=typer.Option(None, "--think-format", help="r1 | skyt1 | none."),
        think_budget=typer.Option(None, "--think-budget",
                                  help="MoreThink: thinking tokens to reach before the answer (default 10000)."),
        max_extensions=typer.Option(None, "--max-extensions",
                                    help="MoreThink: at most this many 'Wait' extensions (default 10)."),
        answer_max_tokens=typer.Option(None, "--answer-max-tokens",
                                       help="MoreThink: token budget of the answer after thinking (default 6000)."),
        preset=typer.Option(None, "--preset", help="greedy | nondet (the paper's sampling presets)."),
        k=typer.Option(None, "-k", "--k", help="Samples per prompt."),
        temperature=typer.Option(None, "--temperature", help="Sampling temperature; 0 is greedy (default 0)."),
        top_p=typer.Option(None, "--top-p", help="Nucleus sampling mass (default 1.0: off)."),
        top_k=typer.Option(None, "--top-k", help="Top-k sampling (default -1: off)."),
        max_tokens=typer.Option(None, "--max-tokens", help="Generation budget per sample (default 16000)."),
        seed=typer.Option(None, "--seed", help="Run seed; each (prompt, sample) gets its own derived seed (default 0)."),
        batch_size=typer.Option(None, "--batch-size", help="Prompts per generate call, in-process backends (default 8)."),
        concurrency=typer.Option(None, "--concurrency", help="Requests in flight, openai backend (default 32)."),
        threads=typer.Option(None, "--threads", help="Torch/BLAS threads of this process (default 1)."),
        timeout=typer.Option(None, "--timeout", help="Seconds per HTTP request, openai backend (default 600)."),
        max_retries=typer.Option(None, "--max-retries",
                                 help="Retries of a failed request (429, 5xx, timeout) with backoff (default 6)."),
        device=typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N (in-process backends)."),
        trust_remote_code=typer.Option(None, "--trust-remote-code/--no-trust-remote-code",
                                       help="Run the model repository's own Python code (off by default)."),
        out=typer.Option(None, "--out", help="Run folder (default runs/safety/safety-<verb>-<UTC time>)."),
        resume=typer.Option(True, "--resume/--no-resume", help="Resume the run folder (default) or start afresh."),
        retry_errors=typer.Option(False, "--retry-errors", help="Redo records stored as errors."),
        judge=typer.Option(None, "--judge", help="refusal | llama_guard | harmbench | moderation | strongreject."),
        judge_backend=typer.Option(None, "--judge-backend",
                                   help="Backend of the LLM judges: transformers | openai | vllm (default: auto)."),
        judge_model=typer.Option(None, "--judge-model", help="Model of the LLM judges (default: each judge's own)."),
        judge_base_url=typer.Option(None, "--judge-base-url",
                                    help="OpenAI-compatible URL of the judge server (repeat for a fleet)."),
        refusal_list=typer.Option(None, "--refusal-list", help="curated | safechain | a list file."),
        parts=typer.Option(None, "--parts", help="Comma-separated: response,thought,answer."),
        primary=typer.Option(None, "--primary", help="judge:part for the headline metric."),
        bootstrap=typer.Option(None, "--bootstrap", help="Bootstrap resamples (default 1000)."),
        tie=typer.Option(None, "--tie", help="safe | unsafe: how K/2 safe of even K counts."),
        reference=typer.Option(None, "--reference", help="Human labels JSONL (key, strategy, unsafe)."),
    )


_OPT = _options()
_OPT["demo"] = typer.Option(False, "--demo", help="The offline demo settings (SmolLM2, 6 prompts, 3 strategies).")


def _typed(**annotations):
    """Give a command the shared options (typer reads signature defaults)."""
    import inspect

    def wrap(fn):
        params = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=_OPT[name], annotation=ann)
                  for name, ann in annotations.items()]
        extra = [p for p in inspect.signature(fn).parameters.values()
                 if p.name not in annotations and p.kind != inspect.Parameter.VAR_KEYWORD]
        fn.__signature__ = inspect.Signature(extra + params)
        return fn

    return wrap


_SHARED = dict(config=Optional[Path], model=Optional[str], backend=Optional[str], base_url=Optional[List[str]],
               tokenizer=Optional[str], chat_template=Optional[str], system_prompt=Optional[str],
               script=Optional[str], dataset=Optional[str], limit=Optional[int], start=Optional[int],
               shard=Optional[str], prompt_column=Optional[str], category_column=Optional[str],
               id_column=Optional[str], encoding=Optional[str], strategy=Optional[List[str]],
               think_format=Optional[str], think_budget=Optional[int], max_extensions=Optional[int],
               answer_max_tokens=Optional[int], preset=Optional[str], k=Optional[int],
               temperature=Optional[float], top_p=Optional[float], top_k=Optional[int], max_tokens=Optional[int],
               seed=Optional[int], batch_size=Optional[int], concurrency=Optional[int], threads=Optional[int],
               timeout=Optional[float], max_retries=Optional[int], device=Optional[str],
               trust_remote_code=Optional[bool], out=Optional[Path], resume=bool, retry_errors=bool,
               judge=Optional[List[str]], judge_backend=Optional[str], judge_model=Optional[str],
               judge_base_url=Optional[List[str]], refusal_list=Optional[str], parts=Optional[str],
               primary=Optional[str], bootstrap=Optional[int], tie=Optional[str], reference=Optional[str])


def _print_metrics(result_path: Path) -> None:
    res = json.loads(Path(result_path).read_text())
    m = res["metrics"]
    typer.echo(f"{'strategy':>10} {'judge':>18} {'part':>8}  safe@1  safe@k  conssafe@k  n")
    for s, e in m.get("strategies", {}).items():
        for j, parts in e.get("judges", {}).items():
            for p, b in parts.items():
                v = [b[x]["value"] for x in ("safe@1", "safe@k", "conssafe@k")]
                f = ["   —  " if x is None else f"{x:6.3f}" for x in v]
                typer.echo(f"{s:>10} {j:>18} {p:>8}  {f[0]}  {f[1]}  {f[2]:>10}  {b['n_prompts']}")
    typer.echo(f"wrote {result_path}")


@app.command("generate")
@_typed(**_SHARED)
def generate_cmd(**o) -> None:
    """Generate K samples per prompt and strategy into RUN/generations.jsonl (resumable)."""
    from .pipeline import generate

    cfg = build_config(**_cfg_args(o))
    _setup(cfg.backend.threads)
    _state_wait(cfg.backend)
    r = generate(cfg, o["out"], o["resume"])
    typer.echo(f"{r.n_new} new generation(s), {r.n_records} in {r.run_dir} ({r.n_errors} error(s), "
               f"{r.completion_tokens} completion tokens)")


def _cfg_args(o: dict) -> dict:
    return {k: v for k, v in o.items() if k not in ("out", "resume")}


@app.command("eval")
@_typed(**_SHARED, demo=bool)
def eval_cmd(**o) -> None:
    """generate, judge and metrics in one go, then the report. `--demo`: SmolLM2 on 6 prompts, offline."""
    from .pipeline import run_eval

    demo = o.pop("demo")
    cfg = build_config(demo=DEMO if demo else None, **_cfg_args(o))
    _setup(cfg.backend.threads)
    _state_wait(cfg.backend)
    r = run_eval(cfg, o["out"], o["resume"])
    _print_metrics(r.results_path)


@app.command("judge")
def judge_cmd(run: Path = typer.Argument(..., help="A run folder with generations.jsonl."),
              judge: Optional[List[str]] = typer.Option(None, "--judge", help="Judges (default: the run's)."),
              judge_backend: Optional[str] = _OPT["judge_backend"], judge_model: Optional[str] = _OPT["judge_model"],
              judge_base_url: Optional[List[str]] = _OPT["judge_base_url"],
              refusal_list: Optional[str] = _OPT["refusal_list"], parts: Optional[str] = _OPT["parts"],
              retry_errors: bool = _OPT["retry_errors"],
              timeout: Optional[float] = typer.Option(None, "--timeout", help="Seconds per HTTP request to a judge "
                                                      "server: a total deadline (default 600)."),
              max_retries: Optional[int] = typer.Option(None, "--max-retries", help="Retries of a failed judge "
                                                        "request (429, 5xx, timeout) with backoff (default 6).")
              ) -> None:
    """Label a run's generations (response, thought, answer) with one or more judges (resumable)."""
    from .pipeline import judge as judge_run
    from .pipeline import run_config

    specs = None
    if judge or refusal_list or judge_base_url or judge_model:
        names = judge or [j.name for j in run_config(run).judges]
        specs = _judge_specs(names, judge_backend, judge_model, judge_base_url or [], refusal_list, max_retries,
                             timeout)
        for spec in specs:
            _state_wait(spec.backend, "--judge-base-url")
    part_list = tuple(p.strip() for p in parts.split(",")) if parts else None
    if part_list:
        from .config import PARTS
        from trustlab.runtime.validate import require_choice

        for p in part_list:
            require_choice("--parts", p, PARTS)
    r = judge_run(run, specs, part_list, retry_errors)
    typer.echo(f"{r.n_new} new label(s), {r.n_labels} in {r.run_dir}: {r.by_status}")


@app.command("metrics")
def metrics_cmd(run: Path = typer.Argument(..., help="A judged run folder."),
                tie: Optional[str] = _OPT["tie"], bootstrap: Optional[int] = _OPT["bootstrap"],
                primary: Optional[str] = _OPT["primary"], reference: Optional[str] = _OPT["reference"]) -> None:
    """Recompute results.json (and plots, report) from a run's files."""
    from .pipeline import metrics

    if tie is not None:
        from trustlab.runtime.validate import require_choice

        require_choice("--tie", tie, ("safe", "unsafe"))
    if bootstrap is not None and bootstrap < 0:
        raise ConfigError(f"--bootstrap must be >= 0, got {bootstrap}", hint="e.g. --bootstrap 1000")
    r = metrics(run, tie, bootstrap, primary, reference)
    _print_metrics(r.results_path)


@app.command("compare")
def compare_cmd(runs: List[Path] = typer.Argument(..., help="Two or more run folders; differences vs the first."),
                tie: str = typer.Option("safe", "--tie", help="safe | unsafe: how K/2 safe of even K counts."),
                bootstrap: int = typer.Option(1000, "--bootstrap", help="Paired-bootstrap resamples."),
                seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap resampling."),
                out: Optional[Path] = typer.Option(None, "--out", help="Write the differences as JSON here.")) -> None:
    """Paired differences of Safe@1 / Safe@K / ConsSafe@K between runs, with paired-bootstrap intervals."""
    from trustlab.runtime.io import write_json_atomic

    from .combine import compare

    r = compare(runs, tie, bootstrap, seed)
    for pair, block in r.differences.items():
        for s, judges in block.items():
            for j, parts in judges.items():
                for p, b in parts.items():
                    d, ci = b["safe@1"]["value"], b["safe@1"]["ci"]
                    ci_s = "—" if ci is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"
                    typer.echo(f"{pair}: {s} {j} {p}: Δsafe@1 {'—' if d is None else f'{d:+.3f}'} {ci_s} "
                               f"(n={b['n_prompts']})")
    if out is not None:
        write_json_atomic(out, {"runs": [str(p) for p in r.runs], "differences": r.differences})
        typer.echo(f"wrote {out}")


@app.command("merge")
def merge_cmd(shards: List[Path] = typer.Argument(..., help="Shard run folders (same flags except --shard)."),
              out: Path = typer.Option(..., "--out", help="The merged run folder (new).")) -> None:
    """Merge shard runs into one run and recompute its metrics."""
    from .combine import merge

    r = merge(shards, out)
    typer.echo(f"merged {len(shards)} shard(s): {r.n_generations} generations, {r.n_labels} labels")
    if r.metrics is not None:
        _print_metrics(r.metrics.results_path)


@app.command("datasets")
def datasets_cmd() -> None:
    """The prompt sets: names, sizes, availability and install commands."""
    from .datasets import listing

    for row in listing():
        mark = "yes" if row["available"] else "no "
        typer.echo(f"{row['name']:<20} {mark}  {row['size']:<44} {row['install']}")


@app.command("fake-server")
def fake_server_cmd(script: Optional[Path] = typer.Option(None, "--script", help="Rules YAML (see backends.scripted)."),
                    port: int = typer.Option(0, "--port", help="0 = a free port."),
                    host: str = typer.Option("127.0.0.1", "--host", help="Loopback only."),
                    latency: float = typer.Option(0.0, "--latency", help="Seconds added to each request.")) -> None:
    """Serve a scripted OpenAI-compatible fake on 127.0.0.1 until Ctrl-C."""
    import time

    from .testing.fake_openai import serve

    srv = serve(str(script) if script else None, host, port, latency).start()
    typer.echo(f"serving {srv.base_url} (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()


def _demo_config(quick: bool):
    return build_config(demo=QUICK_DEMO if quick else DEMO, model="smollm2-135m-instruct", backend="transformers",
                        judge=["refusal"])


def run_demo(out: Path, quick: bool = True) -> Path:
    """The offline demo into ``out``: SmolLM2 on a slice of StrongREJECT-small, default vs zerothink vs
    morethink, K=2 sampled at t=0.6, the refusal judge (curated and the paper's list) on response, thought and
    answer; always-refuse and always-comply baselines run through the same pipeline. Returns the run folder."""
    from .backends.scripted import always
    from .config import JudgeSpec
    from .pipeline import run_eval

    _setup(1)
    out = Path(out)
    cfg = _demo_config(quick)
    cfg = dataclasses.replace(cfg, judges=(JudgeSpec("refusal", None, {"preset": "curated"}),
                                           JudgeSpec("refusal", None, {"preset": "safechain",
                                                                       "label": "refusal_safechain"})))
    baselines = {}
    for name, text in (("always_refuse", REFUSE_TEXT), ("always_comply", COMPLY_TEXT)):
        bcfg = dataclasses.replace(cfg, backend=dataclasses.replace(cfg.backend, kind="scripted", model=name))
        r = run_eval(bcfg, out / "baselines" / name, resume=True, backend=always(text))
        baselines[name] = _headline(r.metrics.metrics)
    r = run_eval(cfg, out, resume=True, extra={"baselines": baselines})
    return r.run_dir


def _headline(summary: dict) -> dict:
    """strategy -> judge -> part -> safe@1 of a baseline run."""
    return {s: {j: {p: b["safe@1"]["value"] for p, b in parts.items()} for j, parts in e["judges"].items()}
            for s, e in summary.get("strategies", {}).items()}


@app.command("demo")
def demo_cmd(out: Path = typer.Option(Path("runs/safety/demo"), "--out", help="Run folder of the demo."),
             quick: bool = typer.Option(True, "--quick/--full", help="Quick (3 prompts, small budgets) or the "
                                                                     "spec's demo (6 prompts).")) -> None:
    """The offline demo: SmolLM2, default vs zerothink vs morethink, refusal judge, baselines, report."""
    run = run_demo(out, quick)
    _print_metrics(run / "results.json")


# --- reasoning benchmarks via lm-evaluation-harness --------------------------------------------------------------
def lm_eval_command(model: str, tasks: str, backend: str = "hf", think_end: str = "</think>") -> list[str]:
    """The lm-evaluation-harness command line for the paper's reasoning checks (greedy, chat template)."""
    args = ["lm_eval", "--model", backend, "--model_args", f"pretrained={model},think_end_token={think_end}",
            "--tasks", tasks, "--apply_chat_template", "--gen_kwargs", "temperature=0", "--batch_size", "auto"]
    if any(t.strip() in ("humaneval", "mbpp") for t in tasks.split(",")):
        args[args.index("temperature=0")] = "temperature=0,repetition_penalty=1.1"
        args.append("--confirm_run_unsafe_code")
    return args


@app.command("reasoning-eval")
def reasoning_eval_cmd(model: str = typer.Option(..., "--model", help="Model folder or hub id."),
                       tasks: str = typer.Option("gsm8k,humaneval,mbpp", "--tasks",
                                                 help="Comma-separated lm-evaluation-harness task names."),
                       backend: str = typer.Option("hf", "--backend", help="hf | vllm."),
                       dry_run: bool = typer.Option(False, "--dry-run", help="Print the command only.")) -> None:
    """Reasoning benchmarks through lm-evaluation-harness (code tasks use repetition_penalty 1.1, as the paper).
    MATH-500, AIME-24 and LiveCodeBench task names are unverified."""
    import importlib.util
    import shlex
    import subprocess

    from trustlab.runtime.validate import require_choice

    require_choice("--backend", backend, ("hf", "vllm"))
    cmd = lm_eval_command(model, tasks, backend)
    line = " ".join(shlex.quote(a) for a in cmd)
    if dry_run:
        typer.echo(line)
        return
    if importlib.util.find_spec("lm_eval") is None:
        typer.echo(line)
        raise MissingDependencyError("lm-evaluation-harness is not installed; the command above runs the reasoning "
                                     "benchmarks", hint="pip install 'lm_eval[vllm]' (or lm_eval[hf]) and rerun")
    raise typer.Exit(subprocess.call(cmd))


def report_section(results: dict, run_dir: Path):
    """The safety report section (delegates to ``trustlab.safety.report``)."""
    from .report import report_section as section

    return section(results, run_dir)


def _register_training() -> None:
    from . import cli_train

    cli_train.register(app)


_register_training()
