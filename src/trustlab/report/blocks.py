"""Report building blocks: labs return a list of these; the renderer writes Markdown and HTML from them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Text:
    """A paragraph of inline Markdown (`code`, **bold**, *italics*, links); the HTML report renders it."""

    text: str


@dataclass(frozen=True)
class Summary:
    """The paragraph a lab section opens with: what this run's result means, in words built from its numbers."""

    text: str


@dataclass(frozen=True)
class Table:
    """A table; ``notes`` are footnotes under it (inline Markdown), e.g. what a column means or why a cell is —."""

    headers: Sequence[str]
    rows: Sequence[Sequence[Any]]
    caption: str = ""
    notes: Sequence[str] = ()


@dataclass(frozen=True)
class Image:
    """A PNG inside the run folder (path relative to it); embedded in the HTML report. The caption says, in words,
    what to look at."""

    path: str
    caption: str = ""


@dataclass(frozen=True)
class Link:
    """A link to a file inside the run folder (path relative to it), e.g. a lab's own HTML page; re-rooted with the
    images in a combined report. ``text`` is the sentence around it, ``label`` the linked words."""

    path: str
    label: str
    text: str = ""


@dataclass(frozen=True)
class Bullets:
    items: Sequence[str] = field(default_factory=tuple)


Block = Heading | Text | Summary | Table | Image | Link | Bullets


def fmt(value: Any, digits: int = 3) -> str:
    """Numbers to short strings (floats to ``digits`` significant places), None to an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 1e4 else str(value)
    return str(value)


def pct(value: float | None, digits: int = 0) -> str:
    """A share in [0, 1] as a percentage ("96%"); None as an em dash."""
    return "—" if value is None else f"{100 * value:.{digits}f}%"


def points(delta: float | None) -> str:
    """A difference of two shares in percentage points, signed ("+7.0 points", "−0.3 points")."""
    if delta is None:
        return "—"
    v = 100 * delta
    return f"{'+' if v > 0.05 else '−' if v < -0.05 else '±'}{abs(v):.1f} points"


def seeds_note(seeds: Sequence[Any] | None) -> str:
    """" (one seed)" when a claim rests on a single seed, else "" — appended next to verdicts."""
    return " (one seed)" if seeds is not None and len(seeds) == 1 else ""
