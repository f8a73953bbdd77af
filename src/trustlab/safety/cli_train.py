"""`trustlab safety build` and `trustlab safety sft`: thin commands over ``build.build_safechain`` and
``sft.finetune`` (parse flags -> config -> call inside a RunDir -> short table). No torch import at module level.

``sft`` runs unchanged under ``accelerate launch -m trustlab.cli.main safety sft ...``: only the main process
(``RANK`` 0) opens the run folder and writes the results.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import tempfile
from pathlib import Path
from typing import Optional

import typer

from trustlab.runtime.cli_options import config_option, out_option, resume_option, seed_option, threads_option
from trustlab.runtime.errors import ConfigError, DataError

from .cli_config import _OPT, _SHARED, build_config

# the generation and judging flags build shares with generate/eval (their options live in cli.py)
BUILD_SHARED = ("model", "backend", "base_url", "tokenizer", "chat_template", "system_prompt", "script", "dataset",
                "prompt_column", "category_column", "id_column", "encoding", "strategy", "think_format",
                "think_budget", "max_extensions", "answer_max_tokens", "preset", "k", "temperature", "top_p", "top_k",
                "max_tokens", "seed", "batch_size", "concurrency", "threads", "timeout", "max_retries", "device",
                "trust_remote_code", "out", "resume", "judge", "judge_backend", "judge_model", "judge_base_url",
                "refusal_list")
BUILD_OWN = dict(
    config=(Optional[Path], config_option(None, help="BuildConfig YAML; flags override it.")),
    n=(Optional[int], typer.Option(None, "--n", help="Prompts sampled from the pool (seeded; default all).")),
    part=(Optional[str], typer.Option(None, "--part", help="Part judged: response (default), thought or answer.")),
    require_closed=(Optional[bool], typer.Option(None, "--require-closed/--allow-unclosed",
                                                 help="Pick only samples whose thought closed (default on).")),
    format=(Optional[str], typer.Option(None, "--format", help="messages (chat JSONL, default) | alpaca.")),
    output=(Optional[str], typer.Option(None, "--output", help="Dataset file (default OUT/safechain.jsonl).")),
)


def _signature(fn, own: dict, shared: dict, annotations: dict):
    params = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann)
              for n, (ann, opt) in own.items()]
    params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=shared[n], annotation=annotations[n])
               for n in BUILD_SHARED]
    fn.__signature__ = inspect.Signature(params)
    return fn


def _is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def build_config_from_flags(o: dict):
    """BuildConfig from an optional YAML (``--config``) with the generation/judging flags applied on top."""
    from trustlab.runtime.config import dump_yaml, load_config

    from .build import BuildConfig
    from .config import EvalConfig

    bcfg = load_config(BuildConfig, o["config"]) if o.get("config") else BuildConfig()
    seed_eval = EvalConfig(backend=bcfg.backend, dataset=bcfg.dataset, prompt_column=bcfg.prompt_column,
                           category_column=bcfg.category_column, id_column=bcfg.id_column, encoding=bcfg.encoding,
                           strategies=(bcfg.strategy,), thinking=bcfg.thinking,
                           sampling=dataclasses.replace(bcfg.sampling, seed=bcfg.seed), judges=(bcfg.judge,))
    with tempfile.TemporaryDirectory() as tmp:
        dump_yaml(seed_eval, Path(tmp) / "seed.yaml")
        flags = {k: o.get(k) for k in BUILD_SHARED if k not in ("out", "resume")}
        ecfg = build_config(config=Path(tmp) / "seed.yaml", **flags)
    if len(ecfg.strategies) != 1:
        raise ConfigError(f"build uses one strategy, got {', '.join(ecfg.strategies)}",
                          hint="pass --strategy once (default, zerothink, lessthink or morethink)")
    if len(ecfg.judges) != 1:
        raise ConfigError(f"build uses one judge, got {', '.join(j.label for j in ecfg.judges)}",
                          hint="pass --judge once")
    changes = {k: o[k] for k in ("n", "part", "require_closed", "format", "output") if o.get(k) is not None}
    return dataclasses.replace(bcfg, backend=ecfg.backend, dataset=ecfg.dataset, prompt_column=ecfg.prompt_column,
                               category_column=ecfg.category_column, id_column=ecfg.id_column,
                               encoding=ecfg.encoding, strategy=ecfg.strategies[0], thinking=ecfg.thinking,
                               sampling=ecfg.sampling, judge=ecfg.judges[0], seed=ecfg.sampling.seed, **changes)


def build_cmd(**o) -> None:
    """Build a SafeChain-style dataset: K samples per prompt, keep the prompts judged safe in all K, one pick each."""
    from trustlab.runtime import configure_threads
    from trustlab.runtime.rundir import RunDir, default_run_path

    from .build import STATS, build_safechain

    cfg = build_config_from_flags(o)
    configure_threads(cfg.backend.threads)
    out = Path(o["out"]) if o.get("out") else default_run_path("safety", "build", root="runs/safety")
    run = RunDir.open(out, "safety", "build", config=cfg, seed=cfg.seed, resume=o["resume"])
    stats = build_safechain(cfg, run.path, resume=o["resume"])
    data, root = Path(stats.output).resolve(), run.path.resolve()
    arts = [STATS] + ([data.relative_to(root)] if data.is_relative_to(root) else [])
    run.write_results(stats.to_dict(), artifacts=[str(a) for a in arts])
    typer.echo(f"{'pool':>6} {'sampled':>8} {'K':>3} {'kept':>6} {'keep rate (=Safe@K)':>20} {'safe rate':>10}")
    rate = "—" if stats.keep_rate is None else f"{stats.keep_rate:.3f}"
    safe = "—" if stats.safe_rate is None else f"{stats.safe_rate:.3f}"
    typer.echo(f"{stats.n_pool:>6} {stats.n_sampled:>8} {stats.k:>3} {stats.n_kept:>6} {rate:>20} {safe:>10}")
    typer.echo(f"dropped: {stats.n_dropped_unsafe} unsafe, {stats.n_dropped_incomplete} incomplete, "
               f"{stats.n_dropped_unclosed} unclosed; wrote {stats.output}")
    if stats.n_kept == 0:
        raise DataError(f"the build kept 0 of {stats.n_sampled} prompts (judge {stats.judge} on {stats.part}: "
                        f"safe rate {safe}); {run.path / STATS} holds the counts",
                        hint="use more prompts (--n), another judge, or --allow-unclosed for non-reasoning models")


def sft_cmd(data: Optional[str] = typer.Option(None, "--data", help="Chat or alpaca JSONL (trustlab safety build)."),
            model: Optional[str] = typer.Option(None, "--model", help="Base model: registry name, folder or hub id."),
            out: Optional[Path] = out_option(None, help="Run folder (default runs/safety/safety-sft-<UTC>)."),
            config: Optional[Path] = config_option(None, help="SFTConfig YAML; flags override it."),
            lora: Optional[bool] = typer.Option(None, "--lora/--full", help="LoRA (peft) or full fine-tuning."),
            epochs: Optional[int] = typer.Option(None, "--epochs", help="Passes over the data (default 2)."),
            max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Cap on optimizer steps."),
            lr: Optional[float] = typer.Option(None, "--lr", help="Default 1e-5 (full) or 2e-4 (LoRA)."),
            max_len: Optional[int] = typer.Option(None, "--max-len", help="Longer examples are dropped and counted."),
            batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Examples per device step (default 1)."),
            grad_accum: Optional[int] = typer.Option(None, "--grad-accum",
                                                     help="Steps accumulated per optimizer step (default 1)."),
            lora_r: Optional[int] = typer.Option(None, "--lora-r", help="LoRA rank (default 16)."),
            lora_alpha: Optional[int] = typer.Option(None, "--lora-alpha", help="LoRA scaling alpha (default 32)."),
            lora_dropout: Optional[float] = typer.Option(None, "--lora-dropout", help="LoRA dropout (default 0.05)."),
            warmup_ratio: Optional[float] = typer.Option(None, "--warmup-ratio",
                                                         help="Share of the steps spent warming up (default 0.03)."),
            schedule: Optional[str] = typer.Option(None, "--schedule", help="cosine | linear | constant_with_warmup."),
            think_format: Optional[str] = typer.Option(None, "--think-format", help="r1 | skyt1 | none."),
            chat_template: Optional[str] = typer.Option(None, "--chat-template", help="Jinja template file."),
            system_prompt: Optional[str] = typer.Option(None, "--system-prompt",
                                                        help="System prompt put in every training chat (none)."),
            device: Optional[str] = typer.Option(None, "--device", help="auto | cpu | cuda."),
            mixed_precision: Optional[str] = typer.Option(None, "--mixed-precision", help="no | bf16 | fp16."),
            seed: Optional[int] = seed_option(None, help="Seed of the data order and init (default 0)."),
            threads: Optional[int] = threads_option(None),
            resume: bool = resume_option(help="Refuse a run folder holding another config (default) or start afresh."),
            eval_dataset: Optional[str] = typer.Option(None, "--eval-dataset",
                                                       help="Evaluate base and tuned model on this set (before/after)."),
            eval_limit: int = typer.Option(6, "--eval-limit", help="Prompts of the before/after evaluation."),
            eval_max_tokens: int = typer.Option(128, "--eval-max-tokens",
                                                help="Generation budget of the before/after evaluation.")) -> None:
    """Fine-tune on a SafeChain-style dataset (full or LoRA), optionally with a before/after safety evaluation.
    Multi-GPU: accelerate launch -m trustlab.cli.main safety sft ..."""
    from trustlab.runtime import configure_threads
    from trustlab.runtime.config import load_config
    from trustlab.runtime.rundir import RunDir, default_run_path

    from .config import think_format as preset
    from .sft import SMOLLM2, SFTConfig, before_after, export_merged, finetune

    configure_threads(threads)
    cfg = load_config(SFTConfig, config) if config is not None else SFTConfig()
    out = out or (Path(cfg.out) if config is not None else default_run_path("safety", "sft", root="runs/safety"))
    changes = dict(data=data, model=model, lora=lora, epochs=epochs, max_steps=max_steps, lr=lr, max_len=max_len,
                   batch_size=batch_size, grad_accum=grad_accum, lora_r=lora_r, lora_alpha=lora_alpha,
                   lora_dropout=lora_dropout, warmup_ratio=warmup_ratio, schedule=schedule,
                   chat_template=chat_template, system_prompt=system_prompt, device=device,
                   mixed_precision=mixed_precision, seed=seed, out=str(out))
    changes = {k: v for k, v in changes.items() if v is not None}
    if think_format is not None:
        changes["think_format"] = preset(think_format)
    try:
        cfg = SFTConfig(**{**dataclasses.asdict(cfg), "think_format": cfg.think_format, **changes})
    except TypeError as exc:
        raise ConfigError(f"bad sft option: {exc}") from None
    if cfg.model is None:  # the documented default, written into the run's config
        cfg = dataclasses.replace(cfg, model=SMOLLM2)
    if data is None and config is None:
        raise ConfigError("sft needs a dataset", hint="pass --data FILE.jsonl (made by trustlab safety build)")
    run = RunDir.open(out, "safety", "sft", config=cfg, seed=cfg.seed, resume=resume) if _is_main() else None
    res = finetune(cfg)
    if run is None:
        return
    extra = {}
    if eval_dataset:
        tuned = export_merged(res.out)
        base = res.base_model.name_or_path or cfg.model  # evaluated where the run loaded it from
        extra["before_after"] = before_after(base, tuned, eval_dataset, res.out / "eval", eval_limit, eval_max_tokens,
                                             cfg.seed)
    from .plots import sft_plots

    plots = sft_plots(res.out / "train_log.jsonl", extra.get("before_after"), run.path / "plots")
    metrics = {"n_examples": res.n_examples, "n_dropped_too_long": res.n_dropped_too_long, "steps": res.steps,
               "loss_before": res.loss_before, "loss_after": res.loss_after, "final_loss": res.final_loss,
               "wall_s": res.wall_s, "lora": res.lora}
    run.write_results(metrics, artifacts=["sft.json", "train_log.jsonl", *[str(p) for p in plots]],
                      model=res.base_model.to_dict(), **extra)
    typer.echo(f"{'examples':>9} {'dropped':>8} {'steps':>6} {'loss before':>12} {'loss after':>11} {'wall s':>7}")
    typer.echo(f"{res.n_examples:>9} {res.n_dropped_too_long:>8} {res.steps:>6} {res.loss_before:>12.4f} "
               f"{res.loss_after:>11.4f} {res.wall_s:>7.1f}")
    typer.echo(f"wrote {res.model_dir} and {run.path / 'results.json'}")


def register(app: typer.Typer) -> None:
    """Add ``build`` and ``sft`` to the safety sub-app."""
    anns = dict(_SHARED)
    app.command("build")(_signature(build_cmd, BUILD_OWN, _OPT, anns))
    app.command("sft")(sft_cmd)


__all__ = ["register", "build_cmd", "sft_cmd", "build_config_from_flags"]
