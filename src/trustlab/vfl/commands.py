"""The pasteable commands that vfl hints name: resume a training run, or start its folder afresh."""

from __future__ import annotations

import shlex
from pathlib import Path


def resume_command(path: str | Path) -> str:
    """The command that resumes the run in ``path`` with its saved config (pasteable: the path is quoted;
    resuming is the default)."""
    return f"trustlab vfl train --out {shlex.quote(str(path))}"


def fresh_command(hint: str) -> str:
    """A resume command turned into the one that starts the same folder afresh."""
    return hint.replace(" --resume", "").removesuffix(" --no-resume") + " --no-resume"
