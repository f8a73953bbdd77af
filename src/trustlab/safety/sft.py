"""Supervised fine-tuning on SafeChain-style data: full or LoRA (peft), on the fine-tuning core's one loop
(``trustlab.models.finetune``: encode, collate, masked CE, ``fit``) over ``accelerate``.

Each example renders only the prompt (``[system?] + user`` through the chat template with
``add_generation_prompt=True``), then appends the raw target and EOS; prompt positions get label -100, so the loss
falls on the target alone. The whole conversation is never rendered (R1 templates delete assistant thinking), and
the opening ``<think>\\n`` is stripped from the target when the rendered prompt already ends with it (no doubled
tag). The same code runs as a plain function, under ``trustlab safety sft`` and under
``accelerate launch -m trustlab.cli.main safety sft ...``: only the main process writes files.

Defaults (the paper's were not retrieved): 2 epochs, cosine schedule with 3% warm-up, max_len 4096, lr 1e-5 (full)
or 2e-4 (LoRA r=16, alpha=32, dropout 0.05, all linear layers).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

from trustlab.models.finetune import IGNORE, collate, encode
from trustlab.runtime.errors import DataError, ModelError
from trustlab.runtime.validate import check_types, require_range

from .config import ThinkFormat

SMOLLM2 = "smollm2-135m-instruct"  # the model the CLI fine-tunes when none is named


@dataclass(frozen=True)
class SFTConfig:
    """Fine-tuning settings; ``lr=None`` means 1e-5 for full fine-tuning and 2e-4 for LoRA. ``max_steps`` (optimizer
    steps) caps ``epochs`` when set."""

    data: str = "safechain.jsonl"
    model: Optional[str] = None  # what the CLI loads (None: smollm2-135m-instruct); a model passed is its own identity
    out: str = "runs/safety-sft"
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str = "all-linear"
    epochs: int = 2
    max_steps: Optional[int] = None
    lr: Optional[float] = None
    warmup_ratio: float = 0.03
    schedule: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    weight_decay: float = 0.0
    batch_size: int = 1
    grad_accum: int = 1
    max_len: int = 4096
    think_format: ThinkFormat = field(default_factory=ThinkFormat)
    system_prompt: Optional[str] = None
    chat_template: Optional[str] = None
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    save: bool = True

    def __post_init__(self):
        check_types(self, "sft")
        require_range("sft.lora_r", self.lora_r, 1, None)
        require_range("sft.lora_alpha", self.lora_alpha, 1, None)
        require_range("sft.lora_dropout", self.lora_dropout, 0.0, 1.0, hi_open=True)
        require_range("sft.epochs", self.epochs, 1, None)
        if self.max_steps is not None:
            require_range("sft.max_steps", self.max_steps, 1, None)
        if self.lr is not None:
            require_range("sft.lr", self.lr, 0.0, 1.0, lo_open=True)
        require_range("sft.warmup_ratio", self.warmup_ratio, 0.0, 1.0)
        require_range("sft.weight_decay", self.weight_decay, 0.0, None)
        require_range("sft.batch_size", self.batch_size, 1, None)
        require_range("sft.grad_accum", self.grad_accum, 1, None)
        require_range("sft.max_len", self.max_len, 8, None)
        require_range("sft.seed", self.seed, 0, None)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (2e-4 if self.lora else 1e-5)


@dataclass(frozen=True)
class SFTResult:
    out: Path
    model_dir: Path
    n_examples: int
    n_dropped_too_long: int
    steps: int
    loss_before: float
    loss_after: float
    final_loss: float
    wall_s: float
    lora: bool
    base_model: Any = None  # ModelIdentity of the base, read from the object before training


# --------------------------------------------------------------------------------------------- data
def read_examples(path: str | Path) -> list[tuple[list[dict], str]]:
    """(prompt messages, target) pairs from a chat JSONL (``{"messages": [..., {"role": "assistant", ...}]}``) or an
    alpaca JSONL (``instruction``, ``input``, ``output``). A bad line is a DataError naming its line number."""
    from trustlab.runtime.files import read_text

    out = []
    text = read_text(path, what="SFT data file")
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not valid JSON ({exc.msg})", hint="each line must be one JSON object") from None
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}",
                            hint='write {"messages": [...]} or {"instruction": ..., "output": ...} per line')
        if "messages" in rec:
            msgs = rec["messages"]
            if (not isinstance(msgs, list) or len(msgs) < 2 or not all(isinstance(m, dict) for m in msgs)
                    or msgs[-1].get("role") != "assistant" or not all(isinstance(m.get("content"), str) for m in msgs)):
                raise DataError(f"{where}: 'messages' must be a list of {{role, content}} ending with the assistant",
                                hint='e.g. {"messages": [{"role": "user", "content": "..."}, '
                                     '{"role": "assistant", "content": "..."}]}')
            out.append(([{"role": m["role"], "content": m["content"]} for m in msgs[:-1]], msgs[-1]["content"]))
        elif "instruction" in rec and "output" in rec:
            if not all(isinstance(rec.get(k, ""), str) for k in ("instruction", "input", "output")):
                raise DataError(f"{where}: instruction, input and output must be strings", hint="check the line")
            prompt = rec["instruction"] + (f"\n\n{rec['input']}" if rec.get("input") else "")
            out.append(([{"role": "user", "content": prompt}], rec["output"]))
        else:
            raise DataError(f"{where}: no 'messages' and no 'instruction'/'output' fields (found "
                            f"{', '.join(sorted(rec)) or 'none'})", hint="write chat or alpaca JSONL "
                                                                        "(trustlab safety build --format ...)")
    if not out:
        raise DataError(f"SFT data file {str(path)!r} holds no examples", hint="build one with trustlab safety build")
    return out


def encode_example(tok, prompt_messages: Sequence[dict], target: str, fmt: ThinkFormat,
                   system_prompt: Optional[str] = None) -> tuple[list[int], list[int]]:
    """(input_ids, labels): rendered prompt + target + EOS, prompt positions labelled -100.

    The opening is stripped from the target when the prompt already ends with it; an alpaca target (which drops the
    leading ``think_start``) gets it back when the prompt does not end with it and the target closes a thought."""
    msgs = list(prompt_messages)
    if system_prompt and not any(m["role"] == "system" for m in msgs):
        msgs = [{"role": "system", "content": system_prompt}] + msgs
    try:
        prompt = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    except ValueError as exc:
        raise ModelError(f"the tokenizer has no usable chat template: {str(exc).splitlines()[0]}",
                         hint="pass --chat-template FILE") from None
    opening = fmt.opening
    if opening:
        if prompt.endswith(opening) and target.startswith(opening):
            target = target[len(opening):]
        elif (not prompt.endswith(opening) and not target.lstrip().startswith(fmt.think_start)
              and fmt.think_end in target):
            target = opening + target
    if tok.eos_token_id is None:
        raise ModelError("the tokenizer has no EOS token", hint="use a tokenizer with eos_token set")
    row = encode(tok(prompt, add_special_tokens=False)["input_ids"],
                 tok(target, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
    return list(row.input_ids), list(row.labels)


def encode_all(tok, examples, cfg: SFTConfig) -> tuple[list[tuple[list[int], list[int]]], int]:
    """Encoded examples and how many were dropped for exceeding ``max_len``."""
    kept, dropped = [], 0
    for msgs, target in examples:
        ids, labels = encode_example(tok, msgs, target, cfg.think_format, cfg.system_prompt)
        if len(ids) > cfg.max_len:
            dropped += 1
            continue
        kept.append((ids, labels))
    return kept, dropped


# --------------------------------------------------------------------------------------------- training
def _mean_loss(model, loader, acc) -> float:
    """Token-weighted mean loss of ``model`` over ``loader`` (all processes), without gradients."""
    import torch

    from trustlab.models.finetune import forward, token_loss

    model.eval()
    tot = torch.zeros(2, device=acc.device)
    with torch.no_grad():
        for batch in loader:
            loss = token_loss(*forward(model, batch, acc.device))
            n = (batch["labels"][:, 1:] != IGNORE).sum()
            tot += torch.stack([loss.detach().float() * n, n.float()])
    tot = acc.reduce(tot, reduction="sum")
    model.train()
    return float(tot[0] / tot[1].clamp(min=1))


def _load_model(cfg: SFTConfig):
    from trustlab.models import load_causal_lm

    model, tok = load_causal_lm(cfg.model or SMOLLM2)
    if cfg.chat_template:
        p = Path(cfg.chat_template)
        tok.chat_template = p.read_text(encoding="utf-8") if p.is_file() else cfg.chat_template
    return model, tok


def _fit_max_len(cfg: SFTConfig, model, tokenizer) -> int:
    """``max_len`` capped by the model's context (positions past it are not trained, they are noise); a cap below
    ``max_len`` is said once in a warning, and examples longer than the context are dropped and counted."""
    import warnings

    from trustlab.runtime.workload import model_context

    context = model_context(model, tokenizer)
    if context is None or context >= cfg.max_len:
        return cfg.max_len
    warnings.warn(f"sft.max_len {cfg.max_len} is more than the model's {context}-token context: examples longer "
                  f"than {context} tokens are dropped", stacklevel=3)
    return context


def finetune(cfg: SFTConfig, model=None, tokenizer=None) -> SFTResult:
    """Fine-tune ``cfg.model`` (or the given model and tokenizer) on ``cfg.data``; write ``cfg.out``/``adapter`` (LoRA)
    or ``model`` (full), ``sft.json`` and ``train_log.jsonl``. The loss is measured on the training examples before
    and after training."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from transformers import get_scheduler

    from trustlab.models.finetune import fit
    from trustlab.runtime.io import append_jsonl, write_json_atomic
    from trustlab.runtime.progress import progress

    t0 = time.perf_counter()
    # gradient accumulation is the core loop's: grad_accum micro-batches per step, each weighted 1 / grad_accum
    acc = Accelerator(cpu=cfg.device == "cpu", mixed_precision=cfg.mixed_precision)
    set_seed(cfg.seed)
    from trustlab.models.identity import check_request, model_identity

    examples = read_examples(cfg.data)
    if model is None or tokenizer is None:
        model, tokenizer = _load_model(cfg)
    base = model_identity(model)  # the base the adapter belongs to: recorded in sft.json, checked on reload
    check_request(base, cfg.model, "sft config")
    limit = _fit_max_len(cfg, model, tokenizer)
    encoded, dropped = encode_all(tokenizer, examples, dataclasses.replace(cfg, max_len=limit))
    if not encoded:
        raise DataError(f"all {len(examples)} examples of {cfg.data!r} are longer than {limit} tokens "
                        f"({'max_len' if limit == cfg.max_len else 'the model context'})",
                        hint="raise --max-len" if limit == cfg.max_len else
                        "shorten the examples or fine-tune a model with a longer context")
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                                                 lora_dropout=cfg.lora_dropout, target_modules=cfg.target_modules,
                                                 task_type="CAUSAL_LM"))
    model.train()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(encoded, batch_size=cfg.batch_size, shuffle=True, generator=gen,
                        collate_fn=lambda b: collate(b, pad, positions=False))
    eval_loader = DataLoader(encoded, batch_size=cfg.batch_size, shuffle=False,
                             collate_fn=lambda b: collate(b, pad, positions=False))
    per_epoch = math.ceil(len(loader) / cfg.grad_accum)
    total = cfg.max_steps or cfg.epochs * per_epoch
    epochs = math.ceil(total / per_epoch)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    sched = get_scheduler(cfg.schedule, opt, num_warmup_steps=math.ceil(cfg.warmup_ratio * total),
                          num_training_steps=total)
    model, opt, loader, eval_loader, sched = acc.prepare(model, opt, loader, eval_loader, sched)
    out = Path(cfg.out)
    log_path = out / "train_log.jsonl"
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        log_path.unlink(missing_ok=True)
    loss_before = _mean_loss(model, eval_loader, acc)
    losses: list[float] = []
    bar = iter(progress(range(total), "sft steps", total=total)) if acc.is_main_process else None
    epoch_of: dict[int, int] = {}

    def grouped():
        """grad_accum micro-batches per optimizer step (the last group of an epoch may be shorter), ``total`` in all."""
        n, group = 0, []
        for epoch in range(epochs):
            for i, batch in enumerate(loader):
                group.append((batch, 1.0 / cfg.grad_accum))
                if len(group) == cfg.grad_accum or i == len(loader) - 1:
                    n += 1
                    epoch_of[n] = epoch
                    yield group
                    group = []
                    if n >= total:
                        return

    def logged(step: int, value: float) -> None:
        losses.append(value)
        if acc.is_main_process:
            append_jsonl(log_path, [{"step": step, "epoch": epoch_of[step], "loss": value,
                                     "lr": sched.get_last_lr()[0]}])
            next(bar, None)

    # one loop for every fine-tune (trustlab.models.finetune.fit): token-weighted masked CE, the divergence guard
    # after each step (a diverged step stops the run before it is logged or any model is saved)
    step, _ = fit(model, opt, grouped(), lr=cfg.learning_rate, accelerator=acc, scheduler=sched, reduction="token",
                  what="fine-tuning", lr_name="sft.lr", on_step=logged)
    loss_after = _mean_loss(model, eval_loader, acc)
    acc.wait_for_everyone()
    model_dir = out / ("adapter" if cfg.lora else "model")
    if acc.is_main_process and cfg.save:
        acc.unwrap_model(model).save_pretrained(model_dir, safe_serialization=True)
        tokenizer.save_pretrained(model_dir)
    final = float(sum(losses[-10:]) / len(losses[-10:]))
    result = SFTResult(out=out, model_dir=model_dir, n_examples=len(encoded), n_dropped_too_long=dropped, steps=step,
                       loss_before=loss_before, loss_after=loss_after, final_loss=final,
                       wall_s=time.perf_counter() - t0, lora=cfg.lora, base_model=base)
    if acc.is_main_process:
        write_json_atomic(out / "sft.json", {
            "base_model": base.name_or_path or cfg.model, "base_identity": base.to_dict(),
            "n_examples": result.n_examples, "n_dropped_too_long": dropped,
            "epochs": cfg.epochs, "max_steps": cfg.max_steps, "steps": step, "lr": cfg.learning_rate,
            "lora": cfg.lora, "lora_r": cfg.lora_r if cfg.lora else None, "final_loss": final,
            "loss_before": loss_before, "loss_after": loss_after, "wall_s": result.wall_s,
            "num_processes": acc.num_processes, "model_dir": model_dir.name})
    acc.wait_for_everyone()
    return result


def load_finetuned(out: str | Path, base_model=None):
    """(model, tokenizer) from a finished ``finetune`` folder: the LoRA adapter attached to the base it was trained on
    (reloaded from the path ``sft.json``'s ``base_identity`` names, unless given), or the fully fine-tuned weights.
    A base whose weights are not the recorded ones (digest) is refused: ModelError (exit 2) naming both digests."""
    from trustlab.runtime.files import read_text

    out = Path(out)
    info = json.loads(read_text(out / "sft.json", what="SFT result file"))
    folder = out / info.get("model_dir", "adapter" if info.get("lora") else "model")
    if not folder.is_dir():
        raise ModelError(f"fine-tuned weights {str(folder)!r} are missing", hint="rerun trustlab safety sft")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if info.get("lora"):
        from peft import PeftModel

        from trustlab.models.identity import ModelIdentity, load_recorded, model_identity, require_same

        where, recorded = f"SFT run {str(out)!r}", info.get("base_identity")
        if base_model is None and recorded is not None:
            base_model, _ = load_recorded(recorded, where)
        elif base_model is None:  # a run written before identities were recorded: its name only
            from trustlab.models import load_causal_lm

            base_model, _ = load_causal_lm(info["base_model"])
        elif recorded is not None:
            require_same(ModelIdentity.from_dict(recorded, where), model_identity(base_model), where)
        return PeftModel.from_pretrained(base_model, folder).eval(), tok
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval(), tok


def export_merged(out: str | Path) -> Path:
    """A plain model folder of a finished run (``out/merged`` with the LoRA adapter merged in, or ``out/model``),
    loadable by any backend."""
    out = Path(out)
    model, tok = load_finetuned(out)
    if not hasattr(model, "merge_and_unload"):
        return out / "model"
    folder = out / "merged"
    model.merge_and_unload().save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def before_after(base_model: str, tuned: str | Path, dataset: str, out: str | Path, limit: Optional[int] = 6,
                 max_tokens: int = 128, seed: int = 0, judge: str = "refusal") -> dict[str, Any]:
    """Evaluate the base and the fine-tuned model on the same prompts (transformers backend, greedy, K=1, default
    strategy, ``judge`` on response/thought/answer) and their paired differences (after - before)."""
    from .config import BackendConfig, EvalConfig, JudgeSpec, Sampling
    from .combine import compare
    from .pipeline import run_eval

    out = Path(out)
    runs = {}
    for name, model in (("before", base_model), ("after", str(tuned))):
        cfg = EvalConfig(backend=BackendConfig(kind="transformers", model=model), dataset=dataset, limit=limit,
                         sampling=Sampling(max_tokens=max_tokens, seed=seed), judges=(JudgeSpec(judge),))
        runs[name] = run_eval(cfg, out / name)
    diff = compare([runs["before"].run_dir, runs["after"].run_dir], seed=seed)
    return {"before": runs["before"].metrics.metrics, "after": runs["after"].metrics.metrics,
            "differences": next(iter(diff.differences.values()), {}),
            "runs": {k: str(v.run_dir) for k, v in runs.items()}}
