"""Loading a user's model for ``certify eval``: a TorchScript file, a ``module:function`` factory plus a checkpoint,
or a torchvision architecture plus a checkpoint, with an input normalization and an opt-in autocast wrapper. The
job built around it (``EvalJob``) and ``run_eval`` live in ``trustlab.certify.evaljob``.

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

from pathlib import Path
from typing import Optional

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
