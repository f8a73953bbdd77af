"""`trustlab demo` as a user sees it, in a process of its own (pytest records warnings in-process): each warning
one `warning:` line, printed once; the run ends with each lab's headline and the report's path; a lab that lists
its plots relative to the working folder still gets them into the combined page."""

from __future__ import annotations

import subprocess
import sys
import textwrap

FAKE_LAB = textwrap.dedent('''
    import sys, types, warnings
    from pathlib import Path
    import typer
    from trustlab.cli.main import LABS, main
    from trustlab.report import Heading, Image, Summary

    def run_demo(out, quick=True):
        from trustlab.report.plots import figure, save
        from trustlab.runtime import RunDir
        run = RunDir.open(out, "fakelab", "demo", None, seed=0)
        for _ in range(3):
            warnings.warn("K=2 is even: ConsSafe@K counts exactly K/2 safe samples as safe")
        warnings.warn("think tags\\n  are not vocabulary tokens")
        fig, ax = figure()
        ax.plot([0, 1], [0, 1])
        png = save(fig, Path(out) / "plots" / "line.png")  # listed as given: relative to the working folder
        run.write_results({"x": 1}, artifacts=[png])
        run.close()
        return Path(out)

    def section(results, run_dir):
        return [Heading("fake lab"), Summary("The fake lab measured 42 things. Nothing else."),
                *[Image(a, "a line that goes up from left to right") for a in results["artifacts"]]]

    LABS.register("fakelab", types.SimpleNamespace(app=typer.Typer(), run_demo=run_demo, report_section=section),
                  "a lab made up by the test")
    main(["demo", "--labs", "fakelab", "--out", "runs/demo"])
''')


def test_demo_console_and_combined_page(tmp_path):
    r = subprocess.run([sys.executable, "-c", FAKE_LAB], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    err = r.stderr.splitlines()
    assert err.count("warning: K=2 is even: ConsSafe@K counts exactly K/2 safe samples as safe") == 1
    assert "warning: think tags" in err and not any(".py" in ln for ln in err), r.stderr
    out = r.stdout.splitlines()
    assert out[-3:] == ["lab      headline result", "fakelab  The fake lab measured 42 things.",
                        "report: runs/demo/report.html (Markdown: runs/demo/report.md)"], r.stdout
    page = (tmp_path / "runs" / "demo" / "report.html").read_text()
    assert "missing plot" not in page and "data:image/png;base64," in page
