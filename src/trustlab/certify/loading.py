"""What ``certify eval`` certifies: a lab model folder or a user model (a TorchScript file, a ``module:function``
factory plus a checkpoint, or a torchvision architecture plus a checkpoint) with an input normalization and an opt-in
autocast wrapper (``EvalJob``), and ``run_eval``, which certifies a job into a run folder on one rank or many.

Model specs (the MODEL argument of ``trustlab certify eval``):
  ``torchscript:PATH``      ``torch.jit.load`` (the archive runs only in the TorchScript interpreter, no pickle of
                            arbitrary Python; it still computes whatever its author wrote: take it from someone you
                            trust)
  ``factory:pkg.mod:fn``    ``fn()`` (or ``fn(num_classes=K)`` with ``num_classes``) returns an ``nn.Module``; the
                            checkpoint's state dict loads strictly (``runtime.io.load_torch``, weights_only=True)
  ``torchvision:NAME``      ``torchvision.models.get_model(NAME, weights=None, num_classes=K)`` plus the checkpoint
                            (torchvision is optional: absent, a MissingDependencyError naming the pip command)

Normalization (Cohen et al.): noise is added in [0, 1] pixel space and the model sees (x + delta - mean) / std, so the
wrapper is the *first* layer of the certified model: ``nn.Sequential(normalize_module(mean, std), model)``.
Autocast (``bf16`` on CPU or CUDA, ``fp16`` on CUDA only) runs the forward under ``torch.autocast`` and returns float32
logits; it changes the base classifier, so it is part of the records' stamp.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from trustlab.runtime import ConfigError, MissingDependencyError, ModelError

KINDS = ("torchscript", "factory", "torchvision")
AUTOCAST = ("off", "bf16", "fp16")
TORCHVISION_PIP = "pip install torch==2.14.1 torchvision==0.29.1"
_SPEC_HINT = ("pass a model folder written by `trustlab certify train`, or torchscript:PATH, "
              "factory:package.module:function, torchvision:NAME")


def is_user_spec(spec: str) -> bool:
    """Whether ``spec`` names a user model (``<kind>:...``) rather than a lab model folder."""
    kind, sep, _ = str(spec).partition(":")
    return (bool(sep) and kind in (*KINDS, "export", "pt2")) or str(spec).lower().endswith(".pt2")  # .pt2: refused


def parse_spec(spec: str) -> tuple[str, str]:
    """(kind, rest) of ``torchscript:PATH`` / ``factory:pkg.mod:fn`` / ``torchvision:NAME``; ConfigError otherwise."""
    kind, sep, rest = str(spec).partition(":")
    if kind in ("export", "pt2") or str(spec).lower().endswith(".pt2"):
        raise ConfigError(f"model {spec!r}: torch.export (.pt2) archives are refused, because torch.export.load "
                          "(torch 2.13) unpickles their weights with weights_only=False, so a crafted file runs code",
                          hint="save the weights with torch.save(model.state_dict(), FILE) and pass "
                               "factory:package.module:function --checkpoint FILE (or a torchscript: archive)")
    if not sep or kind not in KINDS:
        raise ConfigError(f"model {spec!r} is not <kind>:<what> with kind one of {', '.join(KINDS)}", hint=_SPEC_HINT)
    if not rest.strip():
        raise ConfigError(f"model {spec!r} names no {kind} after the colon", hint=_SPEC_HINT)
    if kind == "factory":
        mod, colon, fn = rest.rpartition(":")
        if not colon or not mod or not fn.isidentifier():
            raise ConfigError(f"model {spec!r}: a factory is factory:package.module:function",
                              hint="e.g. factory:mypkg.archs:cifar_resnet110 (importable: its folder on PYTHONPATH)")
    return kind, rest


def parse_normalize(text: str | None, flag: str = "--normalize") -> Optional[tuple[tuple[float, ...], ...]]:
    """``m1,m2,m3/s1,s2,s3`` -> (mean, std), one value per channel (or one for all); None for None / ``none``."""
    from trustlab.runtime import parse_float_list

    if text is None or str(text).strip().lower() in ("", "none", "off"):
        return None
    hint = f"e.g. {flag} 0.4914,0.4822,0.4465/0.2023,0.1994,0.2010 (CIFAR-10 mean/std, per channel)"
    mean_s, sep, std_s = str(text).partition("/")
    if not sep:
        raise ConfigError(f"{flag} must be MEAN/STD (comma-separated per channel), got {text!r}", hint=hint)
    try:
        mean = tuple(parse_float_list(f"{flag} mean", mean_s))
        std = tuple(parse_float_list(f"{flag} std", std_s))
    except ConfigError as exc:
        raise ConfigError(exc.message, hint=hint) from None
    if not mean or len(mean) != len(std):
        raise ConfigError(f"{flag} needs as many std values as mean values, got {len(mean)} and {len(std)} "
                          f"in {text!r}", hint=hint)
    if any(s <= 0 for s in std):
        raise ConfigError(f"{flag} std values must be > 0, got {text!r}", hint=hint)
    return mean, std


def _checkpoint_state(checkpoint) -> dict:
    """The state dict in a checkpoint (a plain state dict, or one under state_dict / model_state_dict / model)."""
    from trustlab.runtime import load_torch

    path = Path(checkpoint)
    if not path.is_file():
        raise ModelError(f"--checkpoint {str(path)!r} does not exist", hint="pass the file torch.save wrote")
    blob = load_torch(path, "--checkpoint")
    if isinstance(blob, dict) and "trustlab_stamp" in blob:
        blob = blob.get("state")
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(blob, dict) and isinstance(blob.get(key), dict):
            blob = blob[key]
            break
    if not isinstance(blob, dict) or not all(isinstance(k, str) for k in blob):
        raise ModelError(f"--checkpoint {str(path)!r} holds a {type(blob).__name__}, not a state dict",
                         hint="save weights with torch.save(model.state_dict(), path)")
    return blob


def load_state_strict(model, state: dict, where: str) -> None:
    """``model.load_state_dict(state, strict=True)``. A wrapper prefix shared by every key (DataParallel's
    ``module.``; ``1.`` / ``1.module.`` of Cohen et al.'s ``Sequential(normalize, model)`` checkpoints) is stripped
    when the stripped keys are exactly the model's. A mismatch is one ModelError naming the first missing /
    unexpected keys."""
    want = set(model.state_dict())
    have = set(state)
    if have != want and state:
        first = next(iter(state)).split(".")
        for cut in range(1, len(first)):
            p = ".".join(first[:cut]) + "."
            if all(k.startswith(p) for k in state) and {k[len(p):] for k in state} == want:
                state = {k[len(p):]: v for k, v in state.items()}
                have = set(state)
                break
    if have != want:
        missing, unexpected = sorted(want - have), sorted(have - want)
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])}"
                         f"{', ...' if len(unexpected) > 3 else ''})")
        raise ModelError(f"{where} does not fit the model: keys {'; '.join(parts)}",
                         hint="check the architecture (--num-classes, the factory) against the checkpoint")
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as exc:
        first = next((ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip()), str(exc).splitlines()[0])
        raise ModelError(f"{where} does not fit the model: {first[:200]}",
                         hint="check the architecture (--num-classes, the factory) against the checkpoint") from None


def _factory(rest: str, num_classes: int | None):
    import importlib

    mod_name, _, fn_name = rest.rpartition(":")
    try:
        mod = importlib.import_module(mod_name)
    except Exception as exc:  # ImportError, or whatever the user's module raises at import (SyntaxError, ...)
        raise ConfigError(f"factory module {mod_name!r} cannot be imported: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}"[:300],
                          hint="put its folder on PYTHONPATH, e.g. PYTHONPATH=. trustlab certify eval ...") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise ConfigError(f"factory {rest!r}: module {mod_name!r} has no function {fn_name!r}",
                          hint="give factory:package.module:function")
    try:
        model = fn(num_classes=num_classes) if num_classes is not None else fn()
    except TypeError as exc:
        raise ConfigError(f"factory {rest!r} cannot be called as {fn_name}("
                          f"{'num_classes=' + str(num_classes) if num_classes is not None else ''}): {exc}",
                          hint="the factory takes no arguments, or num_classes= when --num-classes is given") from None
    except Exception as exc:  # the user's code failed
        raise ModelError(f"factory {rest!r} raised {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                         [:300], hint="fix the factory; it must build and return the nn.Module") from None
    return model


def _torchvision(name: str, num_classes: int | None):
    try:
        import torchvision
    except ImportError as exc:
        raise MissingDependencyError(f"torchvision:{name} needs torchvision, which is not importable ({exc})",
                                     hint=f"{TORCHVISION_PIP} (a torchvision built for the installed torch; or "
                                          f"use factory:/torchscript:)") from None
    names = torchvision.models.list_models()
    if name not in names:
        raise ConfigError(f"torchvision has no model {name!r}",
                          hint=f"e.g. {', '.join(n for n in names if n.startswith('resnet'))}")
    kw = {} if num_classes is None else {"num_classes": num_classes}
    return torchvision.models.get_model(name, weights=None, **kw)


def load_user_model(spec: str, checkpoint: str | Path | None = None, normalize=None, *,
                    num_classes: int | None = None):
    """The user's base classifier (eval mode, CPU) from ``spec`` (see the module docstring), its weights from
    ``checkpoint`` (factory / torchvision: required), wrapped so that inputs in [0, 1] are normalized with
    ``normalize = (mean, std)`` (or the text ``m1,m2,m3/s1,s2,s3``) before the first layer."""
    import torch
    import torch.nn as nn

    from .boundnet import normalize_module

    kind, rest = parse_spec(spec)
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 2):
        raise ConfigError(f"--num-classes must be an integer >= 2, got {num_classes!r}", hint="e.g. --num-classes 10")
    if isinstance(normalize, str):
        normalize = parse_normalize(normalize)
    if kind == "torchscript":
        if checkpoint is not None:
            raise ConfigError("--checkpoint does not apply to a torchscript: model (its weights are in the archive)",
                              hint="drop --checkpoint, or use factory:pkg.mod:fn with --checkpoint")
        path = Path(rest)
        if not path.is_file():
            raise ModelError(f"TorchScript file {str(path)!r} does not exist", hint="pass torchscript:PATH of a "
                                                                                     "torch.jit.save archive")
        try:
            model = torch.jit.load(str(path), map_location="cpu")
        except (RuntimeError, ValueError, OSError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise ModelError(f"{str(path)!r} is not a loadable TorchScript archive: {first}",
                             hint="save it with torch.jit.save(torch.jit.script(model) or torch.jit.trace(...))") \
                from None
    else:
        if checkpoint is None:
            raise ConfigError(f"model {spec!r} needs --checkpoint (its weights)",
                              hint="pass --checkpoint FILE written by torch.save(model.state_dict(), FILE)")
        model = _factory(rest, num_classes) if kind == "factory" else _torchvision(rest, num_classes)
        if not isinstance(model, nn.Module):
            raise ModelError(f"factory {rest!r} returned an object of type {type(model).__name__}, not an nn.Module",
                             hint="the factory must return the (untrained) nn.Module the checkpoint fits")
        load_state_strict(model, _checkpoint_state(checkpoint), f"--checkpoint {str(checkpoint)!r}")
    if normalize is not None:
        mean, std = normalize
        model = nn.Sequential(normalize_module(mean, std), model)
    return model.eval()


def check_channels(normalize, shape, flag: str = "--normalize") -> None:
    """ConfigError when a per-channel normalization does not match the inputs' channels."""
    if normalize is None:
        return
    c = shape[0] if len(shape) == 3 else None
    if len(normalize[0]) != 1 and len(normalize[0]) != c:
        raise ConfigError(f"{flag} gives {len(normalize[0])} channel values but the inputs have shape "
                          f"{list(shape)} ({c if c is not None else 'no'} channels)",
                          hint=f"give one mean/std per channel ({c}) or a single value for all")


def with_autocast(model, mode: str, device: str):
    """``model`` whose forward runs under ``torch.autocast(device type, bf16 | fp16)`` and returns float32 logits;
    ``off`` returns ``model`` itself. fp16 autocast on the CPU is refused (ConfigError)."""
    import torch
    import torch.nn as nn

    from trustlab.runtime import require_choice

    require_choice("--autocast", mode, AUTOCAST)
    if mode == "off":
        return model
    dev_type = torch.device(device).type
    if mode == "fp16" and dev_type != "cuda":
        raise ConfigError(f"--autocast fp16 needs a CUDA device; this run certifies on {device}",
                          hint="use --autocast bf16 on the CPU (or off), or fp16 with --device cuda")
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16

    class Autocast(nn.Module):
        """The base model under autocast; ``precision`` (a buffer) puts the mode into the state dict, hence into the
        records' stamp."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.register_buffer("precision", torch.tensor(AUTOCAST.index(mode), dtype=torch.int64))

        def forward(self, x):
            with torch.autocast(device_type=x.device.type, dtype=dtype):
                out = self.inner(x)
            return out.float()

    return Autocast(model).eval()


# --- what `certify eval` certifies -----------------------------------------------------------------------------------
@dataclass
class EvalJob:
    """One ``certify eval``: the base ``model`` (on its device), the seed's ``data`` (test inputs x and T(x)), the
    noise ``seed``, the run ``settings`` (config.yaml of the run folder), the certifier and its config."""

    model: Any
    data: Any
    seed: int
    settings: dict
    certifier: str
    cfg: Any
    inputs: str
    flags: dict
    sigma: Optional[float]


def _configs(certifier, *, sigma, n0, n, alpha, batch, predict, max_hours, radius, eps, bound=None):
    from .config import SMOOTHING_CERTIFIERS, BoundsConfig, SmoothingConfig

    smooth = certifier in SMOOTHING_CERTIFIERS
    kw = {"bound": bound} if bound is not None else {}
    scfg = SmoothingConfig(sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=batch, predict=predict,
                           max_hours=max_hours, target_radius=radius, **kw) if smooth else None
    bcfg = BoundsConfig(method=certifier if not smooth else "ibp", eps=eps)
    return smooth, scfg, bcfg


def _settings(base: dict, certifier, inputs, max_inputs, smooth, scfg, bcfg) -> dict:
    import dataclasses

    # batch size and the time limit are left out: certificates do not depend on them
    return {**base, "certifier": certifier, "inputs": inputs, "max_inputs": max_inputs,
            "smoothing": {k: v for k, v in dataclasses.asdict(scfg).items()
                          if k not in ("batch_size", "max_hours")} if smooth else None,
            "bounds": dataclasses.asdict(bcfg) if not smooth else None}


def _budget(job: EvalJob, n_sets: int, predict: bool, warn) -> dict:
    import warnings

    from .smoothing import require_budget
    from .stats import budget

    scfg = job.cfg
    require_budget(job.model, job.data.shape, scfg, n_sets * len(job.data.x_test),
                   names={"n": "--n", "max_hours": "--max-hours"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flags = budget(scfg.n, scfg.alpha, scfg.sigma, scfg.n if predict else None, scfg.radii)
    for w in caught:
        warn(str(w.message))
    return flags


def lab_job(model_dir, *, certifier: str, n0: int, n: int, alpha: float, sigma: float | None, radius: float,
            batch: int, eps: float, inputs: str, max_inputs: int | None, predict: bool, max_hours: float,
            device: str = "cpu", autocast: str = "off", bound: str | None = None, warn: Callable = print) -> EvalJob:
    """The job of a model folder written by ``certify train`` or a run (its dataset, split seed and trigger come
    from train.json); its run settings are those `certify eval` has always recorded, so earlier run folders resume."""
    from trustlab.runtime import DataError, from_dict

    from .config import ExperimentConfig, TriggerConfig
    from .data import prepare_data
    from .experiment import EVAL_META, model_sigma
    from .store import load_model_dir

    model, meta = load_model_dir(model_dir)
    missing = [k for k in EVAL_META if k not in meta]
    if missing:
        raise DataError(f"{str(Path(model_dir) / 'train.json')!r} does not record {', '.join(missing)}",
                        hint="pass a model folder written by `trustlab certify train` or a run")
    sigma = model_sigma(meta) if sigma is None else sigma
    smooth, scfg, bcfg = _configs(certifier, sigma=sigma, n0=n0, n=n, alpha=alpha, batch=batch, predict=predict,
                                  max_hours=max_hours, radius=radius, eps=eps, bound=bound)
    trigger = from_dict(TriggerConfig, meta["trigger"], "train.json trigger")
    cfg = ExperimentConfig(name="eval", seeds=(meta["seed"],), data=meta["data"], test_frac=meta["test_frac"],
                           trigger=trigger, max_test=max_inputs or meta.get("max_test"))
    _no_autocast_for_bounds(autocast, smooth, certifier)
    base = {"model_dir": str(model_dir)}
    if device != "cpu":
        base["device"] = device.split(":")[0]
    if autocast != "off":
        base["autocast"] = autocast
    settings = _settings(base, certifier, inputs, max_inputs, smooth, scfg, bcfg)
    data = prepare_data(cfg, meta["seed"])
    job = EvalJob(with_autocast(model.to(device), autocast, device), data, meta["seed"], settings, certifier,
                  scfg if smooth else bcfg, inputs, {}, sigma if smooth else None)
    if smooth:
        attacked_at = meta.get("attack_sigma")
        if attacked_at not in (None, 0.0, sigma):
            warn(f"attack B trained this model against sigma {attacked_at}; certifying at --sigma {sigma}")
        job.flags = _budget(job, 2 if inputs == "both" else 1, predict, warn)
    return job


def _no_autocast_for_bounds(autocast: str, smooth: bool, certifier: str) -> None:
    if autocast != "off" and not smooth:
        raise ConfigError(f"--autocast {autocast} applies to smoothing only; {certifier} bounds run in float64",
                          hint="drop --autocast, or use --certifier smoothing")


def user_job(spec: str, *, data: str | None, checkpoint: str | None, normalize: str | None,
             num_classes: int | None, autocast: str, seed: int, certifier: str, n0: int, n: int, alpha: float,
             sigma: float | None, radius: float, batch: int, eps: float, inputs: str, max_inputs: int | None,
             predict: bool, max_hours: float, device: str = "cpu", bound: str | None = None,
             warn: Callable = print) -> EvalJob:
    """The job of a user model (``load_user_model``) on the test split of dataset ``data`` (registry name,
    npz:FILE, idx:DIR; split seeded by ``seed``), certified at ``sigma`` (required: the lab cannot know it)."""
    import torch

    from .config import SMOOTHING_CERTIFIERS, ExperimentConfig
    from .data import prepare_data

    parse_spec(spec)
    smooth = certifier in SMOOTHING_CERTIFIERS
    if data is None:
        raise ConfigError(f"model {spec!r} is not a lab model folder, so --data must name its test inputs",
                          hint="e.g. --data npz:cifar10.npz (x_train, y_train, x_test, y_test) or --data digits")
    if smooth and sigma is None:
        raise ConfigError(f"--sigma is required for a user model ({spec!r}): the noise level it was trained for",
                          hint="e.g. --sigma 0.25 (Cohen et al.'s CIFAR-10 models: 0.12, 0.25, 0.5, 1.0)")
    _no_autocast_for_bounds(autocast, smooth, certifier)
    norm = parse_normalize(normalize)
    smooth, scfg, bcfg = _configs(certifier, sigma=sigma if smooth else 0.25, n0=n0, n=n, alpha=alpha, batch=batch,
                                  predict=predict, max_hours=max_hours, radius=radius, eps=eps, bound=bound)
    d = prepare_data(ExperimentConfig(name="eval", seeds=(seed,), data=data, max_test=max_inputs), seed)
    check_channels(norm, d.shape)
    model = load_user_model(spec, checkpoint, norm, num_classes=num_classes).to(device)
    model = with_autocast(model, autocast, device)
    with torch.inference_mode():
        try:
            out = model(torch.as_tensor(d.x_test[:1], device=device))
        except RuntimeError as exc:
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or ["error"]
            first = (lines[-1] if "TorchScript interpreter" in lines[0] else lines[0])[:200]
            raise ModelError(f"model {spec!r} fails on one input of shape {list(d.shape)} from {data!r}: {first}",
                             hint="check the model's input shape and channels against --data") from None
    if out.ndim != 2 or out.shape[1] < 2:
        raise ModelError(f"model {spec!r} returned shape {tuple(out.shape)} for one input; expected (1, K) logits",
                         hint="the model must map a batch to (B, K) logits")
    K = int(out.shape[1])
    if num_classes is not None and K != num_classes:
        raise ModelError(f"model {spec!r} returns {K} logits but --num-classes is {num_classes}",
                         hint="fix --num-classes or the model")
    if d.K > K:
        raise ModelError(f"{data!r} has {d.K} classes but model {spec!r} returns only {K} logits",
                         hint="certify it on data whose labels lie in [0, K)")
    d.K = K
    base = {"model": spec, "checkpoint": None if checkpoint is None else str(checkpoint), "normalize": normalize,
            "autocast": autocast, "data": data, "seed": seed}
    if device != "cpu":
        base["device"] = device.split(":")[0]
    settings = _settings(base, certifier, inputs, max_inputs, smooth, scfg, bcfg)
    job = EvalJob(model, d, seed, settings, certifier, scfg if smooth else bcfg, inputs, {}, sigma if smooth else None)
    if smooth:
        job.flags = _budget(job, 2 if inputs == "both" else 1, predict, warn)
    return job


# --- the eval verb across ranks -------------------------------------------------------------------------------------
def run_eval(job: EvalJob, out: str | Path, *, ranks=None, resume: bool = True):
    """Certify ``job`` (``loading.EvalJob``) into the run folder ``out``: rank 0 opens the folder (config.yaml,
    resume checks, ``--no-resume`` clearing) before any rank writes, the ranks share each input set, and rank 0 alone
    writes results.json (``ranks``: ``distributed.Ranks``, default one process). Returns ``experiment.EvalResult``
    on every rank (the same on all)."""
    import warnings

    from trustlab.runtime import RunDir, derive_seed

    from .distributed import Ranks, agree, certify_sharded, step
    from .experiment import SCHEMA, EvalResult

    ranks = Ranks() if ranks is None else ranks
    run = step(ranks, lambda: RunDir.open(out, "certify", "eval", job.settings, seed=job.seed, resume=resume),
               only_main=True)
    out = Path(out)
    data = job.data
    sets = [(w, xs) for w, xs in (("clean", data.x_test), ("triggered", data.x_trig)) if job.inputs in ("both", w)]
    summ = {}
    for which, xs in sets:
        path = out / job.certifier / f"{which}.jsonl"
        if ranks.main:
            path.parent.mkdir(parents=True, exist_ok=True)
        agree(ranks)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the budget warnings were given once, by the job
            _, summ[f"{which}_inputs"], _ = certify_sharded(
                job.model, xs, data.y_test, job.certifier, job.cfg, seed=derive_seed(job.seed, "smoothing", which),
                K=data.K, records=path, ranks=ranks, resume=resume)
    params = {**job.flags, "sigma": job.sigma} if job.sigma is not None else job.flags
    if ranks.main:
        extra = {"world_size": ranks.world} if ranks.world > 1 else {}
        run.write_results({k: v["abstain_rate"] for k, v in summ.items()}, artifacts=[], schema=SCHEMA,
                          certifier=job.certifier, params=params, by_inputs=summ, **extra)
    agree(ranks)
    return EvalResult(out, job.certifier, summ, params)
