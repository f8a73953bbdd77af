"""``train(cfg, run_dir)``: build the parties (in-process or gRPC), fit, embed every split, save what the
attacks need (messages, splits, codes, top model, shared bottom weights) and the training part of results.json."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trustlab.runtime import (ConfigError, DataError, Interrupted, RunDir, TrustlabError, config_diff,
                              configure_threads, load_yaml, read_text, save_stamped)

from .commands import fresh_command, resume_command
from .config import VFLConfig, load_parties

SCHEMA = "trustlab.vfl.result/1"


@dataclass
class TrainResult:
    """What ``train`` returns: the headline figures, the record written to ``run_dir/results.json``, and in memory
    what the attacks need (eval messages per split and party, splits, class codes, model weights), so
    ``evaluate(result)`` reads nothing back from disk."""

    cfg: VFLConfig
    run_dir: Path
    test_acc: float
    train_acc: float
    history: list[dict]
    messages: dict[str, list[np.ndarray]]
    codes: np.ndarray | None
    results: dict[str, Any]
    run: dict[str, Any] = field(repr=False, default_factory=dict)
    _scratch: Any = field(repr=False, default=None)  # the temporary run folder of ``train(cfg)``, removed with it


def config_for_run(config: str | None, run_dir: Path | None, resume: bool, overrides: dict) -> VFLConfig:
    """The config of ``vfl train``: with ``--out D`` holding a run and no ``--config``, D's saved config (plus
    any flags); else ``--config`` (or the defaults) plus flags. Resuming (the default) takes the saved run as it
    is: a flag or ``--config`` that changes it is refused, naming the keys."""
    from .config import load_config, resolve_config

    from trustlab.runtime.rundir import read_marker

    ours = run_dir is not None and run_dir.is_dir() and (read_marker(run_dir) or {}).get("lab") == "vfl"
    saved = run_dir / "config.yaml" if ours else None  # a folder of no vfl run is never read (RunDir refuses it)
    if saved is not None and saved.is_file():
        raw = load_yaml(saved)
        before = load_config(saved, raw=raw)
        cfg = load_config(resolve_config(config), overrides) if config else load_config(saved, overrides, raw=raw)
        if resume:
            diff = config_diff(before, cfg)
            if diff:
                raise ConfigError(f"resuming continues the run saved in {str(run_dir)!r}, but the flags change "
                                  f"{', '.join(diff)}",
                                  hint=f"resume it as saved with `{resume_command(run_dir)}` (no --config or other "
                                       "flags), or add --no-resume to start it afresh with the new settings "
                                       "(discards its checkpoint)")
        return cfg
    return load_config(resolve_config(config), overrides)


def open_run(path: str | Path, cfg: VFLConfig, resume: bool = False, force: bool = False, verb: str = "train"
             ) -> RunDir:
    """Open the run folder. A folder holding another config is refused (naming the differing keys) unless
    ``force``, which starts it afresh with ``cfg``. Without ``resume`` earlier checkpoints are removed."""
    from trustlab.runtime.rundir import read_marker

    path = Path(path)
    old_cfg = path / "config.yaml"
    if old_cfg.is_file() and (read_marker(path) or {}).get("lab") == "vfl":
        diff = config_diff(load_yaml(old_cfg), cfg)
        if diff and not force:
            what = "resuming continues the saved run, so these settings cannot change" if resume else \
                "starting it again would discard its checkpoint"
            raise ConfigError(f"run folder {str(path)!r} holds a run with another config (differing keys: "
                              f"{', '.join(diff)}); {what}",
                              hint=f"resume it as saved with `{resume_command(path)}` (no --config or other flags), "
                                   "add --no-resume to start it afresh with the new settings (discards its "
                                   "checkpoint), or choose another --out")
        if diff:
            resume = False
    try:
        run = RunDir.open(path, "vfl", verb, cfg, cfg.train.seed, resume=resume)
    except ConfigError as exc:  # the runtime's hint names flags of other commands
        if "another config" not in exc.message:
            raise
        raise ConfigError(exc.message, hint="add --no-resume to start it afresh, or choose another --out") from None
    if not resume:
        for sub in ("checkpoint", "parties", "messages", "state"):
            shutil.rmtree(run.path / sub, ignore_errors=True)
        (run.path / "run_id").unlink(missing_ok=True)
    return run


def run_identity(path: Path) -> str:
    """This run's id (``run_id`` in the folder; a fresh random one when the run starts afresh). It is part of every
    checkpoint's stamp, so a resume never picks up the state of another run that shared a party's state folder."""
    f = path / "run_id"
    if f.is_file():
        rid = read_text(f, "run id file").strip()
        if rid:
            return rid
    rid = f"{path.name[:40]}-{uuid.uuid4().hex[:12]}"
    rid = "".join(c if c.isalnum() or c in "._-" else "_" for c in rid).lstrip(".") or uuid.uuid4().hex[:12]
    f.write_text(rid + "\n")
    return rid


def label_data(cfg, vd=None):
    """A's labels: a ``label.npz`` (ids, y) if data names one without features, else from the dataset."""
    from .data import load_label_file, load_vertical

    name = cfg.data.name if cfg.data.path is None else f"{cfg.data.name}:{cfg.data.path}"
    if name.startswith("npz:"):
        from .data import _read_vfl_npz

        z = _read_vfl_npz(name[4:])  # a missing or corrupt file is a DataError naming it
        if "X" not in z and "x_train" not in z:
            return load_label_file(name[4:])
    return (vd or load_vertical(cfg)).labels


def build_transport(cfg, run_path: Path, vd=None, parties_file: str | None = None, channel_factory=None):
    """In-process parties (sharing their models with the auditor) or gRPC endpoints from ``parties.yaml``."""
    if cfg.transport.kind == "inproc":
        from .party import FeatureParty
        from .transport.inproc import InprocTransport

        return InprocTransport([FeatureParty(i, p, run_path / "parties" / f"p{i}", share_model=True)
                                for i, p in enumerate(vd.parties)])
    from .transport.grpc_client import GrpcTransport

    pf_path = parties_file or cfg.transport.parties
    if pf_path is None:
        raise ConfigError("transport grpc needs a parties file", hint="pass --parties parties.yaml")
    pf = load_parties(pf_path)
    if cfg.data.label_party_block is not None:
        raise ConfigError("data.label_party_block is supported with the inproc transport only",
                          hint="run the label party's own block as a party server on 127.0.0.1")
    eps = [(p.id, p.address, p.ca, p.cert, p.key) for p in sorted(pf.parties, key=lambda p: p.id)]
    if [e[0] for e in eps] != list(range(len(eps))):
        raise ConfigError(f"party ids must be 0..{len(eps) - 1}, got {[e[0] for e in eps]}")
    t = GrpcTransport(eps, cfg.transport, pf.ca, pf.cert, pf.key, pf.insecure, channel_factory)
    t.connect()
    return t


def train(cfg: VFLConfig, run_dir: str | Path | None = None, *, resume: bool = False, force: bool = False,
          parties_file: str | None = None, transport=None, log=print, resume_hint: str | None = None) -> TrainResult:
    """Train, embed, save artefacts; returns a ``TrainResult`` (and writes results.json). Errors write ``status: failed``;
    Ctrl-C (or any KeyboardInterrupt) writes ``status: interrupted`` and raises Interrupted whose hint resumes.
    Without ``run_dir`` the run lives in a temporary folder that is deleted with the returned result."""
    configure_threads()
    scratch = None
    if run_dir is None:
        import tempfile

        scratch = tempfile.TemporaryDirectory(prefix="trustlab-vfl-")
        run_dir = scratch.name
    from .data import load_vertical

    run = open_run(run_dir, cfg, resume, force)
    run_id = run_identity(run.path)
    hint = resume_hint or resume_command(run.path)
    t0 = time.perf_counter()
    try:
        vd = load_vertical(cfg) if cfg.transport.kind == "inproc" and transport is None else None
        labels = label_data(cfg, vd)
        transport = transport or build_transport(cfg, run.path, vd, parties_file)
        with transport:
            res, mem = _fit_and_embed(cfg, run, labels, transport, resume, log, run_id, hint)
    except KeyboardInterrupt:
        exc = Interrupted(f"interrupted; {_kept(run)}", hint=f"resume with: {hint}")
        write_failure(run, exc)
        raise exc from None
    except TrustlabError as exc:
        if isinstance(exc, ConfigError) and "--no-resume" in (exc.hint or ""):  # a checkpoint from elsewhere
            exc = ConfigError(exc.message, hint=f"start the run afresh: {fresh_command(hint)} "
                                                "(discards its checkpoint)")
        elif exc.hint and exc.hint.endswith("then resume the run with --resume"):  # a party failed: name the command
            exc.hint = exc.hint.replace("with --resume", f"with: {hint}")
        elif isinstance(exc, DataError) and "--no-resume" in (exc.hint or ""):
            exc = DataError(exc.message, hint=f"delete it, or start the run afresh: "
                                              f"{fresh_command(hint)}")
        write_failure(run, exc)
        raise exc from None
    except Exception as exc:
        write_failure(run, exc)
        raise
    res["train"]["wall_s"] = time.perf_counter() - t0
    write(run, res)
    record = json.loads((run.path / "results.json").read_text())
    mem["results"] = record
    return TrainResult(cfg, run.path, res["train"]["test_acc"], res["train"]["train_acc"], res["train"]["history"],
                       mem["msgs"], mem["codes"], record, mem, scratch)


def _kept(run: RunDir) -> str:
    ep = [e.get("epoch") for e in run.events("epoch")]
    return f"the epoch-{ep[-1] + 1} checkpoint is kept" if ep else "no epoch had finished"


class _EpochPrice:
    """After the first epoch of this process, the remaining epochs are priced at its measured pace; a run that
    would pass the time limit (``TRUSTLAB_MAX_HOURS``, default 24 h) stops with a ConfigError (exit 2)."""

    def __init__(self, epochs: int):
        self.epochs, self.first = epochs, None

    def __call__(self, rec: dict) -> None:
        from trustlab.runtime.workload import require_time

        if self.first is not None:
            return
        self.first = int(rec["epoch"])
        left = self.epochs - self.first - 1
        if left > 0:
            require_time(f"train.epochs {self.epochs:,} ({left:,} epochs left at the {rec['wall_s']:.2g} s the "
                         "first one took)", left * float(rec["wall_s"]),
                         hint="lower train.epochs (--epochs)")


def _fit_and_embed(cfg, run: RunDir, labels, transport, resume: bool, log, run_id: str, hint: str) -> dict:
    from .codes import min_hamming
    from .label import LabelParty, state_stamp
    from .metrics import bit_balance

    lp = LabelParty(cfg, labels, transport, run.path, log, run_id=run_id, resume_hint=hint)
    guard = _EpochPrice(cfg.train.epochs)
    fit = lp.fit(resume=resume, on_epoch=lambda r: (run.event("epoch", **r), guard(r)))
    msg_dir = run.artifact("messages/x").parent
    preds, msgs = {}, {}
    for split, pos in lp.splits.items():
        msgs[split] = lp.embed(split, pos)
        for i, m in enumerate(msgs[split]):
            np.save(msg_dir / f"{split}_p{i}.npy", m)
        preds[split] = lp.predict(msgs[split])
    state_dir = run.artifact("state/x").parent
    shared, states = [], {}
    stamp = state_stamp(run_id, cfg)
    for j in range(len(transport.ids)):
        st = lp.fetch_state(j)
        if st is not None:
            save_stamped(st, state_dir / f"p{j}.pt", stamp)
            shared.append(j)
            states[f"p{j}.pt"] = st
    states["top.pt"] = {k: v.detach().clone() for k, v in lp.top.state_dict().items()}
    save_stamped(states["top.pt"], state_dir / "top.pt", stamp)
    splits = {"kept": lp.kept, "y": lp.y, "ids": lp.aligned.ids, **{k: v for k, v in lp.splits.items()},
              **{f"pred_{k}": v for k, v in preds.items()}}
    np.savez(run.path / "splits.npz", **splits)
    if lp.codes is not None:
        np.save(run.path / "codes.npy", lp.codes)
    meta = {"parties": [{"id": p.id, "address": p.address, "rows": p.rows, "d": p.d,
                         "image_shape": list(p.image_shape) if p.image_shape else None,
                         "onehot": [list(g) for g in p.onehot], "share_model": p.share_model,
                         "features_sha256": p.features_sha256}
                        for p in lp.info],
            "classes": list(labels.classes), "width": lp.width, "wire": lp.wire, "shared_state": shared}
    (run.path / "meta.json").write_text(json.dumps(meta, indent=1))
    y = lp.y
    L = lp.width
    bits = L if lp.wire == "bits" else 32 * L
    res = {
        "train": {"test_acc": float(np.mean(preds["test"] == y[lp.splits["test"]])),
                  "train_acc": float(np.mean(preds["train"] == y[lp.splits["train"]])),
                  "epochs": cfg.train.epochs, "history": fit.history, "fit_wall_s": fit.wall_s,
                  "party_sha256": fit.party_sha256, "top_sha256": fit.top_sha256,
                  "n": {k: int(len(v)) for k, v in lp.splits.items()}},
        "message": {"bits_per_sample": bits, "bytes_per_sample": (L + 7) // 8 if lp.wire == "bits" else 4 * L,
                    "float32_bytes_per_sample": 4 * L, "wire": lp.wire},
    }
    if lp.codes is not None:
        yt = y[lp.splits["test"]]
        from .codes import decode

        res["codes"] = {"kind": cfg.defence.class_codes, "L": L, "min_hamming": min_hamming(lp.codes)}
        res["bit_balance"] = {f"p{i}": bit_balance(m, lp.codes, yt) for i, m in enumerate(msgs["test"])}
        res["code_decode_acc"] = {f"p{i}": float(np.mean(decode(m, lp.codes) == yt))
                                  for i, m in enumerate(msgs["test"])}
    # the same view of the run as ``evaluate.load_run`` gives from the folder, without reading it back
    mem = {"dir": run.path, "cfg": cfg, "meta": meta, "splits": splits, "msgs": msgs, "codes": lp.codes,
           "stamp": stamp, "states": states}
    return res, mem


def write(run: RunDir, res: dict, status: str = "ok") -> Path:
    """results.json with the spec's fields as extras; metrics hold the headline numbers."""
    metrics = {"test_acc": res.get("train", {}).get("test_acc")}
    for name, att in (res.get("attacks") or {}).items():
        if isinstance(att, dict) and "mse" in att:
            metrics[f"{name}_mse"] = att["mse"]
    if res.get("detection"):
        metrics.update({f"auroc_{k}": v.get("auroc") for k, v in res["detection"].items()})
    arts = sorted(str(p.relative_to(run.path)) for p in (run.path / "plots").glob("*.png"))
    extra = {k: v for k, v in res.items() if k not in ("metrics", "artifacts")}
    return run.write_results(metrics, arts, schema=SCHEMA, status=status, **extra)


def write_failure(run: RunDir, exc: BaseException) -> None:
    """``status: failed`` (or interrupted) with the error's type, message, party, address, epoch, step."""
    from trustlab.runtime import Interrupted

    err = {"type": type(exc).__name__, "message": getattr(exc, "message", str(exc)),
           "party": getattr(exc, "party", None), "address": getattr(exc, "address", None),
           "epoch": getattr(exc, "epoch", None), "step": getattr(exc, "step", None)}
    write(run, {"error": err}, status="interrupted" if isinstance(exc, Interrupted) else "failed")
