"""The configuration layer of ``trustlab safety``: flags (and ``--config`` YAML) -> ``EvalConfig``, and the shared
option set of generate / eval / build. Used by ``cli.py`` and ``cli_train.py``. No torch import at module level."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional

import typer

from trustlab.runtime.cli_options import config_option, out_option, resume_option, seed_option, threads_option
from trustlab.runtime.errors import ConfigError


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
              answer_max_tokens=o.get("answer_max_tokens"), intervention_text=o.get("intervention_text"),
              intervention_marker=o.get("intervention_marker"))
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
        config=config_option(None, help="EvalConfig YAML; flags override it."),
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
        strategy=typer.Option(None, "--strategy", help="default | zerothink | lessthink | morethink | intervention "
                                                       "(repeatable)."),
        intervention_text=typer.Option(None, "--intervention-text",
                                       help="Thinking Intervention: text placed at the start of the thought "
                                            "(default: ours, see docs/safety.md)."),
        intervention_marker=typer.Option(None, "--intervention-marker",
                                         help="Thinking Intervention: place the text after the first occurrence "
                                              "of this string in the thought instead of at its start."),
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
        seed=seed_option(None, help="Run seed; each (prompt, sample) gets its own derived seed (default 0)."),
        batch_size=typer.Option(None, "--batch-size", help="Prompts per generate call, in-process backends (default 8)."),
        concurrency=typer.Option(None, "--concurrency", help="Requests in flight, openai backend (default 32)."),
        threads=threads_option(None, help="Torch/BLAS threads of this process (default 1)."),
        timeout=typer.Option(None, "--timeout", help="Seconds per HTTP request, openai backend (default 600)."),
        max_retries=typer.Option(None, "--max-retries",
                                 help="Retries of a failed request (429, 5xx, timeout) with backoff (default 6)."),
        device=typer.Option(None, "--device", help="auto | cpu | cuda | cuda:N (in-process backends)."),
        trust_remote_code=typer.Option(None, "--trust-remote-code/--no-trust-remote-code",
                                       help="Run the model repository's own Python code (off by default)."),
        out=out_option(None, help="Run folder (default runs/safety/safety-<verb>-<UTC time>)."),
        resume=resume_option(help="Resume the run folder (default) or start afresh."),
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
               answer_max_tokens=Optional[int], intervention_text=Optional[str], intervention_marker=Optional[str], preset=Optional[str], k=Optional[int],
               temperature=Optional[float], top_p=Optional[float], top_k=Optional[int], max_tokens=Optional[int],
               seed=Optional[int], batch_size=Optional[int], concurrency=Optional[int], threads=Optional[int],
               timeout=Optional[float], max_retries=Optional[int], device=Optional[str],
               trust_remote_code=Optional[bool], out=Optional[Path], resume=bool, retry_errors=bool,
               judge=Optional[List[str]], judge_backend=Optional[str], judge_model=Optional[str],
               judge_base_url=Optional[List[str]], refusal_list=Optional[str], parts=Optional[str],
               primary=Optional[str], bootstrap=Optional[int], tie=Optional[str], reference=Optional[str])
