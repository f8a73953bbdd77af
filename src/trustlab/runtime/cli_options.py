"""The CLI options every lab shares, defined once: ``--out``, ``--resume/--no-resume``, ``--seed``, ``--config``,
``--threads`` and ``--quiet``.

Each factory returns a fresh ``typer.Option`` with the one flag spelling and the one meaning; a verb passes only what
truly differs (its default and the help line naming its own folder, file or config class). Labs import this module,
never ``trustlab.cli`` (which imports the labs). No torch import here.

Meanings (the same in every verb):

- ``--out``: where the verb writes; for run verbs a run folder (a ``RunDir``), for export verbs the file or folder
  it names. A run folder the current run did not write is never deleted.
- ``--resume/--no-resume``: resume the run folder at ``--out`` (default: skip what is already recorded there) or
  start it afresh (only files this run family wrote are replaced).
- ``--seed``: the run's one seed; every random choice of the verb derives from it.
- ``--config``: a YAML file (or a shipped config name where the lab has them); flags given on the command line
  override its fields.
- ``--threads``: torch/BLAS threads of this process (1 is fastest on small shared CPUs).
- ``--quiet``/``-q``: no progress bars.
"""

from __future__ import annotations

from typing import Any

import typer

OUT_HELP = "Run folder (default runs/<lab>-<verb>-<UTC time>)."
RESUME_HELP = "Resume the run folder (default: skip what it already holds) or start it afresh."
SEED_HELP = "Seed of every random choice of the run (default 0)."
CONFIG_HELP = "Config YAML; flags override its fields."
THREADS_HELP = "Torch/BLAS threads of this process (default $TRUSTLAB_THREADS, else 1: fastest on small CPUs)."
QUIET_HELP = "No progress bars."


def out_option(default: Any = None, help: str = OUT_HELP) -> Any:
    """``--out``: the run folder (or, for an export verb, the file/folder it writes). ``...`` makes it required."""
    return typer.Option(default, "--out", help=help)


def resume_option(help: str = RESUME_HELP, default: bool = True) -> Any:
    """``--resume/--no-resume``: resume the run folder at ``--out`` (default) or start it afresh."""
    return typer.Option(default, "--resume/--no-resume", help=help)


def seed_option(default: Any = None, help: str = SEED_HELP) -> Any:
    """``--seed``: the run's seed (``None``: the config's, else 0)."""
    return typer.Option(default, "--seed", help=help)


def config_option(default: Any = None, help: str = CONFIG_HELP) -> Any:
    """``--config``: a YAML file of the verb's config fields; command-line flags override it."""
    return typer.Option(default, "--config", help=help)


def threads_option(default: Any = 1, help: str = THREADS_HELP) -> Any:
    """``--threads``: torch/BLAS threads of this process."""
    return typer.Option(default, "--threads", help=help)


def quiet_option(help: str = QUIET_HELP) -> Any:
    """``--quiet``/``-q``: no progress bars."""
    return typer.Option(False, "--quiet", "-q", help=help)


def use_threads(threads: int | None) -> None:
    """Make ``--threads`` this process's choice without importing torch: every later ``configure_threads()`` (the
    labs' library code calls it) and every process this one starts (party servers, workers) read it from
    ``$TRUSTLAB_THREADS``. ``None`` keeps ``$TRUSTLAB_THREADS`` or the default 1."""
    import os

    if threads is None:
        return
    if threads < 1:
        from .errors import ConfigError

        raise ConfigError(f"--threads must be >= 1, got {threads}", hint="pass --threads 1")
    os.environ["TRUSTLAB_THREADS"] = str(threads)
