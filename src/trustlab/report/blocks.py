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
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[Any]]
    caption: str = ""


@dataclass(frozen=True)
class Image:
    """A PNG inside the run folder (path relative to it); embedded in the HTML report."""

    path: str
    caption: str = ""


@dataclass(frozen=True)
class Bullets:
    items: Sequence[str] = field(default_factory=tuple)


Block = Heading | Text | Table | Image | Bullets


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
