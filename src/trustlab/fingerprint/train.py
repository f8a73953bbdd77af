"""Embedding fingerprints by fine-tuning the user's own model: ``embed(model, tokenizer, fps, cfg)``.

One full-batch optimizer step per epoch over N fingerprint examples (+ augmented copies) and
round(β/(1-β)·N) benign pairs: micro-batches of ``micro_batch_size`` per process, A = ceil(n/(mb·world))
accumulation steps, each micro-batch weighted by its share of the examples, so the accumulated gradient equals
the full-batch gradient of  L = (1/n) Σ_i mean-CE_i  (per-example mean over labelled tokens). AdamW (0.9, 0.999).
After every step ``WeightAveraging`` pulls θ ← (1-λ)θ + λθ0 toward the base. Stop rules are checked in eval mode
after each step (FP loss < ``early_stop_loss``, ``max_epochs``, or 100 % exact match for ``stop_after_full_match``
epochs). The step is ``trustlab.models.finetune.fit`` on ``accelerate.Accelerator`` (no ``.cuda()``, IO on the main
process), so it runs unchanged under ``accelerate launch`` (``configs/fingerprint/accelerate/``).

Run folder (``out_dir``): ``benign_pairs.jsonl``, ``train_log.jsonl``, ``checkpoints/last.pt`` (stamped: weights,
optimizer state with θ0, RNG, epoch, stop-rule state), ``model/`` (HF files + ``trustlab_fingerprint.json``),
``embed_result.json``. ``resume=True`` continues from the checkpoint and gives the weights of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from trustlab.runtime.config import config_hash, to_dict
from trustlab.runtime.errors import ConfigError, DataError
from trustlab.models.finetune import IGNORE, collate, evaluate, fit
from trustlab.runtime.finite import require_finite_step
from trustlab.runtime.io import append_jsonl, load_stamped, read_jsonl, save_stamped, write_json_atomic

from .config import EmbedConfig
from .dataset import Example, build_examples, benign_pairs, pair_example
from .fpset import FingerprintSet

PRESETS = {  # spec §5: full fine-tune, full batch, beta = 0.25; chosen from the model object, never from a name
    "smollm2": {"lr": 1e-3, "lambda_wa": 0.75, "max_epochs": 40},
    "tiny": {"lr": 3e-3, "lambda_wa": 0.15, "max_epochs": 200},
    "other": {"lr": 5e-5, "lambda_wa": 0.75, "max_epochs": 40},
}


# --- weight averaging ---------------------------------------------------------------------------------------
class WeightAveraging:
    """Wraps an optimizer: after every ``step()``, θ ← (1-λ)θ + λθ0 on the tensors the optimizer owns.

    θ0 is snapshotted just before a parameter's first update and kept in the wrapped optimizer's per-parameter
    state under ``"wa_theta0"``, so ``state_dict()`` / ``load_state_dict()`` checkpoint it (under DDP/FSDP/ZeRO these
    are the fp32 masters or shards the optimizer holds)."""

    KEY = "wa_theta0"

    def __init__(self, optimizer: Any, lam: float):
        if not 0.0 <= lam < 1.0:
            raise ConfigError(f"lambda_wa must lie in [0, 1), got {lam}", hint="set lambda_wa within [0, 1)")
        self.optimizer, self.lam = optimizer, float(lam)

    # the optimizer protocol, delegated
    @property
    def param_groups(self):
        return self.optimizer.param_groups

    @property
    def state(self):
        return self.optimizer.state

    @property
    def defaults(self):
        return self.optimizer.defaults

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self):
        return self.optimizer.state_dict()

    def load_state_dict(self, state):
        self.optimizer.load_state_dict(state)

    def add_param_group(self, group):
        self.optimizer.add_param_group(group)

    def step(self, closure: Optional[Callable] = None):
        import torch

        params = [p for g in self.param_groups for p in g["params"]]
        first = {p: p.detach().clone() for p in params if p.grad is not None and self.KEY not in self.state.get(p, {})}
        loss = self.optimizer.step(closure)
        with torch.no_grad():
            for p, theta0 in first.items():
                self.state[p][self.KEY] = theta0
            for p in params:
                theta0 = self.state.get(p, {}).get(self.KEY)
                if theta0 is not None and self.lam > 0:
                    p.mul_(1.0 - self.lam).add_(theta0.to(p.dtype), alpha=self.lam)
        return loss


def interpolate_(params, theta0, lam: float) -> None:
    """θ ← (1-λ)θ + λθ0 once (``wa_mode: final``)."""
    import torch

    with torch.no_grad():
        for p, t0 in zip(params, theta0):
            p.mul_(1.0 - lam).add_(t0.to(p.dtype), alpha=lam)


# --- presets ------------------------------------------------------------------------------------------------
def resolve_preset(cfg: EmbedConfig, model: Any, model_ref: str | None = None) -> tuple[EmbedConfig, str]:
    """Fill ``lr``, ``lambda_wa`` and ``max_epochs`` left as None from the model's preset (spec §5): the object's
    (``smollm2`` for SmolLM2-135M by architecture and parameter count, ``tiny`` under 5M parameters, else ``other``).
    ``model_ref`` / ``cfg.model`` are requests: naming another model is a warning naming both, nothing more."""
    from trustlab.models.identity import SMOLLM2, check_request, model_identity

    ident = model_identity(model)
    check_request(ident, model_ref or cfg.model, "embed config")
    name = {SMOLLM2: "smollm2", "tiny": "tiny"}.get(ident.family or "", "other")
    p = dict(PRESETS[name])
    lam = cfg.lambda_wa if cfg.lambda_wa is not None else p["lambda_wa"]
    p["lr"] = 1e-4 if name == "smollm2" and lam == 0 else p["lr"]  # spec §5: SmolLM2 without averaging
    return dataclasses.replace(cfg, lr=cfg.lr if cfg.lr is not None else p["lr"], lambda_wa=lam,
                               max_epochs=cfg.max_epochs if cfg.max_epochs is not None else p["max_epochs"]), name


# --- result -------------------------------------------------------------------------------------------------
@dataclass
class EmbedResult:
    """The fingerprinted model (LoRA merged unless ``adapter_only``) and how training went."""

    model: Any
    epochs: int
    converged: bool
    accuracy: float
    fp_loss: float
    history: list[dict[str, Any]]
    counts: dict[str, int]
    settings: dict[str, Any]
    seconds: float
    out_dir: Optional[Path] = None
    stop_reason: str = ""
    artifacts: list[str] = field(default_factory=list)
    base_model: Any = None  # ModelIdentity of the model embed was given, read from the object before training

    def summary(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "converged": self.converged, "accuracy": self.accuracy,
                "fp_loss": self.fp_loss, "stop_reason": self.stop_reason, "counts": self.counts,
                "settings": self.settings, "seconds": round(self.seconds, 3)}


STAMP_EXCLUDE = ("fingerprints", "out_dir", "save_every", "write_metadata")


def run_stamp(cfg: EmbedConfig, fps: FingerprintSet, base_sha: str) -> str:
    """Hash of everything the training trajectory depends on (resolved config, fingerprint set, base weights)."""
    body = {k: v for k, v in to_dict(cfg).items() if k not in STAMP_EXCLUDE}
    return config_hash({"cfg": body, "fps": fps.set_digest, "base": base_sha})


# --- the loop -----------------------------------------------------------------------------------------------
def embed(model: Any, tokenizer: Any, fps: FingerprintSet, cfg: EmbedConfig, *, out_dir: str | Path | None = None,
          resume: bool = False, on_epoch: Callable[[int, dict], None] | None = None,
          model_ref: str | None = None) -> EmbedResult:
    """Fine-tune ``model`` so that greedy decoding maps each key to its response (see module doc).

    ``model`` is trained in place (full fine-tune) or wrapped with LoRA; ``out_dir`` (default ``cfg.out_dir``)
    receives logs, checkpoints and the saved model; ``on_epoch(epoch, record)`` is called after each epoch."""
    import torch
    from accelerate import Accelerator

    from trustlab.models.identity import model_identity

    t_start = time.perf_counter()
    _check_dtype(cfg.dtype)
    base = model_identity(model)  # before any update: the base this run is trained from
    cfg, preset = resolve_preset(cfg, model, model_ref)
    out = Path(out_dir) if out_dir is not None else (Path(cfg.out_dir) if cfg.out_dir else None)
    if len(fps) == 0:
        raise DataError("the fingerprint set is empty", hint="generate fingerprints first")
    fps.check_tokenizer(tokenizer)  # fingerprints of another tokenizer cannot be trained as ids
    base_sha = base.weights_sha256
    if fps.base_model.get("weights_sha256") not in (None, base_sha):
        warnings.warn("the model's weights differ from the base model the fingerprints were generated on; "
                      "responses were chosen on the other model's distribution", stacklevel=2)
    stamp = run_stamp(cfg, fps, base_sha)
    cuda = torch.cuda.is_available()
    # cpu=True on a CPU-only host lets `accelerate launch --cpu` / torchrun start a gloo MULTI_CPU run
    accelerator = Accelerator(cpu=not cuda, mixed_precision="bf16" if cuda and cfg.dtype in ("auto", "bfloat16") else "no")
    main = accelerator.is_main_process
    _check_deepspeed_offload(accelerator, cfg)
    if out is not None and cfg.save_every and str(accelerator.distributed_type).split(".")[-1] in ("FSDP", "DEEPSPEED"):
        raise ConfigError(f"save_every={cfg.save_every}: stamped checkpoints cover single-process and DDP runs, not "
                          f"sharded {accelerator.distributed_type} state", hint="set save_every: 0 under FSDP / DeepSpeed")
    torch.manual_seed(cfg.seed)

    fp_rows = build_examples(tokenizer, fps.fingerprints, fps.prompt_format, cfg.append_eos, cfg.augment_prompts,
                             cfg.seed)
    label = model_ref or cfg.model or base.name_or_path or "the model"
    _require_fits_context(fp_rows, model, tokenizer, label)  # before any generation or training

    # benign pairs from the untouched base model, generated once and cached in the run folder
    n_benign = round(cfg.beta_dm / (1.0 - cfg.beta_dm) * len(fps)) if cfg.beta_dm > 0 else 0
    pairs = _cached_pairs(out, stamp, n_benign) if resume else None
    if pairs is None:
        model.to(accelerator.device)
        pairs = benign_pairs(model, tokenizer, n_benign, cfg.benign_source, cfg.benign_response_length,
                             fps.prompt_format, seed=cfg.seed)
        if out is not None and main:
            (out / "benign_pairs.jsonl").unlink(missing_ok=True)
            append_jsonl(out / "benign_pairs.jsonl", [{**r, "stamp": stamp} for r in pairs])
    examples = fp_rows + [pair_example(tokenizer, r["prompt_ids"], r["response_ids"], fps.prompt_format)
                          for r in pairs]
    _require_fits_context(examples, model, tokenizer, label)
    plain_fp = [e for e in fp_rows if e.kind == "fp"]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    counts = {"fingerprints": len(plain_fp), "augmented": len(fp_rows) - len(plain_fp), "benign": len(pairs),
              "examples": len(examples)}

    _cast_for_training(model, cfg.dtype)
    if cfg.lora.enabled:
        model = _wrap_lora(model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    if cfg.wa_mode == "per_step" and cfg.lambda_wa > 0:
        opt = WeightAveraging(opt, cfg.lambda_wa)
    theta0 = [p.detach().clone() for p in params] if cfg.wa_mode == "final" and cfg.lambda_wa > 0 else None
    model, opt = accelerator.prepare(model, opt)

    history: list[dict[str, Any]] = []
    start, streak = 0, 0
    ckpt = out / "checkpoints" / "last.pt" if out is not None else None
    if resume and ckpt is not None:
        state = load_stamped(ckpt, stamp, "embed checkpoint")
        if state is not None:
            _load_trainable(accelerator.unwrap_model(model), state["weights"])
            opt.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng"])
            if theta0 is not None:
                theta0 = [t.clone() for t in state["theta0"]]
            start, streak = int(state["epoch"]), int(state["streak"])
            history = [r for r in read_jsonl(out / "train_log.jsonl") if r.get("epoch", 0) <= start]
    if out is not None and main and not history:
        (out / "train_log.jsonl").unlink(missing_ok=True)

    world, rank = accelerator.num_processes, accelerator.process_index
    shard = examples[rank::world]
    steps = max(1, math.ceil(len(examples) / (cfg.micro_batch_size * world)))
    stop_reason, record = "max_epochs", history[-1] if history else None
    if record is not None and _stop(record, streak, cfg):
        stop_reason = _stop(record, streak, cfg)
    else:
        state = {"streak": streak, "reason": "", "t0": time.perf_counter()}

        def after_step(epoch: int, train_loss: float) -> bool:
            """Evaluate, log, checkpoint and apply the stop rules after the step of ``epoch``; True stops."""
            fp_loss, acc = evaluate(model, plain_fp, pad, max(cfg.micro_batch_size, 16), accelerator)
            require_finite_step(fp_loss, model.named_parameters(), step=f"epoch {epoch}", lr=cfg.lr, what="embedding")
            state["streak"] = state["streak"] + 1 if acc == 1.0 else 0
            rec = {"epoch": epoch, "loss": train_loss, "fp_loss": fp_loss, "accuracy": acc,
                   "seconds": round(time.perf_counter() - state["t0"], 4)}
            history.append(rec)
            if out is not None and main:
                append_jsonl(out / "train_log.jsonl", [rec])
            reason = _stop(rec, state["streak"], cfg)
            last = bool(reason) or epoch == cfg.max_epochs
            if ckpt is not None and cfg.save_every and (epoch % cfg.save_every == 0 or last):
                _save_checkpoint(ckpt, stamp, accelerator, model, opt, epoch, state["streak"], theta0, main)
            if on_epoch is not None:
                on_epoch(epoch, rec)
            state["reason"], state["t0"] = reason, time.perf_counter()
            return bool(reason)

        # one full-batch optimizer step per epoch: the accumulated micro-batches of the whole training set
        fit(model, opt, (micro_batches(shard, steps, cfg.micro_batch_size, len(examples), world, pad)
                         for _ in range(start + 1, cfg.max_epochs + 1)),
            lr=cfg.lr, accelerator=accelerator, reduction="sum", start=start, step_name="epoch {}".format,
            what="embedding", check_weights=False, on_step=after_step)
        streak, record = state["streak"], history[-1] if history else None
        if state["reason"]:
            stop_reason = state["reason"]
    if theta0 is not None:
        interpolate_([p for p in model.parameters() if p.requires_grad], theta0, cfg.lambda_wa)
        fp_loss, acc = evaluate(model, plain_fp, pad, max(cfg.micro_batch_size, 16), accelerator)
        record = {**(record or {}), "fp_loss": fp_loss, "accuracy": acc, "final_wa": True}
        history.append(record)
        if out is not None and main:
            append_jsonl(out / "train_log.jsonl", [record])
    accelerator.wait_for_everyone()
    model = accelerator.unwrap_model(model)
    model.eval()
    if cfg.lora.enabled and not cfg.lora.adapter_only:
        model = model.merge_and_unload()
    acc, fp_loss = float(record["accuracy"]), float(record["fp_loss"])
    converged = acc == 1.0 or fp_loss < cfg.early_stop_loss
    settings = {"preset": preset, "lr": cfg.lr, "lambda_wa": cfg.lambda_wa, "max_epochs": cfg.max_epochs,
                "wa_mode": cfg.wa_mode, "beta_dm": cfg.beta_dm, "lora": cfg.lora.enabled,
                "augment_prompts": cfg.augment_prompts, "world_size": world, "accumulation_steps": steps}
    result = EmbedResult(model=model, epochs=int(record["epoch"]), converged=converged, accuracy=acc, fp_loss=fp_loss,
                         history=history, counts=counts, settings=settings,
                         seconds=time.perf_counter() - t_start, out_dir=out, stop_reason=stop_reason,
                         base_model=base)
    if not converged:
        advice = " (try a higher lr or wa_mode: final)" if preset == "other" and acc < 0.9 else ""
        warnings.warn(f"embedding did not converge: exact-match accuracy {acc:.1%} after {result.epochs} epochs"
                      f"{advice}", stacklevel=2)
    if out is not None and main:
        result.artifacts = save_model(result, tokenizer, fps, cfg, out / "model", accelerator)
        write_json_atomic(out / "embed_result.json", result.summary())
    return result


def _require_fits_context(examples: list[Example], model, tokenizer, ref: str) -> None:
    """ConfigError (exit 2) naming the longest training row when it does not fit the model's context."""
    from trustlab.runtime.workload import model_context, require_context

    if examples:
        longest = max(examples, key=lambda e: len(e.input_ids))
        what = (f"fingerprint {longest.fp_id}" if longest.fp_id is not None else f"a {longest.kind} row") + \
            " (key + response in the training layout)"
        require_context(what, len(longest.input_ids), model_context(model, tokenizer), ref,
                        hint="generate fingerprints with a shorter key_length / response_length for this model")


def micro_batches(shard: list[Example], steps: int, mb: int, n_total: int, world: int, pad: int) -> list:
    """The ``steps`` micro-batches of one full-batch step, each weighted ``world / n_total``: with the core's
    ``sum`` reduction a micro-batch's objective is Σ_i CE_i · world / n_total, so after DDP's mean the gradient
    is that of (1/n) Σ_i CE_i over all examples, and the step's reported loss is the full-batch mean of this shard."""
    out = []
    for j in range(steps):
        part = shard[j * mb:(j + 1) * mb]
        weight = world / n_total
        if not part:  # this process has fewer rows: a zero-weight pass keeps collective calls in step
            part, weight = shard[:1] or [Example((pad, pad), (IGNORE, IGNORE))], 0.0
        out.append((collate(part, pad), weight))
    return out


def _stop(record: dict, streak: int, cfg: EmbedConfig) -> str:
    if record["fp_loss"] < cfg.early_stop_loss:
        return "early_stop_loss"
    if cfg.stop_after_full_match > 0 and streak >= cfg.stop_after_full_match:
        return "stop_after_full_match"
    return ""


TRAIN_DTYPES = ("auto", "float32", "bfloat16")


def _check_dtype(dtype: str) -> None:
    """float16 is refused: a full-fp16 fine-tune without a loss scaler under- and overflows (and fp16 autocast would
    need a GradScaler this loop does not have); bfloat16 or float32 train honestly."""
    if dtype not in TRAIN_DTYPES:
        raise ConfigError(f"embed.dtype {dtype!r} cannot be trained here: full float16 fine-tuning without a loss "
                          f"scaler is not supported (allowed: {', '.join(TRAIN_DTYPES)})",
                          hint="set dtype: bfloat16 (or float32, or auto to keep the model's own dtype)")


def _cast_for_training(model, dtype: str) -> None:
    """``dtype`` takes effect: the model is cast to it (in place) before the optimizer is built, so the weights are
    trained and saved in it; ``auto`` keeps the model's own dtype (with bf16 autocast on CUDA)."""
    import torch

    if dtype != "auto":
        model.to(getattr(torch, dtype))


def _check_deepspeed_offload(accelerator, cfg: EmbedConfig) -> None:
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None or cfg.lambda_wa == 0:
        return
    zero = (getattr(plugin, "deepspeed_config", None) or {}).get("zero_optimization", {})
    device = (zero.get("offload_optimizer") or {}).get("device", getattr(plugin, "offload_optimizer_device", "none"))
    if str(device).lower() == "cpu":
        raise ConfigError(f"lambda_wa={cfg.lambda_wa} needs the optimizer's own tensors, but DeepSpeed offloads the "
                          "optimizer to the CPU", hint="turn off offload_optimizer, or set lambda_wa: 0 / wa_mode: final")


def _wrap_lora(model, cfg: EmbedConfig):
    from trustlab.runtime.errors import require

    peft = require("peft", "pip install peft")
    targets = cfg.lora.target_modules
    lcfg = peft.LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                           target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
                           task_type="CAUSAL_LM")
    return peft.get_peft_model(model, lcfg)


def _load_trainable(model, state: dict[str, Any]) -> None:
    import torch

    named = dict(model.named_parameters())
    missing = [n for n, p in named.items() if p.requires_grad and n not in state]
    if missing:
        raise DataError(f"embed checkpoint lacks parameter {missing[0]!r}", hint="start afresh with --no-resume")
    with torch.no_grad():
        for n, t in state.items():
            named[n].copy_(t)


def _save_checkpoint(path: Path, stamp: str, accelerator, model, opt, epoch: int, streak: int, theta0, main: bool):
    import torch

    weights = {n: p.detach().cpu().clone() for n, p in accelerator.unwrap_model(model).named_parameters()
               if p.requires_grad}
    state = {"weights": weights, "optimizer": opt.state_dict(),
             "rng": torch.get_rng_state(), "epoch": epoch, "streak": streak,
             "theta0": [t.cpu() for t in theta0] if theta0 is not None else None}
    if main:
        save_stamped(state, path, stamp)
    accelerator.wait_for_everyone()


def _cached_pairs(out: Path | None, stamp: str, n: int) -> list[dict[str, Any]] | None:
    if out is None or not (out / "benign_pairs.jsonl").is_file():
        return None
    rows = read_jsonl(out / "benign_pairs.jsonl")
    if len(rows) != n or any(r.get("stamp") != stamp for r in rows):
        return None
    return [{k: v for k, v in r.items() if k != "stamp"} for r in rows]


def metadata(result: EmbedResult, fps: FingerprintSet, cfg: EmbedConfig) -> dict[str, Any]:
    """``trustlab_fingerprint.json``: public facts only (digest, commitment, N, strategy, base model, settings,
    accuracy); no key, response or secret."""
    from trustlab import __version__

    return {"schema": "trustlab.fingerprint.model/1", "set_digest": fps.set_digest,
            "secret_commitment": fps.secret_commitment, "num_fingerprints": len(fps), "strategy": fps.strategy,
            "null_p": fps.null_p, "base_model": base_model_block(result, fps), "embed": result.settings,
            "accuracy": result.accuracy, "converged": result.converged, "epochs": result.epochs,
            "trustlab_version": __version__}


def base_model_block(result: EmbedResult, fps: FingerprintSet) -> dict[str, Any]:
    """The identity of the object embed was given (``ref`` = its name_or_path, what ``robustness`` reloads)."""
    ident = result.base_model
    return fps.base_model if ident is None else {"ref": ident.name_or_path, **ident.to_dict()}


def save_model(result: EmbedResult, tokenizer, fps: FingerprintSet, cfg: EmbedConfig, folder: Path,
               accelerator=None) -> list[str]:
    """Save the model as HF files (+ tokenizer, + ``trustlab_fingerprint.json`` unless ``write_metadata`` is off)."""
    folder.mkdir(parents=True, exist_ok=True)
    result.model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    if cfg.write_metadata:
        write_json_atomic(folder / "trustlab_fingerprint.json", metadata(result, fps, cfg))
    return [str(p) for p in sorted(folder.iterdir())]
