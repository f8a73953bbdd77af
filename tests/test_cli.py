import json
import subprocess
import sys


def test_help_lists_commands_and_does_not_import_torch():
    code = ("import sys; from trustlab.cli.main import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    for cmd in ("demo", "report", "data", "models", "certify", "vfl"):
        assert cmd in out
    assert out.strip().endswith("NO-TORCH")


def test_version(cli):
    from trustlab import __version__

    code, out, _ = cli("--version")
    assert code == 0 and out.strip() == f"trustlab {__version__}"


def test_bad_input_exits_2_with_hint(cli):
    code, _, err = cli("data", "show", "cifar10")
    assert code == 2
    assert err.splitlines()[0] == "error: unknown dataset 'cifar10'" and err.splitlines()[1].startswith("hint: ")


def test_missing_dependency_exits_3(cli, monkeypatch):
    monkeypatch.setattr("trustlab.data.images.fashion_mnist_dir", lambda: None)
    code, _, err = cli("data", "show", "fashion-mnist")
    assert code == 3 and "apt-get install dataset-fashion-mnist" in err


def test_data_list_and_show(cli):
    code, out, _ = cli("data", "list")
    assert code == 0 and "strongreject-small" in out and "chat-corpus" in out
    code, out, _ = cli("data", "show", "digits")
    assert code == 0 and "1797 items" in out and "(1, 8, 8)" in out


def test_models_list(cli):
    code, out, _ = cli("models", "list")
    assert code == 0 and "smollm2-135m-instruct" in out and "tiny-llama" in out


def test_report_on_missing_folder_is_a_clean_error(cli, tmp_path):
    code, _, err = cli("report", str(tmp_path))
    assert code == 2 and "holds no results.json" in err


def test_ctrl_c_prints_error_and_working_resume_hint(tmp_path, monkeypatch, capsys):
    """typer turns KeyboardInterrupt into a silent exit 130; the CLI must still explain it and say how to resume."""
    from trustlab.cli.main import main
    from trustlab.runtime import RunDir

    def interrupted_render(run_dir, sections=None, **_):
        RunDir.open(tmp_path / "run", "lab", "verb", {"a": 1})
        raise KeyboardInterrupt

    monkeypatch.setattr("trustlab.report.render", interrupted_render)
    import pytest

    with pytest.raises(SystemExit) as info:
        main(["report", str(tmp_path)])
    err = capsys.readouterr().err.splitlines()
    assert info.value.code == 130
    assert err[0].startswith("error: interrupted") and err[1] == \
        f"hint: resume with: trustlab report {tmp_path} --out {tmp_path / 'run'}"
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert events[-1]["kind"] == "status" and events[-1]["status"] == "interrupted"


def test_usage_errors_are_error_and_hint_lines(capsys):
    import pytest

    from trustlab.cli.main import main

    with pytest.raises(SystemExit) as info:
        main(["certify", "stats", "--alpha", "abc"])
    err = capsys.readouterr().err.splitlines()
    assert info.value.code == 2 and err[0].startswith("error: ") and "--alpha" in err[0]
    assert err[1].startswith("hint: ") and "--help" in err[1]


def test_unexpected_exception_is_one_line_not_a_traceback(monkeypatch, capsys, tmp_path):
    import pytest

    from trustlab.cli.main import main

    monkeypatch.setattr("trustlab.report.render", lambda *a, **k: [][1])
    with pytest.raises(SystemExit) as info:
        main(["report", str(tmp_path)])
    err = capsys.readouterr().err
    assert info.value.code == 1 and "Traceback" not in err and err.startswith("error: internal error: IndexError")


def test_resume_command_drops_the_flags_that_discard_work():
    from trustlab.runtime.rundir import resume_command

    assert resume_command(["certify", "eval", "M", "--no-resume", "--out", "a b"]) == "trustlab certify eval M --out 'a b'"


def test_command_listings_are_not_cut_with_ellipses(cli):
    for args in (("--help",), ("certify", "--help"), ("vfl", "--help"), ("data", "--help")):
        code, out, _ = cli(*args)
        assert code == 0 and "..." not in out.split("Commands")[-1], out  # plain or rich help


def test_every_option_and_argument_of_every_lab_has_help_text():
    """Issue 10: `--help` of any command explains every flag (dozens had none, e.g. safety's sampling flags)."""
    from typer.main import get_command

    from trustlab.cli import data_cmd, main, models_cmd

    apps = {"trustlab": main.app, "data": data_cmd.app, "models": models_cmd.app,
            **{lab: main.lab_module(lab).app for lab in main.available_labs()}}
    assert {"certify", "vfl", "safety", "fingerprint"} <= set(apps)

    def commands(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from commands(sub, f"{path} {name}")
        else:
            yield path, cmd

    bare = [f"{path} {p.name}" for name, app in apps.items() for path, cmd in commands(get_command(app), name)
            for p in cmd.params if not getattr(p, "hidden", False) and not (getattr(p, "help", None) or "").strip()]
    assert not bare, bare


def test_shared_options_are_defined_once_and_mean_the_same_in_every_verb():
    """Issue 17: --out, --resume/--no-resume, --seed, --config, --threads and --quiet come from
    trustlab.runtime.cli_options in every verb of every lab: no verb spells one of them with its own typer.Option,
    and every verb that has one gets the same flag spelling and kind."""
    import ast
    from pathlib import Path

    from typer.main import get_command

    import trustlab
    from trustlab.cli import data_cmd, main, models_cmd

    shared = {"--out", "--resume/--no-resume", "--resume", "--no-resume", "--seed", "--config", "--threads", "--quiet"}
    root = Path(trustlab.__file__).parent
    own = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "cli_options.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "Option"
                    and any(isinstance(a, ast.Constant) and a.value in shared for a in node.args)):
                own.append(f"{path.relative_to(root)}:{node.lineno}")
    assert not own, own

    apps = {"trustlab": main.app, "data": data_cmd.app, "models": models_cmd.app,
            **{lab: main.lab_module(lab).app for lab in main.available_labs()}}

    def commands(cmd, path):
        if hasattr(cmd, "commands"):
            yield path, cmd
            for name, sub in cmd.commands.items():
                yield from commands(sub, f"{path} {name}")
        else:
            yield path, cmd

    seen = set()
    for name, app in apps.items():
        for path, cmd in commands(get_command(app), name):
            for p in cmd.params:
                if p.param_type_name != "option":  # typer vendors click: no isinstance on click.Option
                    continue
                flags = set(p.opts) | set(p.secondary_opts)
                if "--resume" in flags:
                    assert p.opts == ["--resume"] and p.secondary_opts == ["--no-resume"] and p.default is True, path
                    seen.add("resume")
                if "--quiet" in flags:
                    assert set(p.opts) == {"--quiet", "-q"} and p.is_flag and p.default is False, path
                    seen.add("quiet")
                for flag in ("--out", "--seed", "--config", "--threads"):
                    if flag in flags:
                        assert p.opts == [flag] and not p.secondary_opts and not p.is_flag, (path, p.opts)
                        seen.add(flag)
                if "--threads" in flags or "--seed" in flags:
                    assert p.type_descriptor.annotation is int, (path, p.opts, p.type_descriptor)
    assert seen == {"resume", "quiet", "--out", "--seed", "--config", "--threads"}, seen
