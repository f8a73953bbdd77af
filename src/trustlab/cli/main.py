"""Root of the ``trustlab`` CLI: demo, report, data, models, and one sub-app per lab.

Nothing heavy is imported at module level: ``trustlab --help`` must answer without torch.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Optional

import typer

from trustlab import __version__
from trustlab.runtime.cli_options import out_option, quiet_option, resume_option
from trustlab.runtime.errors import TrustlabError
from trustlab.runtime.registry import Registry

# lab name -> module holding its typer ``app``, ``run_demo(out, quick) -> Path`` and ``report_section``. A package
# can add a lab through the entry-point group ``trustlab.labs`` (target: its CLI module).
LABS = Registry("labs", what="lab")
LABS.register("fingerprint", "trustlab.fingerprint.cli",
              "OML 1.0 model fingerprinting: embed secret key/response pairs, prove ownership.")
LABS.register("vfl", "trustlab.vfl.cli",
              "HashVFL: hashed vertical federated learning, reconstruction attacks, multi-host parties.")
LABS.register("safety", "trustlab.safety.cli",
              "SafeChain: safety of long chain-of-thought models, thinking control, safe fine-tuning.")
LABS.register("certify", "trustlab.certify.cli",
              "Availability attacks on certifiers (randomized smoothing, IBP/CROWN), defences, metrics.")

app = typer.Typer(name="trustlab", help="Security of machine-learning systems: four labs behind one CLI.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def available_labs() -> list[str]:
    """Labs whose CLI module is present in this install (found without importing it); entry-point labs count."""
    out = []
    for lab in LABS.names():
        target = LABS.entry(lab).target
        if not isinstance(target, str):
            out.append(lab)
        elif importlib.util.find_spec(target.rsplit(".", 1)[0]) is not None and importlib.util.find_spec(target):
            out.append(lab)
    return out


def lab_module(lab: str):
    return LABS.get(lab)


def lab_help(lab: str) -> str:
    return LABS.entry(lab).summary


def _version(value: bool) -> None:
    if value:
        typer.echo(f"trustlab {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                                help="Print the version and exit."),
         quiet: bool = quiet_option(help="No progress bars.")) -> None:
    """trustlab: fingerprint, vfl, safety and certify labs."""
    if quiet:
        from trustlab.runtime.progress import set_quiet

        set_quiet(True)
    from trustlab.runtime.console import quiet_library_progress

    quiet_library_progress()  # transformers' "Loading weights" and hub bars follow --quiet / CI / no terminal


def _register_subapps(argv: list[str] | None = None) -> None:
    """Attach data, models and the labs. Only the lab named on the command line loads its CLI module; the others
    get a help-only placeholder, so ``trustlab --help`` does not build every lab's command tree."""
    from . import data_cmd, models_cmd

    app.add_typer(data_cmd.app, name="data", help="Datasets: list what exists and what is installed.")
    app.add_typer(models_cmd.app, name="models", help="Models: list them, prepare the SmolLM2 cache.")
    args = sys.argv[1:] if argv is None else argv
    command = next((a for a in args if not a.startswith("-")), None)
    for lab in available_labs():
        sub = lab_module(lab).app if lab == command else typer.Typer()
        app.add_typer(sub, name=lab, help=lab_help(lab))


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A run folder holding results.json.")) -> None:
    """Render report.md and a standalone report.html from a run's results.json."""
    from trustlab.report import render

    md, page = render(run_dir, sections=lab_sections())
    typer.echo(f"wrote {md} and {page}")


def lab_sections() -> dict:
    """lab -> its report section renderer, for the labs installed."""
    return {lab: lab_module(lab).report_section for lab in available_labs()}


@app.command()
def demo(out: Path = out_option(Path("runs/demo"), help="Folder for all demo runs and the report."),
         labs: Optional[str] = typer.Option(None, "--labs", help="Comma-separated subset of labs."),
         quick: bool = typer.Option(True, "--quick/--full", help="Quick demos (minutes) or full ones."),
         resume: bool = resume_option(help="Resume an interrupted demo (default) or start every chosen lab afresh.")
         ) -> None:
    """Run every lab's demo into one folder and write one combined report."""
    from trustlab.report import Text, combined_blocks, headlines, render

    chosen = available_labs() if labs is None else [s.strip() for s in labs.split(",") if s.strip()]
    unknown = [lab for lab in chosen if lab not in available_labs()]
    if unknown:
        from trustlab.runtime.errors import ConfigError

        raise ConfigError(f"unknown or uninstalled lab(s): {', '.join(unknown)}",
                          hint=f"choose from {', '.join(available_labs())}")
    from trustlab.runtime.errors import Interrupted
    from trustlab.runtime.rundir import RunDir, resume_command

    if not resume:  # every folder checked before anything is removed: each must hold its own lab's run
        for lab in chosen:
            RunDir.discard(out / lab, lab, dry_run=True)
        for lab in chosen:
            RunDir.discard(out / lab, lab)
    top = RunDir.open(out, "trustlab", "demo")
    runs: dict[str, Path] = {}
    for lab in chosen:
        typer.echo(f"== {lab} demo")
        try:
            runs[lab] = Path(lab_module(lab).run_demo(out / lab, quick=quick))
        except (Interrupted, KeyboardInterrupt):
            raise Interrupted(f"demo interrupted during the {lab} demo; finished labs are kept in {out}",
                              hint=f"resume with: {resume_command(out=out)}") from None
    blocks = (combined_blocks(out, runs, lab_sections()) if runs
              else [Text("No lab is installed yet; nothing to demonstrate.")])
    md, page = render(out, title="trustlab demo", blocks=blocks)
    top.close()
    _closing_table(headlines(blocks), page, md)


def _closing_table(rows: list[tuple[str, str]], page: Path, md: Path) -> None:
    """The demo's last lines: each lab's headline result, then where the report is."""
    if rows:
        width = max(len("lab"), *(len(lab) for lab, _ in rows))
        typer.echo("")
        typer.echo(f"{'lab':<{width}}  headline result")
        for lab, text in rows:
            typer.echo(f"{lab:<{width}}  {text}")
    typer.echo(f"report: {page} (Markdown: {md})")


def _full_short_help(command) -> None:
    """Command listings show each command's whole first paragraph (click cuts it at 45 characters with "...")."""
    for sub in getattr(command, "commands", {}).values():
        if not sub.short_help and sub.help:
            sub.short_help = " ".join(sub.help.strip().split("\n\n")[0].split())
        _full_short_help(sub)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: every failure becomes an ``error:`` line, a ``hint:`` line and its exit code.

    TrustlabError -> its own code (2 bad input, 3 missing dependency, 4 remote peer, 130 interrupted); click usage
    errors -> 2; Ctrl-C anywhere (typer/click would otherwise exit silently) -> 130 with a resume hint, and the
    open run folders record ``status: interrupted``; a stray OSError -> 2 naming the path; anything else is a bug:
    one line and exit 1 (``TRUSTLAB_DEBUG=1`` shows the traceback).
    """
    from trustlab.runtime.rundir import begin_command, end_command

    from trustlab.runtime.console import console_warnings

    begin_command(argv)
    try:
        with console_warnings(lambda line: typer.echo(line, err=True)):  # each warning: one line, once
            _run_command(argv)
    finally:
        end_command()


def _run_command(argv: list[str] | None) -> None:
    """``main`` without the run-folder bookkeeping around it."""
    import os

    from typer import _click
    from typer.exceptions import Abort, Exit

    _register_subapps(argv)
    command = typer.main.get_command(app)
    _full_short_help(command)
    try:
        # typer (>= 0.29 vendors click as typer._click) turns Ctrl-C into Exit(130), which non-standalone mode
        # returns as a plain number: 130 is the interruption we must still explain.
        code = command.main(args=argv, prog_name="trustlab", standalone_mode=False)
        if isinstance(code, int) and not isinstance(code, bool) and code:
            if code == 130:
                _fail(_interrupted(None))
            sys.exit(code)
    except Exit as exc:
        sys.exit(exc.exit_code)
    except _click.exceptions.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "trustlab"
        _fail(_usage_error(exc.format_message(), f"see '{where} --help' for the valid options and values"))
    except _click.exceptions.ClickException as exc:
        _fail(_usage_error(exc.format_message(), "check the command line", exc.exit_code))
    except (Abort, KeyboardInterrupt):
        _fail(_interrupted(None))
    except TrustlabError as exc:
        _fail(_interrupted(exc) if exc.exit_code == 130 else exc)
    except OSError as exc:
        from trustlab.runtime.files import os_error

        where = exc.filename if exc.filename is not None else "(unknown path)"
        _fail(os_error(where, exc, what="path"))
    except Exception as exc:  # noqa: BLE001 - the last line of defence: never a traceback for a user
        if os.environ.get("TRUSTLAB_DEBUG"):
            raise
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        typer.echo(f"error: internal error: {type(exc).__name__}: {first}", err=True)
        typer.echo("hint: this is a trustlab bug; rerun with TRUSTLAB_DEBUG=1 for the traceback and report it",
                   err=True)
        sys.exit(1)


def _interrupted(exc: TrustlabError | None) -> TrustlabError:
    """Ctrl-C: mark the open run folders interrupted and give the command that resumes them."""
    from trustlab.runtime.errors import Interrupted
    from trustlab.runtime.rundir import mark_interrupted

    hint = mark_interrupted()
    if exc is not None:
        return exc if exc.hint else Interrupted(exc.message, hint=hint)
    return Interrupted("interrupted; the work finished so far is saved" if hint else "interrupted",
                       hint=hint or "nothing was running that can be resumed; rerun the command")


def _usage_error(message: str, hint: str, code: int = 2) -> TrustlabError:
    from trustlab.runtime.errors import ConfigError

    error = ConfigError(" ".join(message.split()), hint=hint)
    error.exit_code = code
    return error


def _fail(exc: TrustlabError) -> None:
    typer.echo(f"error: {exc.message}", err=True)
    if exc.hint:
        typer.echo(f"hint: {exc.hint}", err=True)
    sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
