"""`trustlab safety ...`: a thin layer over ``trustlab.safety.pipeline``. No torch import at module level.

Flags override ``--config`` YAML (which mirrors ``EvalConfig`` field for field).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from trustlab.runtime.cli_options import out_option, seed_option
from trustlab.runtime.errors import ConfigError, MissingDependencyError

from . import cli_train
from .demo import run_demo  # noqa: F401 - trustlab demo calls the lab's run_demo(out, quick)
from .cli_config import (_OPT, _SHARED, _judge_specs, _setup, _state_wait,  # noqa: F401 - re-exported
                         _typed, build_config)

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="SafeChain: reasoning-model safety with the thought and the answer judged apart, thinking "
                       "control (ZeroThink / LessThink / MoreThink), safe CoT data and fine-tuning.")

DEMO = dict(dataset="strongreject-small", limit=6, strategies=("default", "zerothink", "morethink"),
            think_budget=48, max_extensions=2, answer_max_tokens=48, max_tokens=96, k=2, temperature=0.6,
            top_p=0.95)


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
                seed: int = seed_option(0, help="Seed of the bootstrap resampling."),
                out: Optional[Path] = out_option(None, help="Write the differences as JSON here.")) -> None:
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
              out: Path = out_option(..., help="The merged run folder (new).")) -> None:
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

    from trustlab.models.llm.fake_server import serve

    srv = serve(str(script) if script else None, host, port, latency).start()
    typer.echo(f"serving {srv.base_url} (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()


@app.command("demo")
def demo_cmd(out: Path = out_option(Path("runs/safety/demo"), help="Run folder of the demo."),
             quick: bool = typer.Option(True, "--quick/--full", help="Quick (10 prompts, every category, K=2, 32 "
                                                                     "tokens, 8 benign: about 3 minutes on 2 cores) "
                                                                     "or full (30 prompts, K=3, 96 tokens, 30 benign).")
             ) -> None:
    """The offline demo: a non-reasoning stand-in (Qwen2.5-Coder-0.5B-Instruct) served by llama.cpp's
    OpenAI-compatible server; default / zerothink / morethink / intervention, refusal judge, baselines, report."""
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


@app.command("ls")
def ls_cmd() -> None:
    """List the generation backends and judges, one line each (built-in and entry-point ones)."""
    from trustlab.runtime.registry import format_listing

    from .backends.base import BACKENDS
    from .judges.base import REGISTRY

    format_listing("backends", BACKENDS.listing(), typer.echo)
    format_listing("judges", REGISTRY.listing(), typer.echo)


def report_section(results: dict, run_dir: Path):
    """The safety report section (delegates to ``trustlab.safety.report``)."""
    from .report import report_section as section

    return section(results, run_dir)


cli_train.register(app)
