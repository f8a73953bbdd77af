"""Console hygiene: a warning is one `warning:` line, printed once, with no source path; library progress bars
follow --quiet / CI."""

from __future__ import annotations

import warnings

from trustlab.runtime.console import one_line_warnings, quiet_library_progress, warning_line


def _warn_here(text):
    warnings.warn(text, stacklevel=1)


def test_each_warning_is_one_line_printed_once():
    lines = []
    with one_line_warnings(lines.append):
        for _ in range(3):
            warnings.warn("K=2 is even: ties count as safe", stacklevel=1)
        _warn_here("K=2 is even: ties count as safe")  # the same text from another place
        _warn_here("\n  think tags are not\n  vocabulary tokens  ")
    assert lines == ["warning: K=2 is even: ties count as safe", "warning: think tags are not"]
    assert all(".py" not in ln for ln in lines)
    assert warning_line(UserWarning("")) == "warning: UserWarning"


def test_warning_routing_is_undone_after_the_block():
    before = warnings.showwarning
    with one_line_warnings(lambda s: None):
        pass
    assert warnings.showwarning is before


def test_library_progress_bars_follow_ci(monkeypatch):
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")
    monkeypatch.setenv("TQDM_DISABLE", "0")
    monkeypatch.setenv("CI", "true")
    try:
        assert quiet_library_progress()
        assert not hf_logging.is_progress_bar_enabled()
        import os

        assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1" and os.environ["TQDM_DISABLE"] == "1"
    finally:
        if was:
            hf_logging.enable_progress_bar()


def test_a_console_command_routes_warnings_unless_they_are_recorded():
    """In a plain process the routing takes over (one line, once); under pytest.warns the recorder keeps them."""
    import subprocess
    import sys

    from trustlab.runtime.console import console_warnings

    code = ("import warnings\nfrom trustlab.runtime.console import console_warnings\nwith console_warnings():\n"
            "    for i in range(3):\n        warnings.warn('K=4 is even')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert r.stderr == "warning: K=4 is even\n"
    lines = []
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with console_warnings(lines.append):
            warnings.warn("recorded")
    assert [str(w.message) for w in rec] == ["recorded"] and lines == []
