"""What a command prints besides its results: each Python warning as one ``warning:`` line, printed once per command
(no source path, no code line), and library progress bars (transformers' "Loading weights", huggingface_hub's
downloads, tqdm) only where trustlab's own bars would show: not under ``--quiet``, ``CI`` or a stderr that is not a
terminal."""

from __future__ import annotations

import os
import sys
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator

from .progress import is_quiet


def warning_line(message: Warning | str) -> str:
    """The one line a warning becomes: its first non-empty line of text, whitespace collapsed."""
    lines = [ln for ln in str(message).strip().splitlines() if ln.strip()]
    return "warning: " + " ".join((lines[0] if lines else type(message).__name__).split())


@contextmanager
def one_line_warnings(echo: Callable[[str], None] | None = None) -> Iterator[set[str]]:
    """Within the block, every warning that the filters let through is printed as ``warning: <text>`` the first time
    its text appears (later repeats, from the same or another place, are dropped). Yields the set of lines printed.
    The filters and the previous ``showwarning`` are restored on exit."""
    seen: set[str] = set()
    out = echo or (lambda line: print(line, file=sys.stderr, flush=True))

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ARG001 - warnings' API
        text = warning_line(message)
        if text not in seen:
            seen.add(text)
            out(text)

    with warnings.catch_warnings():  # the filters stay as they are (a module's "ignore" still holds)
        warnings.showwarning = show
        yield seen


def warnings_unclaimed() -> bool:
    """True when nobody has taken over how warnings are shown: Python's own ``showwarning`` and printer are in place
    (under ``pytest.warns`` or ``catch_warnings(record=True)`` they are not, and those recorders keep them)."""
    impl = getattr(warnings, "_showwarnmsg_impl", None)
    return (warnings.showwarning is getattr(warnings, "_showwarning_orig", None)
            and getattr(impl, "__module__", None) == "warnings")


@contextmanager
def console_warnings(echo: Callable[[str], None] | None = None) -> Iterator[None]:
    """``one_line_warnings`` for a console command, unless something already records warnings (a test)."""
    if warnings_unclaimed():
        with one_line_warnings(echo):
            yield
    else:
        yield


def libraries_quiet() -> bool:
    """True when library progress bars must stay off (``--quiet``, ``CI``, ``TRUSTLAB_QUIET``, or no terminal)."""
    return is_quiet() or not sys.stderr.isatty()


def quiet_library_progress() -> bool:
    """Turn library progress bars off when ``libraries_quiet()``: the environment switches that huggingface_hub,
    transformers (read at its import) and tqdm honour, and the live switches of those already imported. Returns
    whether it turned them off."""
    if not libraries_quiet():
        return False
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["TQDM_DISABLE"] = "1"
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    return True
