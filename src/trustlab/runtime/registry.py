"""A named registry of plug-ins (backends, judges, schemes, labs) with lazy targets and entry points.

    BACKENDS = Registry("safety.backends")
    BACKENDS.register("openai", "trustlab.safety.backends.openai_compat:OpenAIBackend", "OpenAI-compatible server")
    BACKENDS.get("openai")            # imports the module only now
    BACKENDS.names()                  # built-in names, then entry-point names, each once

A target is the object itself or a lazy ``"module:attr"`` string, imported on first ``get`` (so listing what a
registry holds, and ``trustlab --help``, import nothing heavy). A third-party package adds entries through the
entry-point group ``trustlab.<kind>`` (the lm-evaluation-harness / garak convention)::

    [project.entry-points."trustlab.safety.judges"]
    my_judge = "my_pkg.judges:MyJudge"

A built-in name wins over an entry point of the same name; an entry point that fails to load is a warning naming
it, never a crash of the command that merely listed it. Imports nothing of ours but ``runtime.errors``.
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional

from .errors import ConfigError

GROUP_PREFIX = "trustlab."


@dataclass
class Entry:
    """One registered name: its target (an object or ``"module:attr"``) and a one-line summary."""

    name: str
    target: Any
    summary: str = ""
    source: str = "built-in"  # or "entry point (<dist>)"
    _obj: Any = None
    _loaded: bool = False

    def load(self) -> Any:
        """The target object (a lazy target is imported once, then cached; ``target`` keeps the path)."""
        if not self._loaded:
            if isinstance(self.target, _EntryPointTarget):
                self._obj = self.target.ep.load()
            elif isinstance(self.target, str):
                self._obj = load_path(self.target)
            else:
                self._obj = self.target
            self._loaded = True
        return self._obj


def load_path(path: str) -> Any:
    """The object a ``"package.module:attr.sub"`` path names."""
    module, _, attr = path.partition(":")
    obj = importlib.import_module(module)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


def _summary_of(obj: Any) -> str:
    doc = getattr(obj, "__doc__", None) or ""
    return " ".join(doc.strip().split("\n\n")[0].split())


class Registry:
    """Names -> lazily loaded objects, for one ``kind`` (entry-point group ``trustlab.<kind>``)."""

    def __init__(self, kind: str, *, what: Optional[str] = None, entry_points: bool = True):
        self.kind = kind
        self.what = what or kind.rsplit(".", 1)[-1].rstrip("s")  # "safety.backends" -> "backend"
        self.group = GROUP_PREFIX + kind
        self._entries: dict[str, Entry] = {}
        self._use_entry_points = entry_points
        self._plugins_loaded = False

    # ------------------------------------------------------------------------------------------- registering
    def register(self, name: str, target: Any = None, summary: str = "") -> Any:
        """Register ``target`` under ``name``; without a target, a decorator registering the decorated object."""
        if target is None:
            def deco(obj):
                self.register(name, obj, summary)
                return obj
            return deco
        if name in self._entries and self._entries[name].source == "built-in":
            raise ValueError(f"{self.what} {name!r} is already registered in {self.kind}")
        if not summary and not isinstance(target, str):
            summary = _summary_of(target)
        self._entries[name] = Entry(name, target, summary)
        return target

    def _load_plugins(self) -> None:
        if self._plugins_loaded or not self._use_entry_points:
            return
        self._plugins_loaded = True
        for ep in _entry_points(self.group):
            if ep.name in self._entries:
                continue  # a built-in name wins
            dist = getattr(getattr(ep, "dist", None), "name", None) or "?"
            self._entries[ep.name] = Entry(ep.name, _EntryPointTarget(ep), "", f"entry point ({dist})")

    # ------------------------------------------------------------------------------------------- reading
    def names(self) -> list[str]:
        """Every name: built-ins in registration order, then entry points."""
        self._load_plugins()
        return list(self._entries)

    def builtins(self) -> list[str]:
        """The names registered in code (no entry-point scan)."""
        return [n for n, e in self._entries.items() if e.source == "built-in"]

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def entry(self, name: str) -> Entry:
        self._load_plugins()
        if name not in self._entries:
            raise ConfigError(f"unknown {self.what} {name!r}", hint=f"use one of {', '.join(self.names())}")
        return self._entries[name]

    def get(self, name: str) -> Any:
        """The object registered as ``name`` (imported now if lazy); an unknown name is a ConfigError naming the
        valid ones."""
        entry = self.entry(name)
        if isinstance(entry.target, _EntryPointTarget):
            try:
                obj = entry.load()
            except Exception as exc:  # noqa: BLE001 - a third party's bug is reported, not raised as ours
                raise ConfigError(f"{self.what} {name!r} ({entry.source}) failed to load: "
                                  f"{type(exc).__name__}: {exc}",
                                  hint=f"fix or uninstall the package providing {self.group} entry {name!r}") from None
            if not entry.summary:
                entry.summary = _summary_of(obj)
            return obj
        return entry.load()

    def listing(self) -> list[tuple[str, str]]:
        """(name, one-line summary) for every entry. Entry points are loaded to read their docstrings; one that
        fails to load is listed with a warning instead of a summary."""
        rows = []
        for name in self.names():
            entry = self._entries[name]
            if isinstance(entry.target, _EntryPointTarget) and not entry.summary and not entry._loaded:
                try:
                    self.get(name)
                except ConfigError as exc:
                    warnings.warn(exc.message, stacklevel=2)
                    rows.append((name, f"(failed to load: {entry.source})"))
                    continue
            rows.append((name, entry.summary))
        return rows


class _EntryPointTarget:
    """An entry point not loaded yet (kept apart from ``"module:attr"`` strings, which are our own)."""

    def __init__(self, ep):
        self.ep = ep


def _entry_points(group: str) -> list:
    """The installed entry points of ``group`` (``importlib.metadata``, imported only when a registry is read)."""
    from importlib.metadata import entry_points

    try:
        return list(entry_points(group=group))
    except Exception as exc:  # noqa: BLE001 - a broken installed distribution must not break our own names
        warnings.warn(f"could not read the entry points of group {group!r}: {exc}", stacklevel=3)
        return []


def format_listing(title: str, rows: list[tuple[str, str]], echo: Callable[[str], Any] = print) -> None:
    """Print ``title:`` then one ``  name  summary`` line per row (the ``trustlab <lab> ls`` format)."""
    echo(f"{title}:")
    width = max((len(n) for n, _ in rows), default=0)
    for name, summary in rows:
        echo(f"  {name.ljust(width)}  {summary}".rstrip())
