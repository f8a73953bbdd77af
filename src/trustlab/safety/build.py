"""SafeChain-style dataset builder: sample prompts, generate K samples each, judge them, keep the all-safe prompts.

1. Sample ``n`` prompts from the pool (seeded, uniform, pool order kept).
2. Generate ``K`` samples each (default: the ``nondet`` preset, t=0.6, top_p=0.95, K=5).
3. Judge the ``response`` part.
4. Keep a prompt iff all ``K`` samples are judged safe, so ``keep_rate`` (kept among complete prompts, before the
   closed-thought filter) equals Safe@K of the same labels.
5. Pick one sample with ``Random(derive_seed(seed, prompt_id))``; with ``require_closed`` (default) only samples
   whose thought closed are candidates, and a prompt without any is dropped (``n_dropped_unclosed``).
6. Write chat JSONL with the think tags restored: ``opening + thought + think_end + "\\n\\n" + answer``
   (``format="alpaca"`` drops the leading opening, like the published SafeChain set).

The drawn prompts are ``<out>/prompts.jsonl``; samples and labels live in ``<out>/samples`` (an ordinary, resumable
generation run folder).
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Sequence

from trustlab.runtime.validate import check_types, require_choice, require_range

from .config import PARTS, BackendConfig, JudgeSpec, Sampling, ThinkFormat, Thinking, sampling_preset
from .metrics import part_safe

SAMPLES = "samples"
STATS = "build_stats.json"


@dataclass(frozen=True)
class BuildConfig:
    """What to build from: the generator (``backend``, ``thinking``, ``sampling``), the prompt pool (``dataset`` and
    its column options), how many prompts (``n``; None = all), the judge and part, and the output format."""

    backend: BackendConfig = field(default_factory=BackendConfig)
    dataset: str = "strongreject-small"
    prompt_column: Optional[str] = None
    category_column: Optional[str] = None
    id_column: Optional[str] = None
    encoding: str = "utf-8"
    n: Optional[int] = None
    strategy: str = "default"
    thinking: Thinking = field(default_factory=Thinking)
    sampling: Sampling = field(default_factory=lambda: sampling_preset("nondet"))
    judge: JudgeSpec = field(default_factory=JudgeSpec)
    part: str = "response"
    require_closed: bool = True
    format: Literal["messages", "alpaca"] = "messages"
    output: Optional[str] = None
    seed: int = 0

    def __post_init__(self):
        check_types(self, "build")
        if self.n is not None:
            require_range("build.n", self.n, 1, None)
        require_choice("build.part", self.part, PARTS)
        require_range("build.seed", self.seed, 0, None)
        dataclasses.replace(self.thinking, strategy=self.strategy)  # a forced strategy needs think tags


@dataclass(frozen=True)
class BuildStats:
    n_pool: int
    n_sampled: int
    k: int
    n_kept: int
    keep_rate: Optional[float]
    n_dropped_unsafe: int
    n_dropped_incomplete: int
    n_dropped_unclosed: int
    completion_tokens: int
    safe_rate: Optional[float]
    judge: str
    part: str
    output: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def restore(thought: str, answer: str, fmt: ThinkFormat, style: str = "messages") -> str:
    """The assistant turn with its tags back: ``opening + thought + think_end + "\\n\\n" + answer`` (answer tags
    too, when the format has them); ``alpaca`` drops the leading opening."""
    if not fmt.has_thoughts:
        return answer
    ans = f"{fmt.answer_start}{answer}{fmt.answer_end}" if fmt.answer_start or fmt.answer_end else answer
    body = f"{thought}{fmt.think_end}\n\n{ans}"
    return body if style == "alpaca" else fmt.opening + body


def select_examples(gens: Sequence[Mapping[str, Any]], labels: Sequence[Mapping[str, Any]], k: int, judge: str,
                    part: str, seed: int, fmt: ThinkFormat, require_closed: bool = True, style: str = "messages",
                    system_prompt: Optional[str] = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(examples, counts) from one strategy's generation and label records: keep the prompts whose K samples are
    all generated and judged safe; pick one sample per kept prompt deterministically."""
    from trustlab.runtime.seeding import derive_seed

    by_prompt: dict[str, dict[int, Mapping[str, Any]]] = {}
    for g in gens:
        by_prompt.setdefault(str(g["prompt_id"]), {})[int(g["sample"])] = g
    lab = {str(r["key"]): r for r in labels if r.get("judge") == judge and r.get("part") == part}
    examples: list[dict[str, Any]] = []
    n = dict(unsafe=0, incomplete=0, unclosed=0, complete=0, all_safe=0, safe_samples=0)
    for pid, samples in by_prompt.items():
        recs = [samples.get(j) for j in range(k)]
        verdicts = [part_safe(r, lab[r["key"]], part)  # a truncated sample's answer never counts as safe
                    if r is not None and r.get("status", "ok") == "ok" and r["key"] in lab else None for r in recs]
        if any(v is None for v in verdicts):
            n["incomplete"] += 1
            continue
        n["complete"] += 1
        n["safe_samples"] += sum(verdicts)
        if not all(verdicts):
            n["unsafe"] += 1
            continue
        n["all_safe"] += 1
        candidates = [r for r in recs if r.get("closed") or not require_closed]
        if not candidates:
            n["unclosed"] += 1
            continue
        pick = random.Random(derive_seed(seed, pid)).choice(candidates)
        text = restore(pick.get("thought") or "", pick.get("answer") or "", fmt, style)
        meta = {"prompt_id": pid, "category": pick.get("category", ""), "sample": pick["sample"]}
        if style == "alpaca":
            examples.append({"instruction": pick["prompt"], "input": "", "output": text, **meta})
        else:
            msgs = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
                {"role": "user", "content": pick["prompt"]}, {"role": "assistant", "content": text}]
            examples.append({"messages": msgs, **meta})
    return examples, n


def _write_jsonl_atomic(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def eval_config(cfg: BuildConfig, prompts_file: Path):
    """The EvalConfig of the sampling run: one strategy, one judge, one part, no bootstrap."""
    from .config import EvalConfig

    return EvalConfig(backend=cfg.backend, dataset=f"file:{prompts_file}", prompt_column="prompt",
                      category_column="category", id_column="prompt_id", strategies=(cfg.strategy,),
                      thinking=dataclasses.replace(cfg.thinking, strategy=cfg.strategy),
                      sampling=dataclasses.replace(cfg.sampling, seed=cfg.seed), judges=(cfg.judge,),
                      parts=(cfg.part,), bootstrap=0)


def build_safechain(cfg: BuildConfig, out: str | Path, resume: bool = True, backend: Any = None,
                    backend_factory: Any = None) -> BuildStats:
    """Run the builder into folder ``out``: ``samples/`` (generations and labels), the dataset (``cfg.output`` or
    ``out/safechain.jsonl``) and ``build_stats.json``. A build that keeps nothing still writes its stats."""
    from trustlab.runtime.io import write_json_atomic

    from . import pipeline
    from .datasets import load_prompts

    out = Path(out)
    pool = load_prompts(cfg.dataset, prompt_column=cfg.prompt_column, category_column=cfg.category_column,
                        id_column=cfg.id_column, encoding=cfg.encoding)
    chosen = sorted(random.Random(cfg.seed).sample(range(len(pool)), cfg.n)) if cfg.n and cfg.n < len(pool) \
        else list(range(len(pool)))
    prompts_file = out / "prompts.jsonl"  # beside samples/, which is a generation run folder of its own
    rows = [{"prompt_id": pool[i].prompt_id, "prompt": pool[i].prompt, "category": pool[i].category}
            for i in chosen]
    _write_jsonl_atomic(prompts_file, rows)
    ecfg = eval_config(cfg, prompts_file)
    made = pipeline.make_judges(ecfg.judges, backend_factory)
    gen = pipeline.generate(ecfg, out / SAMPLES, resume, backend, verb="build")
    pipeline.judge(gen.run_dir, ecfg.judges, ecfg.parts, False, backend_factory, made=made)
    ids = {r["prompt_id"] for r in rows}  # a resumed folder may hold samples of an earlier draw
    gens = [g for g in pipeline.generations_store(gen.run_dir, ecfg).latest() if g["prompt_id"] in ids]
    labels = [r for r in pipeline.labels_store(gen.run_dir, ecfg).latest() if r["prompt_id"] in ids]
    examples, n = select_examples(gens, labels, cfg.sampling.k, cfg.judge.label, cfg.part, cfg.seed,
                                  cfg.thinking.think_format, cfg.require_closed, cfg.format,
                                  cfg.backend.system_prompt)
    output = Path(cfg.output) if cfg.output else out / "safechain.jsonl"
    _write_jsonl_atomic(output, examples)
    complete = n["complete"]
    stats = BuildStats(n_pool=len(pool), n_sampled=len(rows), k=cfg.sampling.k, n_kept=len(examples),
                       keep_rate=n["all_safe"] / complete if complete else None, n_dropped_unsafe=n["unsafe"],
                       n_dropped_incomplete=n["incomplete"], n_dropped_unclosed=n["unclosed"],
                       completion_tokens=int(sum(int(g.get("think_tokens") or 0) + int(g.get("answer_tokens") or 0)
                                                 for g in gens)),
                       safe_rate=n["safe_samples"] / (complete * cfg.sampling.k) if complete else None,
                       judge=cfg.judge.label, part=cfg.part, output=str(output))
    write_json_atomic(out / STATS, stats.to_dict())
    return stats
