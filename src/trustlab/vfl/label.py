"""The label party A: holds y, the top model g, the class codes and the loss; drives every party over a Transport."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trustlab.models.identity import weights_digest
from trustlab.runtime import DataError, Interrupted, ModelError, config_hash, derive_seed, load_stamped, progress, save_stamped

from . import protocol as P
from .commands import fresh_command, resume_command
from .config import HASHED
from .errors import MalformedMessageError, ProtocolMismatchError
from .party import EMBED_PAGE, PartyInfo, party_config


def state_stamp(run_id: str, cfg) -> str:
    """Stamp of the label checkpoint and the saved models: the run id plus the config hash."""
    return f"run {run_id} config {config_hash(cfg)}"


class TrainingDiverged(ModelError):
    """The loss became NaN/inf; the last epoch checkpoint is kept."""


@dataclass
class FitResult:
    history: list[dict]
    wall_s: float
    epochs_run: int
    party_sha256: list[str]
    top_sha256: str


class LabelParty:
    def __init__(self, cfg, labels, transport, run_dir: str | Path, log=None, run_id: str | None = None,
                 resume_hint: str | None = None):
        import torch

        self.cfg, self.labels, self.transport = cfg, labels, transport
        self.run_dir = Path(run_dir)
        self.run_id = run_id or self.run_dir.name
        self.resume_hint = resume_hint or resume_command(self.run_dir)
        self.log = log or (lambda *_: None)
        self.seed = cfg.train.seed
        self.defence_cfg = cfg.defence
        self.width = cfg.defence.width
        self.hashed = cfg.defence.kind in HASHED
        from .defences import build_defence

        self.defence = build_defence(cfg.defence, self.seed)
        self.wire = self.defence.wire
        self.conf = party_config(cfg)
        self.conf_hash = config_hash(self.conf)
        self.salt = f"trustlab-vfl:{config_hash(cfg.data)}"
        self.torch = torch
        self.info: list[PartyInfo] = []

    # --- connection ----------------------------------------------------------------------------
    def connect(self, resume_epoch: int = 0) -> None:
        """hello (config, ids, resume epoch) and align (intersect the salted id hashes in A's order)."""
        from .data import align, hash_ids, make_splits

        t = self.transport
        reqs = [P.encode({"type": "hello", "party": pid, "protocol": P.PROTOCOL_VERSION, "config": self.conf,
                          "config_hash": self.conf_hash, "resume_epoch": resume_epoch, "salt": self.salt,
                          "run_id": self.run_id}) for pid in t.ids]
        replies = t.exchange("hello", reqs)
        hashes, self.info = [], []
        for pid, addr, rep in zip(t.ids, t.addresses, replies):
            h, a = P.decode(rep, pid)
            P.expect(h, pid, type="hello", party=pid)
            if str(h.get("versions", {}).get("protocol")) != str(P.PROTOCOL_VERSION):
                raise ProtocolMismatchError(f"party {pid} ({addr}) speaks protocol "
                                            f"{h.get('versions', {}).get('protocol')}, A {P.PROTOCOL_VERSION}",
                                            party=pid, address=addr)
            if h.get("config_hash") != self.conf_hash:
                raise ProtocolMismatchError(f"party {pid} ({addr}) echoed config hash {h.get('config_hash')}, "
                                            f"expected {self.conf_hash}", party=pid, address=addr)
            rows = int(h.get("rows", -1))
            hashes.append(P.validate_array(a, "id_hashes", pid, "uint8", (rows, 32)))
            shape = h.get("image_shape")
            self.info.append(PartyInfo(pid, addr, rows, int(h["d"]), tuple(shape) if shape else None,
                                       tuple(tuple(g) for g in h.get("onehot") or ()), bool(h.get("share_model")),
                                       h.get("versions", {}), h.get("features_sha256")))
        kept, rows = align(hash_ids(self.labels.ids, self.salt), hashes)
        replies = t.exchange("align", [P.encode({"type": "align", "party": pid}, {"rows": r})
                                       for pid, r in zip(t.ids, rows)])
        for pid, rep, r in zip(t.ids, replies, rows):
            h, _ = P.decode(rep, pid)
            P.expect(h, pid, type="align", party=pid, rows=len(r))
        from .data import LabelData

        lab = self.labels
        self.kept = kept
        self.y = lab.y[kept]
        self.aligned = LabelData(lab.ids[kept], self.y, lab.classes,
                                 None if lab.test_mask is None else lab.test_mask[kept])
        self.splits = make_splits(self.aligned, self.cfg.data, self.seed)
        self.C = len(lab.classes)
        self._build()

    def _build(self) -> None:
        torch = self.torch
        from .codes import class_codes
        from .models import TopMLP, seeded_init

        n = len(self.transport.ids)
        self.top = seeded_init(TopMLP(n * self.width, self.cfg.model.top_hidden, self.C),
                               derive_seed(self.seed, "top"))
        self.opt = torch.optim.Adam(self.top.parameters(), lr=self.cfg.train.lr,
                                    weight_decay=self.cfg.train.weight_decay)
        self.codes = (class_codes(self.C, self.width, self.defence_cfg.class_codes, derive_seed(self.seed, "codes"))
                      if self.hashed else None)
        self.codes_t = None if self.codes is None else torch.from_numpy(self.codes.astype(np.float32))

    # --- one step ---------------------------------------------------------------------------------
    def _exchange_step(self, epoch: int, step: int, grads, positions):
        reqs = []
        for j, pid in enumerate(self.transport.ids):
            arrays = {}
            if grads is not None:
                arrays["grad"] = grads[j]
            if positions is not None:
                arrays["positions"] = positions
            reqs.append(P.encode({"type": "step", "party": pid, "epoch": epoch, "step": step}, arrays))
        replies = self.transport.exchange("step", reqs, epoch, step)
        msgs = []
        for pid, rep in zip(self.transport.ids, replies):
            h, a = P.decode(rep, pid)
            P.expect(h, pid, type="step", party=pid, epoch=epoch, step=step)
            if positions is not None:
                msgs.append(P.validate_message(a, pid, self.wire, self.width, len(positions)))
            elif a:
                raise MalformedMessageError(pid, "arrays", "none", sorted(a))
        return msgs

    def loss(self, ms, yb):
        """CE(g([m_i]), y) + w_c (1/N) sum_i mean_b (1 - cos(m_i, o_y)) for hashed defences (``hashed.hashvfl_loss``)."""
        from .hashed import hashvfl_loss

        logits = self.top(self.torch.cat(ms, dim=1))
        w = self.defence_cfg.consistency_weight if self.hashed else 0.0
        return hashvfl_loss(logits, ms, yb, self.codes_t, w), logits

    # --- training -------------------------------------------------------------------------------
    def fit(self, resume: bool = False, on_epoch=None) -> FitResult:
        """Train for ``train.epochs`` (from the last checkpoint with ``resume``); checkpoints at every epoch end."""
        torch = self.torch
        from .schedule import lr_at

        tc = self.cfg.train
        ckpt = self.run_dir / "checkpoint" / "label.pt"
        start, history, party_sha = 0, [], []
        stamp = state_stamp(self.run_id, self.cfg)
        try:
            state = load_stamped(ckpt, stamp, "label-party checkpoint") if resume else None  # weights_only=True
        except DataError as exc:
            fresh = fresh_command(self.resume_hint)
            detail = exc.message.split(str(ckpt), 1)[-1].strip(" '")
            raise DataError(f"label-party checkpoint {str(ckpt)!r} is refused: truncated or corrupt, or not a "
                            f"trustlab checkpoint ({detail})", hint=f"start the run afresh: {fresh}") from None
        if state is not None:
            start, history, party_sha = int(state["epoch"]), list(state["history"]), list(state["party_sha256"])
        self.connect(resume_epoch=start)
        if start:
            self.top.load_state_dict(state["top"])
            self.opt.load_state_dict(state["opt"])
            self.defence.load_state_dict(state["defence"])
        train_pos = self.splits["train"]
        B = tc.batch_size
        steps = len(train_pos) // B  # drop_last
        if steps == 0:
            from trustlab.runtime import ConfigError

            raise ConfigError(f"0 steps per epoch: {len(train_pos)} training rows < batch_size {B}",
                              hint="lower train.batch_size")
        stop = _StopFlag()
        t0 = time.perf_counter()
        with stop:
            for epoch in progress(range(start, tc.epochs), "vfl train", total=tc.epochs - start):
                lr = lr_at(epoch, tc.lr, tc.milestones, tc.gamma)
                for g in self.opt.param_groups:
                    g["lr"] = lr
                self.top.train()
                rng = np.random.default_rng(derive_seed(self.seed, "shuffle", epoch))
                batches = rng.permutation(train_pos)[:steps * B].reshape(steps, B)
                msgs = self._exchange_step(epoch, 0, None, batches[0])
                tot_loss, correct = 0.0, 0
                for s in range(steps):
                    yb = torch.from_numpy(self.y[batches[s]])
                    ms = [torch.from_numpy(m).requires_grad_(True) for m in msgs]
                    loss, logits = self.loss(ms, yb)
                    if not torch.isfinite(loss):
                        raise TrainingDiverged(f"loss is {loss.item()} at epoch {epoch} step {s}",
                                               hint=f"lower train.lr (now {tc.lr:g}) in the config and start afresh "
                                                    "(--no-resume, or another --out): a resume keeps the saved lr")
                    self.opt.zero_grad(set_to_none=True)
                    loss.backward()
                    self.opt.step()
                    tot_loss += loss.item()
                    correct += int((logits.argmax(1) == yb).sum())
                    grads = [self.defence.grad(m.grad, j).numpy().astype(np.float32) for j, m in enumerate(ms)]
                    nxt = batches[s + 1] if s + 1 < steps else None
                    msgs = self._exchange_step(epoch, s + 1, grads, nxt)
                    if stop.flag:
                        raise Interrupted(f"interrupted at epoch {epoch} step {s}; the epoch-{epoch} checkpoint "
                                          "is kept", hint=f"resume with: {self.resume_hint}")
                party_sha = self.checkpoint(epoch + 1)
                rec = {"epoch": epoch, "lr": lr, "loss": tot_loss / steps, "train_acc": correct / (steps * B),
                       "wall_s": time.perf_counter() - t0}
                history.append(rec)
                save_stamped({"epoch": epoch + 1, "top": self.top.state_dict(), "opt": self.opt.state_dict(),
                              "defence": self.defence.state_dict(), "history": history,
                              "party_sha256": party_sha}, ckpt, stamp)
                if on_epoch:
                    on_epoch(rec)
        return FitResult(history, time.perf_counter() - t0, tc.epochs - start, party_sha, weights_digest(self.top))

    def checkpoint(self, epoch: int) -> list[str]:
        """Every party saves ``epoch_E.pt``; returns their parameter SHA-256s."""
        t = self.transport
        replies = t.exchange("checkpoint", [P.encode({"type": "checkpoint", "party": pid, "epoch": epoch})
                                            for pid in t.ids], epoch, None)
        out = []
        for pid, rep in zip(t.ids, replies):
            h, _ = P.decode(rep, pid)
            P.expect(h, pid, type="checkpoint", party=pid, epoch=epoch)
            out.append(str(h.get("sha256")))
        return out

    # --- evaluation -------------------------------------------------------------------------------
    def embed(self, split: str, positions: np.ndarray) -> list[np.ndarray]:
        """Eval-mode messages of every party for ``positions`` (paged), as float32 (n, width)."""
        t = self.transport
        parts: list[list[np.ndarray]] = [[] for _ in t.ids]
        for page, a in enumerate(range(0, len(positions), EMBED_PAGE)):
            pos = np.asarray(positions[a:a + EMBED_PAGE], dtype=np.int64)
            replies = t.exchange("embed", [P.encode({"type": "embed", "party": pid, "split": split, "page": page},
                                                    {"positions": pos}) for pid in t.ids])
            for j, (pid, rep) in enumerate(zip(t.ids, replies)):
                h, arr = P.decode(rep, pid)
                P.expect(h, pid, type="embed", party=pid, split=split, page=page)
                parts[j].append(P.validate_message(arr, pid, self.wire, self.width, len(pos)))
        return [np.concatenate(p) if p else np.zeros((0, self.width), np.float32) for p in parts]

    def predict(self, msgs: list[np.ndarray]) -> np.ndarray:
        torch = self.torch
        self.top.eval()
        with torch.no_grad():
            return self.top(torch.from_numpy(np.concatenate(msgs, axis=1))).argmax(1).numpy()

    def fetch_state(self, j: int):
        """Bottom weights of party index ``j`` if it opted in (``--share-model``), else None."""
        if not self.info[j].share_model:
            return None
        pid = self.transport.ids[j]
        reqs = [P.encode({"type": "state", "party": pid}) if k == j else None for k in range(len(self.transport.ids))]
        rep = self.transport.exchange("state", reqs)[j]
        h, a = P.decode(rep, pid)
        P.expect(h, pid, type="state", party=pid)
        from .party import state_from_reply

        return state_from_reply(h, a)


class _StopFlag:
    """Ctrl-C during training: finish the current step, then raise Interrupted (checkpoints are kept)."""

    def __init__(self):
        self.flag = False
        self.old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.old = signal.signal(signal.SIGINT, self._set)
        return self

    def _set(self, *_):
        if self.flag:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.flag = True

    def __exit__(self, *exc):
        if self.old is not None:
            signal.signal(signal.SIGINT, self.old)
