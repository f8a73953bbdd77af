"""Shared checks for the hostile-user replay (issue 16): every case ends in one ``error:`` line, one ``hint:`` line,
the documented exit code and no traceback; run-folder cases also leave every pre-existing file byte-identical.

Each ``tests/hostile/test_*.py`` module lists its cases in a module-level ``CASES`` (a list of case ids, one per
replayed hostile input); ``test_replay_size.py`` counts them across modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    @property
    def errors(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error: ")]

    @property
    def hints(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("hint: ")]


def run_cli(capsys, *args: str) -> Outcome:
    """``trustlab ARGS`` in-process; the exit code and what it printed."""
    from trustlab.cli.main import main

    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    got = capsys.readouterr()
    return Outcome(code, got.out, got.err)


def assert_refused(outcome: Outcome, code: int, *words: str) -> None:
    """Exit ``code``, exactly one ``error:`` and one ``hint:`` line, no traceback; the error names every word."""
    text = outcome.out + outcome.err
    assert "Traceback" not in text, text
    assert outcome.code == code, f"exit {outcome.code}, expected {code}\n{text}"
    assert len(outcome.errors) == 1, f"expected one error: line\n{text}"
    assert len(outcome.hints) == 1, f"expected one hint: line\n{text}"
    for word in words:
        assert word.lower() in outcome.errors[0].lower(), f"the error does not name {word!r}: {outcome.errors[0]}"


def snapshot(root: str | Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes), symlinks not followed."""
    root = Path(root)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


def assert_untouched(before: dict[str, bytes], root: str | Path) -> None:
    """Every file that existed before is still there with the same bytes (new files may have appeared)."""
    after = snapshot(root)
    missing = sorted(set(before) - set(after))
    changed = sorted(k for k in before if k in after and after[k] != before[k])
    assert not missing and not changed, f"deleted: {missing[:10]}; changed: {changed[:10]}"
