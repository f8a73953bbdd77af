"""Run folders: ``config.yaml``, atomic ``results.json``, append-only ``events.jsonl`` with resume."""

from __future__ import annotations

import datetime as dt
import platform
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .config import config_diff, config_hash, dump_yaml, load_yaml, to_dict
from .errors import ConfigError
from .files import at_path, writable_dir
from .io import append_jsonl, read_jsonl, write_json_atomic

# Run folders opened in this process, newest last: on Ctrl-C the CLI marks them interrupted and prints the command
# that resumes the newest one.
_OPEN: list["RunDir"] = []
# Flags that discard earlier work: a resume command must not carry them.
FRESH_FLAGS = ("--no-resume", "--force", "--overwrite", "--fresh")
_MARKERS = ("config_hash", "config.yaml", "results.json", "events.jsonl")
_ARGV: list[str] | None = None


def begin_command(argv: list[str] | None) -> None:
    """Called by the CLI before each command: the arguments resume hints repeat, and no run folder open yet."""
    global _ARGV
    _ARGV = None if argv is None else list(argv)
    _OPEN.clear()


def resume_command(argv: list[str] | None = None) -> str:
    """The command line of this CLI call with the flags that discard work removed: pasting it resumes the run
    (every verb resumes by default)."""
    args = list(argv if argv is not None else _ARGV if _ARGV is not None else sys.argv[1:])
    return shlex.join(["trustlab", *[a for a in args if a not in FRESH_FLAGS]])


def mark_interrupted() -> str | None:
    """Record ``status: interrupted`` in every open run folder; return the newest one's resume hint."""
    for run in _OPEN:
        try:
            run.event("status", status="interrupted")
        except OSError:
            pass
    return f"resume with: {_OPEN[-1].resume_hint}" if _OPEN else None


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_run_path(lab: str, verb: str, root: str | Path = "runs") -> Path:
    """``runs/<lab>-<verb>-<UTC timestamp>``."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path(root) / f"{lab}-{verb}-{stamp}"


def environment() -> dict[str, Any]:
    """Python, torch, device and thread facts for results.json (torch only if already imported)."""
    env: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform()}
    torch = sys.modules.get("torch")
    if torch is not None:
        env["torch"] = torch.__version__
        env["threads"] = torch.get_num_threads()
        env["device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    try:
        import numpy

        env["numpy"] = numpy.__version__
    except ImportError:
        pass
    return env


@dataclass
class RunDir:
    """One run's folder.

    ``open`` writes ``config.yaml`` and ``config_hash``; re-opening an existing folder with a different
    config hash refuses (``resume=False`` starts the folder afresh instead of resuming).
    """

    path: Path
    lab: str
    verb: str
    config: Any = None
    seed: int | None = None
    started: str = field(default_factory=utc_now)
    resume_hint: str = field(default_factory=resume_command)

    @classmethod
    def open(cls, path: str | Path | None, lab: str, verb: str, config: Any = None, seed: int | None = None,
             resume: bool = True, fresh_hint: str | None = None) -> "RunDir":
        path = Path(path) if path is not None else default_run_path(lab, verb)
        run = cls(path=path, lab=lab, verb=verb, config=config, seed=seed)
        writable_dir(path)
        digest = config_hash(config) if config is not None else None
        hash_file = path / "config_hash"
        if hash_file.exists() and digest is not None:
            with at_path(hash_file, "run stamp", ConfigError):
                old = hash_file.read_text().strip()
            if old != digest and resume:
                differing = config_diff(load_yaml(path / "config.yaml"), config) \
                    if (path / "config.yaml").is_file() else []
                raise ConfigError(
                    f"run folder {str(path)!r} holds a run with another config (hash {old}, now {digest}); "
                    f"differing keys: {', '.join(differing) or 'unknown'}",
                    hint=fresh_hint or "pass --no-resume to start it afresh, or choose a new --out folder",
                )
            if old != digest or not resume:
                run.reset()
        elif not resume:
            run.reset()
        (path / "plots").mkdir(exist_ok=True)
        if config is not None:
            with at_path(path, "run folder", ConfigError):
                dump_yaml(config, path / "config.yaml")
                hash_file.write_text(digest + "\n")
        _OPEN.append(run)
        return run

    def reset(self) -> None:
        """Start the folder afresh: remove everything an earlier run wrote in it (records, checkpoints, models,
        plots, results). Refuses a non-empty folder that holds no trustlab run, so ``--out ~`` deletes nothing."""
        entries = list(self.path.iterdir()) if self.path.is_dir() else []
        if entries and not any((self.path / m).exists() for m in _MARKERS):
            raise ConfigError(f"folder {str(self.path)!r} holds files but no trustlab run; refusing to clear it",
                              hint="choose an empty or new --out folder")
        with at_path(self.path, "run folder", ConfigError):
            for entry in entries:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()

    def close(self) -> None:
        """Forget this folder as an open run (the CLI no longer marks it interrupted on Ctrl-C)."""
        if self in _OPEN:
            _OPEN.remove(self)

    # --- events and resume -------------------------------------------------------------------
    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    def event(self, kind: str, **data: Any) -> None:
        """Append one event (flushed to disk) to ``events.jsonl``."""
        append_jsonl(self.events_path, [{"t": utc_now(), "kind": kind, **data}])

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [e for e in read_jsonl(self.events_path) if kind is None or e.get("kind") == kind]

    def done(self, kind: str = "done", key: str = "item") -> set[Any]:
        """Resume helper: the ``key`` values of every ``kind`` event already recorded."""
        return {e[key] for e in self.events(kind) if key in e}

    def pending(self, items: Iterable[Any], kind: str = "done", key: str = "item") -> list[Any]:
        """The work items not yet marked done, in their original order."""
        finished = self.done(kind, key)
        return [it for it in items if it not in finished]

    # --- results ------------------------------------------------------------------------------
    def artifact(self, relpath: str) -> Path:
        """Absolute path for an artefact inside the run folder (parents created)."""
        p = self.path / relpath
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def write_results(self, metrics: dict[str, Any], artifacts: Iterable[str | Path] = (), **extra: Any) -> Path:
        """Write ``results.json`` atomically with the fields every run carries, plus lab ``extra`` fields."""
        from trustlab import __version__

        arts = sorted({str(Path(a).relative_to(self.path)) if Path(a).is_absolute() else str(a) for a in artifacts})
        results = {
            "lab": self.lab,
            "verb": self.verb,
            "trustlab_version": __version__,
            "started": self.started,
            "finished": utc_now(),
            "seed": self.seed,
            "config": to_dict(self.config),
            "config_hash": config_hash(self.config) if self.config is not None else None,
            "metrics": metrics,
            "artifacts": arts,
            "environment": environment(),
            "status": "ok",
            **extra,
        }
        write_json_atomic(self.path / "results.json", results)
        return self.path / "results.json"
