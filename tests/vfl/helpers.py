"""Shared helpers for the vfl tests: run the CLI in-process, parse printed hints, check they name real flags."""

import re
import shlex

import pytest

from trustlab.cli.main import main


def run_cli(argv, capsys):
    """(exit code, stdout, stderr) of ``trustlab argv`` run in this process."""
    capsys.readouterr()
    code = 0
    try:
        main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(err: str, code: int, expected: int):
    """exit code, exactly one ``error:`` line and one ``hint:`` line, no traceback."""
    assert code == expected, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert "Traceback" not in err
    assert sum(l.startswith("error: ") for l in lines) == 1, err
    assert sum(l.startswith("hint: ") for l in lines) == 1, err


def hint_of(err: str) -> str:
    return next(l for l in err.splitlines() if l.startswith("hint: "))[6:]


def hint_command(hint: str) -> list[str]:
    """The first command named in a hint: backticked, else after 'resume with:' / 'start the run afresh:'."""
    m = re.search(r"`(trustlab [^`]+)`", hint) or re.search(r"(trustlab vfl [^;,()]+?)\s*(?:\(|;|,|$)", hint)
    assert m, f"no command in hint {hint!r}"
    argv = shlex.split(m.group(1))
    assert argv[0] == "trustlab"
    return argv[1:]


def assert_flags_exist(hint: str):
    """Every ``--flag`` a hint names belongs to the vfl command it names (or to some vfl command)."""
    import typer

    from trustlab.vfl.cli import app

    group = typer.main.get_command(app)
    commands = {name: cmd for name, cmd in group.commands.items()}

    def opts(cmd):
        if hasattr(cmd, "commands"):
            return set().union(*(opts(c) for c in cmd.commands.values()))
        return {"--help", *(o for p in cmd.params for o in (*p.opts, *p.secondary_opts))}

    every = set().union(*(opts(c) for c in commands.values()))
    for m in re.finditer(r"trustlab vfl (\w[\w-]*)((?:\s+[^`;()]*)?)", hint):
        verb, rest = m.group(1), m.group(2)
        assert verb in commands, f"hint names unknown command vfl {verb}: {hint!r}"
        for flag in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", rest):
            assert flag in opts(commands[verb]), f"vfl {verb} has no {flag}: {hint!r}"
    for flag in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", hint):
        assert flag in every, f"no vfl command has {flag}: {hint!r}"


@pytest.fixture
def cli(capsys):
    return lambda *argv: run_cli(argv, capsys)
