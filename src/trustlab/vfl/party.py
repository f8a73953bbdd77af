"""The two roles of splitVFL. ``FeatureParty.handle(bytes) -> bytes`` serves one data owner (in-process or behind
gRPC: the same bytes either way); ``LabelParty`` drives training over any Transport.

One step: A sends batch positions -> P_i replies m_i = D(f_i(x_i)) -> A computes CE(g([m_0..m_{N-1}]), y)
(+ the consistency loss for hashed defences) and dL/dm_i, applies any gradient defence and returns the
gradients, fused with the next positions -> P_i backpropagates, steps its own Adam, and answers the next batch.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trustlab.models.identity import weights_digest
from trustlab.runtime import ConfigError, config_hash, derive_seed, from_dict, load_stamped, save_stamped, to_dict

from . import protocol as P
from .config import DefenceConfig, ModelConfig, TrainConfig
from .errors import MalformedMessageError, ProtocolMismatchError

EMBED_PAGE = 4096
RUN_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")  # a run id names a folder: no path tricks
KEEP_EPOCHS = 2  # the label party may have saved the previous epoch only, so keep the last two


def checkpoint_stamp(run_id: str, conf_hash: str) -> str:
    """A party checkpoint belongs to one run (its id) and one party config (its hash)."""
    return f"run {run_id} config {conf_hash}"


def party_config(cfg) -> dict[str, Any]:
    """The part of the run config a feature party needs (model, defence, train)."""
    return {"model": to_dict(cfg.model), "defence": to_dict(cfg.defence), "train": to_dict(cfg.train)}


def versions() -> dict[str, str]:
    import torch

    from trustlab import __version__

    return {"protocol": str(P.PROTOCOL_VERSION), "trustlab": __version__, "torch": torch.__version__,
            "python": platform.python_version()}


class FeatureParty:
    """A data owner: holds x_i, f_i (+ BN and sign for HashVFL) and its own Adam; sends messages, never features.

    ``fault`` (tests only, enabled by TRUSTLAB_VFL_FAULTS=1): ``bad-shape@S`` or ``raise@S`` at training step S.
    """

    def __init__(self, party_id: int, data, state_dir: str | Path | None = None, share_model: bool = False,
                 device: str = "cpu", fault: str | None = None):
        self.id = party_id
        self.data = data
        self.X = data.X
        self.state_dir = Path(state_dir) if state_dir else None
        self.share_model = share_model
        self.device = device
        self.fault = _parse_fault(fault)
        self.model = None
        self.calls = 0

    # --- dispatch -------------------------------------------------------------------------------
    def handle(self, request: bytes) -> bytes:
        header, arrays = P.decode(request, party=None)
        kind = header.get("type")
        if kind not in P.KINDS:
            raise MalformedMessageError(None, "type", "|".join(P.KINDS), kind)
        if header.get("party") != self.id:
            raise ProtocolMismatchError(f"message for party {header.get('party')} reached party {self.id}",
                                        hint="check the ids and addresses in parties.yaml")
        self.calls += 1
        if kind != "hello" and self.model is None:
            raise ProtocolMismatchError(f"party {self.id} got {kind} before hello")
        return getattr(self, f"_{kind}")(header, arrays)

    def _reply(self, kind: str, arrays: dict[str, np.ndarray] | None = None, **fields) -> bytes:
        return P.encode({"type": kind, "party": self.id, **fields}, arrays)

    # --- hello / align --------------------------------------------------------------------------
    def _hello(self, h: dict, a: dict) -> bytes:
        import torch

        from .defences import build_defence
        from .models import build_party_model

        if str(h.get("protocol")) != str(P.PROTOCOL_VERSION):
            raise ProtocolMismatchError(f"party {self.id} speaks protocol {P.PROTOCOL_VERSION}, "
                                        f"the label party {h.get('protocol')}", hint="install the same trustlab version")
        conf = h.get("config") or {}
        if config_hash(conf) != h.get("config_hash"):
            raise ProtocolMismatchError(f"party {self.id}: config hash {h.get('config_hash')} does not match the "
                                        f"config sent ({config_hash(conf)})")
        self.model_cfg = from_dict(ModelConfig, conf.get("model"), "model")
        self.def_cfg = from_dict(DefenceConfig, conf.get("defence"), "defence")
        self.train_cfg = from_dict(TrainConfig, conf.get("train"), "train")
        seed = self.train_cfg.seed
        self.X = self.data.X
        self.model = build_party_model(self.data.d, self.model_cfg, self.def_cfg, self.data.image_shape,
                                       derive_seed(seed, self.id, "init")).to(self.device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=self.train_cfg.lr,
                                    weight_decay=self.train_cfg.weight_decay)
        self.defence = build_defence(self.def_cfg, seed)
        self.pending = None  # (message tensor with graph, epoch) awaiting its gradient
        run_id = h.get("run_id")
        if not isinstance(run_id, str) or not RUN_ID.match(run_id):
            raise ProtocolMismatchError(f"party {self.id}: hello carries an invalid run id {run_id!r}",
                                        hint="a run id is 1-64 letters, digits, '.', '_' or '-'")
        self.run_id = run_id
        self.stamp = checkpoint_stamp(run_id, h["config_hash"])
        resume = int(h.get("resume_epoch") or 0)
        if resume:
            self._load(resume)
        from .data import features_sha256, hash_ids

        return self._reply("hello", {"id_hashes": hash_ids(self.data.ids, str(h.get("salt", "")))},
                           rows=len(self.data.X), d=self.data.d,
                           features_sha256=features_sha256(self.data.feature_names) if self.data.named else None,
                           image_shape=list(self.data.image_shape) if self.data.image_shape else None,
                           onehot=[list(g) for g in self.data.onehot], versions=versions(),
                           config_hash=h.get("config_hash"), resume_epoch=resume, share_model=self.share_model)

    def _align(self, h: dict, a: dict) -> bytes:
        rows = P.validate_positions(a, "rows", None, len(self.data.X))
        self.X = self.data.X[rows]
        return self._reply("align", rows=len(rows))

    # --- training -------------------------------------------------------------------------------
    def _step(self, h: dict, a: dict) -> bytes:
        import torch

        from .schedule import lr_at

        epoch, step = int(h["epoch"]), int(h["step"])
        if self.fault and self.fault[1] == step and self.fault[0] == "raise":
            raise ValueError(f"injected fault at step {step}")
        if "grad" in a:
            if self.pending is None:
                raise ProtocolMismatchError(f"party {self.id} got a gradient with no pending forward pass")
            m, ep = self.pending
            g = P.validate_array(a, "grad", None, "float32", tuple(m.shape))
            lr = lr_at(ep, self.train_cfg.lr, self.train_cfg.milestones, self.train_cfg.gamma)
            for group in self.opt.param_groups:
                group["lr"] = lr
            self.opt.zero_grad(set_to_none=True)
            m.backward(torch.from_numpy(g.copy()).to(self.device))
            self.opt.step()
            self.pending = None
        arrays = {}
        if "positions" in a:
            pos = P.validate_positions(a, "positions", None, len(self.X))
            if len(pos) < 2:
                raise ValueError(f"a batch of {len(pos)} rows cannot be normalised (BatchNorm needs >= 2)")
            self.model.train()
            x = torch.from_numpy(self.X[pos]).to(self.device)
            m = self.defence.party(self.model(x), (self.id, "train", epoch, step))
            if not torch.isfinite(m).all():
                raise FloatingPointError(f"party {self.id}'s message is non-finite at epoch {epoch} step {step}: "
                                         "training diverged; lower train.lr in the config and start the run afresh")
            self.pending = (m, epoch)
            arrays["msg"] = self._wire(m.detach())
            if self.fault and self.fault[1] == step and self.fault[0] == "bad-shape":
                arrays["msg"] = arrays["msg"][:, :-1] if arrays["msg"].shape[1] > 1 else arrays["msg"][:-1]
        return self._reply("step", arrays, epoch=epoch, step=step)

    def _wire(self, m) -> np.ndarray:
        from .codes import pack_bits

        m = m.cpu().numpy()
        return pack_bits(m) if self.defence.wire == "bits" else m.astype(np.float32)

    def _embed(self, h: dict, a: dict) -> bytes:
        """Eval-mode messages (BN running stats; fresh noise keyed by the split) for the given rows."""
        import torch

        pos = P.validate_positions(a, "positions", None, len(self.X))
        self.model.eval()
        with torch.no_grad():
            x = torch.from_numpy(self.X[pos]).to(self.device)
            m = self.defence.party(self.model(x), (self.id, f"eval:{h.get('split')}", 0, int(h.get("page", 0))))
        return self._reply("embed", {"msg": self._wire(m)}, split=h.get("split"), page=h.get("page", 0))

    # --- state ----------------------------------------------------------------------------------
    def _run_dir(self) -> Path:
        """``state_dir/<run id>``: runs sharing a state folder never read or overwrite each other's checkpoints."""
        if self.state_dir is None:
            raise ConfigError(f"party {self.id} has no state directory", hint="start the party with --state-dir DIR")
        return self.state_dir / self.run_id

    def _path(self, epoch: int) -> Path:
        return self._run_dir() / f"epoch_{epoch}.pt"

    def _checkpoint(self, h: dict, a: dict) -> bytes:
        """Save ``epoch_E.pt`` stamped with the run id and config hash; keep only the last KEEP_EPOCHS of them."""
        epoch = int(h["epoch"])
        save_stamped({"model": self.model.state_dict(), "opt": self.opt.state_dict(), "epoch": epoch},
                     self._path(epoch), self.stamp)
        for old in self._run_dir().glob("epoch_*.pt"):
            num = old.stem.removeprefix("epoch_")
            if num.isdigit() and int(num) <= epoch - KEEP_EPOCHS:
                old.unlink(missing_ok=True)
        return self._reply("checkpoint", epoch=epoch, sha256=weights_digest(self.model))

    def _load(self, epoch: int) -> None:
        """Resume from this run's ``epoch_E.pt``; a missing file, or one from another run or config, is refused."""
        path = self._path(epoch)
        if not path.is_file():
            have = sorted(p.name for p in path.parent.glob("epoch_*.pt")) if path.parent.is_dir() else []
            raise ConfigError(f"party {self.id} has no checkpoint for run {self.run_id} epoch {epoch} in "
                              f"{str(path.parent)!r} (found: {', '.join(have) or 'none'})",
                              hint="start the party with the --state-dir it used for this run, or start the run "
                                   "afresh with --no-resume")
        state = load_stamped(path, self.stamp, f"party {self.id} checkpoint")
        if not isinstance(state, dict) or state.get("epoch") != epoch:
            raise ConfigError(f"party {self.id} checkpoint {str(path)!r} holds epoch "
                              f"{state.get('epoch') if isinstance(state, dict) else None}, not {epoch}",
                              hint="start the run afresh with --no-resume")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])

    def _state(self, h: dict, a: dict) -> bytes:
        """Bottom weights for the white-box audit, only if the party opted in (``--share-model``)."""
        if not self.share_model:
            raise PermissionError(f"party {self.id} did not opt in to share its model (--share-model)")
        sd = self.model.state_dict()
        names = list(sd)
        arrays = {f"t{j}": v.detach().cpu().numpy() for j, v in enumerate(sd.values())}
        return self._reply("state", arrays, names=names, sha256=weights_digest(self.model))


def _parse_fault(fault: str | None):
    if not fault:
        return None
    if os.environ.get("TRUSTLAB_VFL_FAULTS") != "1":
        raise ConfigError("--fault is for tests only", hint="set TRUSTLAB_VFL_FAULTS=1 to enable fault injection")
    kind, _, at = fault.partition("@")
    if kind not in ("bad-shape", "raise") or not at.isdigit():
        raise ConfigError(f"bad --fault {fault!r}", hint="use bad-shape@STEP or raise@STEP")
    return kind, int(at)


def state_from_reply(header: dict, arrays: dict) -> dict:
    """A ``state`` reply -> a torch state_dict."""
    import torch

    return {name: torch.from_numpy(arrays[f"t{j}"].copy()) for j, name in enumerate(header["names"])}


@dataclass
class PartyInfo:
    """What A learned about a party at hello."""

    id: int
    address: str
    rows: int
    d: int
    image_shape: tuple[int, ...] | None
    onehot: tuple[tuple[int, ...], ...] = ()
    share_model: bool = False
    versions: dict = field(default_factory=dict)
    features_sha256: str | None = None

