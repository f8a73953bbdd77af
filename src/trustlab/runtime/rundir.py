"""Run folders as owned objects: a marker naming lab, verb and run id, a manifest of the files the run wrote,
``config.yaml``, atomic ``results.json`` and append-only ``events.jsonl`` for resume.

The guarantees (docs/architecture.md, "Run folders"):

- A run claims only a new or empty folder, or resumes a folder whose marker names its own lab and one of the verbs
  it may resume. A folder with files but no marker, or another lab's or verb's marker, is refused with a one-line
  error naming what is there: nothing in it is read, cleared or overwritten.
- The manifest lists the files the run wrote (every file that appeared in the folder while a run of this marker
  held it). Files that were there when a run (re)opened the folder and are not in the manifest are foreign: they
  are never listed, removed or overwritten.
- ``resume=False`` (``--no-resume``) removes the manifest's files, and nothing else, after every check passed.
- A run without ``--out`` gets a new folder ``runs/<lab>-<verb>-<UTC timestamp>[-N]``; it never resumes another run.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import os
import platform
import shlex
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from .config import config_diff, config_hash, dump_yaml, load_yaml, to_dict
from .errors import ConfigError
from .files import at_path, writable_dir
from .io import append_jsonl, read_jsonl, write_json_atomic

# Run folders opened in this process, newest last: on Ctrl-C the CLI marks them interrupted and prints the command
# that resumes the newest one; at exit their manifests are brought up to date.
_OPEN: list["RunDir"] = []
# Flags that discard earlier work: a resume command must not carry them.
FRESH_FLAGS = ("--no-resume", "--force", "--overwrite", "--fresh")
MARKER = ".trustlab-run.json"
MANIFEST = ".trustlab-manifest.json"
_OWN = {MARKER, MANIFEST}
_ARGV: list[str] | None = None


def begin_command(argv: list[str] | None) -> None:
    """Called by the CLI before each command: the arguments resume hints repeat, and no run folder open yet."""
    global _ARGV
    _ARGV = None if argv is None else list(argv)
    _OPEN.clear()


def end_command() -> None:
    """Called by the CLI after each command: every run folder it opened gets its final manifest and is closed, so
    files put there later (by a user, in the same process) are foreign to it."""
    for run in list(_OPEN):
        try:
            run.close()
        except OSError:
            _OPEN.remove(run)


def resume_command(argv: list[str] | None = None, out: str | Path | None = None) -> str:
    """The command line of this CLI call with the flags that discard work removed, and ``--out OUT`` added when
    the call did not name its folder: pasting it resumes the run (every verb resumes by default)."""
    args = list(argv if argv is not None else _ARGV if _ARGV is not None else sys.argv[1:])
    args = [a for a in args if a not in FRESH_FLAGS]
    if out is not None and not any(a == "--out" or a.startswith("--out=") for a in args):
        args += ["--out", str(out)]
    return shlex.join(["trustlab", *args])


def mark_interrupted() -> str | None:
    """Record ``status: interrupted`` in every open run folder; return the newest one's resume hint."""
    for run in _OPEN:
        try:
            run.event("status", status="interrupted")
            run.track()
        except OSError:
            pass
    return f"resume with: {_OPEN[-1].resume_hint}" if _OPEN else None


@atexit.register
def _track_open_runs() -> None:
    for run in list(_OPEN):
        try:
            run.track()
        except OSError:
            pass


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_run_path(lab: str, verb: str, root: str | Path = "runs") -> Path:
    """``runs/<lab>-<verb>-<UTC timestamp>``, with ``-2``, ``-3``, ... when that folder exists already."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{lab}-{verb}-{stamp}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


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


# --- marker and manifest ------------------------------------------------------------------------------------------
def read_marker(path: str | Path) -> dict[str, Any] | None:
    """The marker of the run folder ``path`` (lab, verb, run_id, created), or None when it has none."""
    f = Path(path) / MARKER
    if not f.is_file():
        return None
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"run marker {str(f)!r} is unreadable ({type(exc).__name__})",
                          hint="choose a new --out folder") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("lab", "verb", "run_id")):
        raise ConfigError(f"run marker {str(f)!r} is not a trustlab run marker", hint="choose a new --out folder")
    return data


def _listing(root: Path) -> set[str]:
    """Relative paths of every file (``a/b``) and folder (``a/``) under ``root``, symlinks not followed."""
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        for d in dirnames:
            found.add(f"{(rel / d).as_posix()}/")
        for f in filenames:
            found.add((rel / f).as_posix())
    return found - _OWN


def _forget(path: Path) -> None:
    """Close an earlier RunDir of this process on ``path`` (its manifest brought up to date first)."""
    for run in [r for r in _OPEN if os.path.abspath(r.path) == os.path.abspath(path)]:
        run.close()


def _holds_only_runs(path: Path, depth: int = 3) -> bool:
    """True when ``path`` is empty or holds nothing but trustlab run folders (a demo's earlier nested runs)."""
    for entry in path.iterdir():
        if entry.is_symlink() or not entry.is_dir():
            return False
        if not (entry / MARKER).is_file() and (depth <= 1 or not _holds_only_runs(entry, depth - 1)):
            return False
    return True


def _describe(path: Path, limit: int = 5) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


@dataclass
class RunDir:
    """One run's folder (see the module docstring for what it guarantees).

    ``RunDir.open`` claims or resumes ``path``; ``RunDir.attach`` lets a verb that continues an existing run (a
    judge or metrics pass over a generation run) write into it under that run's marker."""

    path: Path
    lab: str
    verb: str
    config: Any = None
    seed: int | None = None
    started: str = field(default_factory=utc_now)
    resume_hint: str = field(default_factory=resume_command)
    run_id: str | None = None
    _files: set[str] = field(default_factory=set, repr=False)
    _foreign: set[str] = field(default_factory=set, repr=False)

    @classmethod
    def open(cls, path: str | Path | None, lab: str, verb: str, config: Any = None, seed: int | None = None,
             resume: bool = True, fresh_hint: str | None = None, resumes: Sequence[str] | None = None,
             new_only: bool = False) -> "RunDir":
        """Claim ``path`` (default: a new ``runs/<lab>-<verb>-<stamp>``) for this run, or resume it.

        ``resumes`` names the verbs whose folders this verb continues (default: its own). ``resume=False`` removes
        what the earlier run wrote (its manifest) once every check passed. ``new_only`` verbs (a verdict, a
        generated secret) never reuse a folder: an earlier run there is refused, not replaced."""
        path = Path(path) if path is not None else default_run_path(lab, verb)
        _forget(path)
        writable_dir(path)
        marker = read_marker(path)
        run = cls(path=path, lab=lab, verb=verb, config=config, seed=seed,
                  resume_hint=resume_command(out=path))
        if marker is None:
            if not _holds_only_runs(path):
                raise ConfigError(f"folder {str(path)!r} is not a trustlab run folder and is not empty (it holds "
                                  f"{_describe(path)}); {lab} {verb} writes only into a new or empty folder or "
                                  f"its own earlier run", hint="choose a new --out folder")
            run._claim()
        else:
            run._check_owner(marker, resumes or (verb,), new_only)
            run._load_manifest()
            digest = config_hash(config) if config is not None else None
            old = (path / "config_hash").read_text().strip() if (path / "config_hash").is_file() else None
            if resume and digest is not None and old is not None and old != digest:
                differing = config_diff(load_yaml(path / "config.yaml"), config) \
                    if (path / "config.yaml").is_file() else []
                raise ConfigError(
                    f"run folder {str(path)!r} holds a {lab} {marker['verb']} run with another config (hash {old}, "
                    f"now {digest}); differing keys: {', '.join(differing[:8]) or 'unknown'}"
                    + (f" and {len(differing) - 8} more" if len(differing) > 8 else ""),
                    hint=fresh_hint or "choose a new --out folder, or pass --no-resume to replace that run "
                                       "(only the files it wrote are removed)")
            if not resume:
                run.clear()
                run._claim()
        (path / "plots").mkdir(exist_ok=True)
        if config is not None:
            with at_path(path, "run folder", ConfigError):
                dump_yaml(config, path / "config.yaml")
                (path / "config_hash").write_text(config_hash(config) + "\n")
        run.track()
        _OPEN.append(run)
        return run

    @classmethod
    def attach(cls, path: str | Path, lab: str, verb: str, of: Sequence[str], config: Any = None,
               seed: int | None = None) -> "RunDir":
        """Continue the existing run in ``path`` (its marker names ``lab`` and one of the verbs ``of``); the files
        this verb writes join that run's manifest."""
        path = Path(path)
        _forget(path)
        marker = read_marker(path) if path.is_dir() else None
        if marker is None:
            raise ConfigError(f"folder {str(path)!r} is not a trustlab {lab} run folder (no run marker)",
                              hint=f"pass a folder written by `trustlab {lab} {of[0]}`")
        run = cls(path=path, lab=lab, verb=verb, config=config, seed=seed, resume_hint=resume_command(out=path))
        run._check_owner(marker, of, False)
        run._load_manifest()
        _OPEN.append(run)
        return run

    @classmethod
    def discard(cls, path: str | Path, lab: str, dry_run: bool = False) -> None:
        """Remove what the ``lab`` run in ``path`` wrote (its manifest); a folder that holds no ``lab`` run is
        refused untouched, a missing one is nothing to do. ``dry_run`` only checks."""
        path = Path(path)
        if not path.exists():
            return
        marker = read_marker(path) if path.is_dir() else None
        if marker is None or marker["lab"] != lab:
            raise ConfigError(f"{str(path)!r} holds no trustlab {lab} run; refusing to clear it",
                              hint="choose another --out folder")
        if dry_run:
            return
        _forget(path)
        run = cls(path=path, lab=lab, verb=marker["verb"], run_id=marker["run_id"])
        run._load_manifest()
        run.clear()
        if [p.name for p in path.iterdir()] == [MARKER]:
            (path / MARKER).unlink()
            path.rmdir()

    def _check_owner(self, marker: dict[str, Any], resumes: Sequence[str], new_only: bool) -> None:
        what = f"a trustlab {marker['lab']} {marker['verb']} run (id {marker['run_id']})"
        if marker["lab"] != self.lab or marker["verb"] not in resumes:
            raise ConfigError(f"folder {str(self.path)!r} holds {what}; {self.lab} {self.verb} never writes into "
                              f"another verb's run folder", hint="choose a new --out folder")
        if new_only:
            raise ConfigError(f"folder {str(self.path)!r} holds {what}; {self.lab} {self.verb} never replaces an "
                              f"earlier run", hint="choose a new --out folder")
        self.run_id = marker["run_id"]

    def _claim(self) -> None:
        """Write a new marker (a new run id); everything in the folder now is foreign to this run."""
        self.run_id = uuid.uuid4().hex[:16]
        self._foreign = _listing(self.path)
        self._files = set()
        with at_path(self.path, "run folder", ConfigError):
            write_json_atomic(self.path / MARKER, {"lab": self.lab, "verb": self.verb, "run_id": self.run_id,
                                                   "created": self.started})
        self.track()

    def _load_manifest(self) -> None:
        f = self.path / MANIFEST
        try:
            data = json.loads(f.read_text(encoding="utf-8")) if f.is_file() else {}
        except (OSError, ValueError):
            data = {}
        files = data.get("files") if isinstance(data, dict) else None
        listed = {str(x) for x in files} if isinstance(files, list) else set()
        here = _listing(self.path)  # inside the folder, symlinks not followed
        # a manifest names only what is in the folder now: an entry pointing elsewhere ('../x', through a symlinked
        # folder) is never ours, whoever edited the manifest
        self._files = listed & here
        # what is here now and not listed was put here by someone else: never ours to list or remove
        self._foreign = here - self._files

    @property
    def manifest(self) -> list[str]:
        """The files and folders this run (under its marker) wrote, relative to the run folder."""
        return sorted(self._files)

    def track(self) -> None:
        """Add every file that appeared in the folder since the run opened it to the manifest. Called at every
        event, artefact, results write, close, Ctrl-C and exit, so a run killed outright leaves at most its last
        few files unlisted: those count as foreign and ``--no-resume`` keeps them."""
        if self.run_id is None or not self.path.is_dir():  # built by hand, not opened or attached: owns nothing
            return
        files = self._files | (_listing(self.path) - self._foreign)
        if files != self._files or not (self.path / MANIFEST).is_file():
            self._files = files
            write_json_atomic(self.path / MANIFEST, {"run_id": self.run_id, "files": sorted(files)})

    def clear(self) -> None:
        """Remove the files the earlier run wrote (its manifest) and the folders it made that are now empty;
        foreign files stay where they are."""
        self.track()
        with at_path(self.path, "run folder", ConfigError):
            for rel in sorted((r for r in self._files if not r.endswith("/")), reverse=True):
                p = self.path / rel
                if p.is_file() or p.is_symlink():
                    p.unlink()
            for rel in sorted((r for r in self._files if r.endswith("/")), key=len, reverse=True):
                p = self.path / rel.rstrip("/")
                if p.is_dir() and not p.is_symlink() and not any(p.iterdir()):
                    p.rmdir()
            (self.path / MANIFEST).unlink(missing_ok=True)
        self._files = set()

    def close(self) -> None:
        """Bring the manifest up to date and forget this folder as an open run."""
        self.track()
        if self in _OPEN:
            _OPEN.remove(self)

    # --- events and resume -------------------------------------------------------------------
    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    def event(self, kind: str, **data: Any) -> None:
        """Append one event (flushed to disk) to ``events.jsonl``."""
        append_jsonl(self.events_path, [{"t": utc_now(), "kind": kind, **data}])
        self.track()

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [e for e in read_jsonl(self.events_path) if kind is None or e.get("kind") == kind]

    # --- results ------------------------------------------------------------------------------
    def artifact(self, relpath: str) -> Path:
        """Absolute path for an artefact inside the run folder (parents created)."""
        p = self.path / relpath
        p.parent.mkdir(parents=True, exist_ok=True)
        self.track()
        return p

    def write_results(self, metrics: dict[str, Any], artifacts: Iterable[str | Path] = (), **extra: Any) -> Path:
        """Write ``results.json`` atomically with the fields every run carries, plus lab ``extra`` fields."""
        from trustlab import __version__

        arts = sorted({str(Path(a).relative_to(self.path)) if Path(a).is_absolute() else str(a) for a in artifacts})
        results = {
            "lab": self.lab,
            "verb": self.verb,
            "run_id": self.run_id,
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
        self.track()
        return self.path / "results.json"
