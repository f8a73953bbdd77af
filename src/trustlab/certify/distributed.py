"""Multi-rank certification under an existing launcher (``torchrun``, ``accelerate launch``, ``srun`` + torchrun).

The launcher's environment decides: RANK, WORLD_SIZE and LOCAL_RANK (WORLD_SIZE absent or 1: one process, nothing
here does anything). With WORLD_SIZE > 1 every rank joins a ``torch.distributed`` process group (gloo on the CPU,
nccl on CUDA, device ``cuda:LOCAL_RANK``), and randomized smoothing runs per input shard:

  1. every rank reads what is already certified under the same settings (the stamp of the record file) from the
     run's merged file ``<set>.jsonl`` and from any per-rank file ``<set>.rank<r>.jsonl`` (of any world size);
  2. rank r certifies the inputs with idx = r (mod WORLD_SIZE) that are still missing, appending them to its own
     ``<set>.rank<r>.jsonl`` (stamped, flushed per chunk: an interrupted rank resumes from it);
  3. after a barrier rank 0 merges the records by idx into ``<set>.jsonl`` and removes the rank files.

Noise for input idx comes from streams seeded by (seed, idx) only, so the merged file holds, record for record,
what one process writes with the same seed, whatever the world size (on one device type). Bound certifiers are
cheap and run on rank 0 alone. Every step ends in an ``agree``: a barrier at which a rank's error is raised on every
rank (the lowest failing rank's message), so one bad input never leaves the others waiting.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from trustlab.runtime import BackendError, ConfigError, MissingDependencyError, TrustlabError
from trustlab.runtime import errors as _errors

from .config import SMOOTHING_CERTIFIERS

T = TypeVar("T")
ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Ranks:
    """This process's place in the launch: ``rank`` of ``world`` processes, ``local_rank`` on its host."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        """(rank, world): this rank certifies idx = rank (mod world)."""
        return self.rank, self.world


def ranks_from_env(env: dict | None = None) -> Ranks:
    """The ranks the launcher set (RANK, WORLD_SIZE, LOCAL_RANK; defaults 0, 1, RANK). A value that is not an
    integer in range is a ConfigError naming the variable."""
    env = os.environ if env is None else env
    vals = {}
    for name, default in (("WORLD_SIZE", "1"), ("RANK", "0")):
        vals[name] = _env_int(env, name, env.get(name, default))
    world, rank = vals["WORLD_SIZE"], vals["RANK"]
    local = _env_int(env, "LOCAL_RANK", env.get("LOCAL_RANK", str(rank)))
    if world < 1:
        raise ConfigError(f"WORLD_SIZE must be >= 1, got {world}", hint="let torchrun set it (one rank per process)")
    if not 0 <= rank < world:
        raise ConfigError(f"RANK must lie in [0, WORLD_SIZE={world}), got {rank}", hint="let torchrun set RANK")
    if local < 0:
        raise ConfigError(f"LOCAL_RANK must be >= 0, got {local}", hint="let torchrun set LOCAL_RANK")
    return Ranks(rank, world, local)


def _env_int(env, name: str, text: str) -> int:
    try:
        return int(str(text).strip())
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer, got {text!r}",
                          hint="launch with torchrun / accelerate launch, which set RANK, WORLD_SIZE, LOCAL_RANK; "
                               "or unset them for one process") from None


def rank_device(ranks: Ranks, device: str = "auto") -> str:
    """The device this rank certifies on: ``auto`` is ``cuda:LOCAL_RANK`` when CUDA is available, else ``cpu``;
    ``cuda`` is ``cuda:LOCAL_RANK``; ``cpu`` and ``cuda:i`` stay. CUDA asked for but absent: MissingDependencyError."""
    import torch

    if device == "auto":
        return f"cuda:{ranks.local_rank}" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise MissingDependencyError(f"--device {device} but torch sees no CUDA device",
                                         hint="use --device cpu (or auto), or install a CUDA build of torch")
        return f"cuda:{ranks.local_rank}" if device == "cuda" else device
    return device


@contextlib.contextmanager
def process_group(ranks: Ranks, timeout_s: float = 1800.0, device: str = "auto") -> Iterator[Ranks]:
    """Join the launcher's process group for the block (WORLD_SIZE > 1; backend nccl when this rank certifies on
    CUDA, gloo on the CPU) and leave it after. A group that cannot start is a BackendError (exit 4) naming the backend
    and the rendezvous."""
    if ranks.world == 1:
        yield ranks
        return
    import torch
    import torch.distributed as dist

    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
    if missing:
        raise ConfigError(f"WORLD_SIZE={ranks.world} but {', '.join(missing)} is not set, so the process group "
                          f"cannot start",
                          hint="launch with torchrun ... -m trustlab certify eval ... (docs/certify.md), which sets "
                               "the rendezvous; or unset WORLD_SIZE for one process")
    cuda = rank_device(ranks, device).startswith("cuda")
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(torch.device(rank_device(ranks, device)))
    where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:
        dist.init_process_group(backend, rank=ranks.rank, world_size=ranks.world,
                                timeout=datetime.timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BackendError(f"WORLD_SIZE={ranks.world} but the {backend} process group of rank {ranks.rank} cannot "
                           f"start at {where}: {first}",
                           hint="start every rank with the same torchrun command (MASTER_ADDR/MASTER_PORT reachable "
                                "from every host), or unset WORLD_SIZE for one process") from None
    try:
        yield ranks
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def agree(ranks: Ranks, error: TrustlabError | None = None) -> None:
    """A barrier that shares failures: when any rank arrives with an ``error``, every rank raises the error of the
    lowest failing rank (same kind, message and hint), so no rank waits for one that has given up."""
    if ranks.world == 1:
        if error is not None:
            raise error
        return
    import torch.distributed as dist

    mine = None if error is None else (type(error).__name__, error.message, error.hint)
    got: list = [None] * ranks.world
    dist.all_gather_object(got, mine)
    for r, e in enumerate(got):
        if e is not None:
            if r == ranks.rank and error is not None:
                raise error
            kind = getattr(_errors, e[0], None)
            kind = kind if isinstance(kind, type) and issubclass(kind, TrustlabError) else ConfigError
            raise kind(f"rank {r}: {e[1]}", hint=e[2])


def step(ranks: Ranks, fn: Callable[[], T], *, only_main: bool = False) -> T | None:
    """Run ``fn`` on this rank (on rank 0 alone with ``only_main``), then ``agree``."""
    out = None
    try:
        if ranks.main or not only_main:
            out = fn()
    except TrustlabError as exc:
        agree(ranks, exc)
        raise
    agree(ranks)
    return out


# --- sharded records ------------------------------------------------------------------------------------------------
def rank_file(records: str | Path, rank: int) -> Path:
    """``<set>.rank<r>.jsonl`` beside the merged ``<set>.jsonl``: what rank r has certified so far."""
    p = Path(records)
    return p.with_name(f"{p.stem}.rank{rank}{p.suffix}")


def _rank_files(records: Path) -> list[Path]:
    return sorted(records.parent.glob(f"{records.stem}.rank*{records.suffix}")) if records.parent.is_dir() else []


def _finished(path: Path, settings: dict, on_stale: str) -> dict[int, dict]:
    """Records of ``path`` by idx when it carries the stamp of ``settings``; {} when absent or (``discard``) stale;
    a stale file under ``refuse`` is refused naming the differing settings. Writes nothing (ranks read at once)."""
    from .records import stamped_records

    return {int(r["idx"]): r for r in stamped_records(path, settings, on_stale)}


def certify_sharded(model, x, y, name: str, cfg, *, seed: int, K: int | None, records: str | Path,
                    ranks: Ranks, resume: bool = True, on_stale: str = "refuse"):
    """``run_certifier`` across ranks (see the module docstring): (records, summary, params), the same on every
    rank and equal to one process's. ``records`` is the merged file; the per-rank files sit beside it."""
    import numpy as np

    from .certifiers import record_settings, run_certifier, shard_records
    from .records import append_records, open_records

    records = Path(records)
    if ranks.world == 1 or name not in SMOOTHING_CERTIFIERS:
        out = step(ranks, lambda: run_certifier(model, x, y, name, cfg, seed=seed, K=K, records=records,
                                                resume=resume, on_stale=on_stale), only_main=True)
        if ranks.main:
            return out
        return run_certifier(model, x, y, name, cfg, seed=seed, K=K, records=records, resume=True,
                             on_stale="refuse")
    settings = record_settings(model, x, y, name, cfg, seed=seed, K=K)
    rank, world = ranks.shard
    own = rank_file(records, rank)
    idx = np.arange(len(x))

    def gather() -> dict[int, dict]:
        # 1. what any earlier run (one process or any world size) finished under these settings
        if not resume:
            return {}
        done: dict[int, dict] = {}
        for path in (records, *_rank_files(records)):
            done.update(_finished(path, settings, on_stale))
        return {i: r for i, r in done.items() if i % world == rank}

    done = step(ranks, gather)

    def work() -> None:
        # 2. this rank's shard, resumed from its own file seeded with what the others had finished
        if rank == 0 and not resume:
            for p in _rank_files(records):
                if p != own:
                    p.unlink(missing_ok=True)
        have = {int(r["idx"]) for r in open_records(own, settings, resume=resume, on_stale=on_stale)}
        add = [done[i] for i in sorted(done) if i not in have]
        if add:
            append_records(own, add)
        shard_records(model, x, y, name, cfg, seed=seed, K=K, records=own, shard=(rank, world), resume=True,
                      on_stale="refuse")

    step(ranks, work)  # (gather's agree: nobody writes before everybody has read)

    def merge() -> None:
        # 3. rank 0: one file, records by idx, as one process writes it
        got: dict[int, dict] = {}
        for p in _rank_files(records):
            got.update(_finished(p, settings, "discard"))
        missing = [int(i) for i in idx if int(i) not in got]
        if missing:
            raise ConfigError(f"after all ranks finished, {len(missing)} inputs of {str(records)!r} have no record "
                              f"(first idx {missing[0]})", hint="rerun the same command: finished inputs resume")
        open_records(records, settings, resume=False)
        append_records(records, [got[int(i)] for i in idx])
        for p in _rank_files(records):
            p.unlink(missing_ok=True)

    step(ranks, merge, only_main=True)
    return run_certifier(model, x, y, name, cfg, seed=seed, K=K, records=records, resume=True, on_stale="refuse")

