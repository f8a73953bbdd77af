"""The model store: build a model from its config, load and check weights, and train-or-reload a model folder
(``model.pt`` + ``train.json``, both stamped with the hash of the settings the weights depend on)."""

from __future__ import annotations

import json
from pathlib import Path

from trustlab.runtime import (ConfigError, DataError, ModelError, derive_seed, load_stamped, load_torch, save_stamped,
                              to_dict, write_json_atomic)

from .config import ModelConfig, Track, TrainConfig
from .data import SeedData


def build_model(mcfg: ModelConfig, shape, K: int, seed: int):
    """The architecture (seeded init), or a user factory ``pkg.mod:fn(shape, K)``; ``checkpoint`` loads weights."""
    import importlib

    import torch

    from trustlab.models import mlp, small_cnn

    torch.manual_seed(seed)
    if mcfg.factory:
        mod, _, fn = mcfg.factory.partition(":")
        try:
            model = getattr(importlib.import_module(mod), fn)(tuple(shape), K)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"model.factory {mcfg.factory!r} cannot be imported: {exc}",
                              hint="give 'package.module:function' importable from the current environment") from exc
    elif mcfg.arch == "mlp":
        model = mlp(shape, mcfg.hidden, K)
    else:
        model = small_cnn(shape, K)
    if mcfg.checkpoint:
        path = Path(mcfg.checkpoint)
        if not path.is_file():
            raise ModelError(f"model.checkpoint {str(path)!r} does not exist", hint="check model.checkpoint")
        if not mcfg.factory and _is_torchscript(path):
            try:
                return torch.jit.load(str(path), map_location="cpu")
            except (RuntimeError, ValueError) as exc:
                raise ModelError(f"cannot load TorchScript model.checkpoint {str(path)!r}: {exc}".splitlines()[0],
                                 hint="save it with torch.jit.save, or give a state dict") from None
        load_weights(model, load_torch(path, "model.checkpoint"), path)
    return model


def load_weights(model, state, path) -> None:
    """``model.load_state_dict(state)`` with a ModelError naming ``path`` when the weights do not fit."""
    if isinstance(state, dict) and "trustlab_stamp" in state:
        state = state["state"]
    if not isinstance(state, dict):
        raise ModelError(f"{str(path)!r} holds a {type(state).__name__}, not a state dict",
                         hint="save weights with torch.save(model.state_dict(), path)")
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise ModelError(f"weights in {str(path)!r} do not fit the model: {str(exc).strip().splitlines()[0][:200]}",
                         hint="check model.arch / model.hidden against the checkpoint") from None


def _is_torchscript(path: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("constants.pkl") for n in z.namelist())
    except zipfile.BadZipFile:
        return False
    except OSError:
        return False


def read_meta(folder: Path) -> dict:
    """train.json of a model folder; a missing, unreadable or malformed one is a DataError naming it."""
    from trustlab.runtime import read_text

    path = folder / "train.json"
    try:
        meta = json.loads(read_text(path, "model metadata"))
    except json.JSONDecodeError as exc:
        raise DataError(f"model metadata {str(path)!r} is not valid JSON ({exc.msg}, line {exc.lineno})",
                        hint="retrain the model, or start afresh with --no-resume") from None
    missing = [k for k in ("model", "shape", "K") if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise DataError(f"model metadata {str(path)!r} lacks {', '.join(missing)}",
                        hint="pass a model folder written by `trustlab certify train` or a run")
    return meta


def load_model_dir(folder: str | Path):
    """(model, train.json) of a trained model folder. model.pt loads with weights_only=True (a crafted or truncated
    file is a DataError, exit 2); a stamped model.pt must carry the stamp train.json records."""
    from trustlab.runtime import from_dict

    folder = Path(folder)
    if not (folder / "model.pt").is_file() or not (folder / "train.json").is_file():
        raise DataError(f"{str(folder)!r} holds no model.pt + train.json", hint="pass a model folder written by "
                                                                                "`trustlab certify train` or a run")
    meta = read_meta(folder)
    try:
        model = build_model(from_dict(ModelConfig, meta["model"], "train.json model"), meta["shape"], meta["K"], 0)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, (ConfigError, DataError)):
            raise
        raise DataError(f"model metadata {str(folder / 'train.json')!r} does not describe a model: {exc}",
                        hint="retrain the model") from None
    blob = load_torch(folder / "model.pt", "model")
    if isinstance(blob, dict) and "trustlab_stamp" in blob and "stamp" in meta and blob["trustlab_stamp"] != meta["stamp"]:
        raise DataError(f"{str(folder / 'model.pt')!r} and train.json come from different runs "
                        f"(stamps {blob['trustlab_stamp']} and {meta['stamp']})",
                        hint="retrain the model, or start afresh with --no-resume")
    load_weights(model, blob, folder / "model.pt")
    return model.eval(), meta


def train_model(folder: Path, track: Track, x, y, data: SeedData, seed: int, device: str, hook=None,
                tcfg: TrainConfig | None = None, extra: dict | None = None, init=None):
    """Train (or reload a finished) model into ``folder``: model.pt + train.json, both stamped with ``train_stamp``
    (training config, seed, data, initial weights, hook). A model.pt of other settings is never reused: it is
    retrained, and the certificates under ``folder`` (which depend on it) are removed. Checkpoints allow resume."""
    import shutil

    from .train import train, train_stamp

    tcfg = tcfg or track.train
    model = init if init is not None else build_model(track.model, data.shape, data.K,
                                                      derive_seed(seed, track.name, "init"))
    tseed = derive_seed(seed, track.name, "train")
    stamp = train_stamp(model, x, y, tcfg, seed=tseed, hook=hook, device=device)
    if (folder / "model.pt").is_file() and (folder / "train.json").is_file():
        try:
            state = load_stamped(folder / "model.pt", stamp, "model")
        except ConfigError:
            state = None  # another config's model: retrained below
        meta = read_meta(folder) if state is not None else None
        if state is not None and meta.get("stamp") == stamp:
            load_weights(model, state, folder / "model.pt")
            return model.cpu().eval(), meta
    for sub in folder.iterdir() if folder.is_dir() else ():
        if sub.is_dir():
            shutil.rmtree(sub)  # certificates of a model that is about to be replaced
    (folder / "model.pt").unlink(missing_ok=True)
    summary = train(model, x, y, tcfg, seed=tseed, hook=hook, ckpt_dir=folder, device=device)
    model.cpu()
    meta = {**summary.to_dict(), "model": to_dict(track.model), "train": to_dict(tcfg), "shape": list(data.shape),
            "K": data.K, "n_train": len(x), **(extra or {}), "stamp": stamp}
    save_stamped(model.state_dict(), folder / "model.pt", stamp)
    write_json_atomic(folder / "train.json", meta)
    (folder / "ckpt.pt").unlink(missing_ok=True)
    return model.eval(), meta


def accuracy(model, x, y) -> float:
    """Clean accuracy of the base model (no noise), in eval mode."""
    import numpy as np
    import torch

    from .torchutil import eval_mode, model_device

    with eval_mode(model), torch.no_grad():
        pred = model(torch.as_tensor(np.asarray(x), device=model_device(model))).argmax(1).cpu().numpy()
    return float((pred == np.asarray(y)).mean())
