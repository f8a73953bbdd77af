"""CLI contract: lazy imports, exit codes, run_demo/report_section, export-parties."""

import json
import subprocess
import sys

import pytest

from trustlab.cli.main import main

from .helpers import run_cli


def test_cli_module_imports_no_torch_or_grpc():
    code = "import sys, trustlab.vfl.cli; print('torch' in sys.modules, 'grpc' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def _exit(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code, capsys.readouterr().err


def test_bad_input_exit_codes(tmp_path, capsys):
    code, err = _exit(["vfl", "train", "--defence", "bogus", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "defence.kind" in err and "hint:" in err
    code, err = _exit(["vfl", "train", "--config", "nope", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "shipped" in err
    code, err = _exit(["vfl", "train", "--code-len", "3", "--epochs", "1", "--out", str(tmp_path / "r2")], capsys)
    assert code == 2 and "at least 4" in err
    code, err = _exit(["vfl", "party", "--party-id", "0", "--data", "x.npz", "--listen", "127.0.0.1:0"], capsys)
    assert code == 2 and "--tls-cert" in err
    code, err = _exit(["vfl", "attack", "--out", str(tmp_path / "empty")], capsys)
    assert code == 2 and "no trained VFL run" in err


def test_train_attack_report_and_section(tmp_path, capsys):
    run = tmp_path / "bc"
    main_ok = ["vfl", "train", "--config", "breast_cancer", "--epochs", "3", "--out", str(run)]
    assert run_cli(main_ok, capsys)[0] == 0
    assert run_cli(["vfl", "attack", "--out", str(run), "--attacks", "inverse,label,decode,detect",
                    "--ref-acc", "0.95"], capsys)[0] == 0
    res = json.loads((run / "results.json").read_text())
    assert res["lab"] == "vfl" and res["status"] == "ok"
    assert res["attacks"]["inverse_net"]["per_feature_mse"] and res["dcs"]["c_dcs"] is not None
    from trustlab.vfl.cli import report_section

    blocks = report_section(res, run)
    assert any(getattr(b, "headers", None) for b in blocks)
    assert (run / "report.md").is_file()


def test_export_parties(tmp_path, capsys):
    assert run_cli(["vfl", "export-parties", "--config", "wine", "--out", str(tmp_path)], capsys)[0] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["label.npz", "party0.npz", "party1.npz"]


def test_ls_lists_every_defence_and_attack(capsys):
    from trustlab.vfl.catalogue import ATTACKS, SUMMARIES
    from trustlab.vfl.config import DEFENCES
    from trustlab.vfl.evaluate import ATTACKS as EVAL_ATTACKS

    assert ATTACKS == EVAL_ATTACKS
    code, out, _ = run_cli(["vfl", "ls"], capsys)
    assert code == 0, out
    lines = out.splitlines()
    assert "defences:" in lines and "attacks:" in lines
    for name in (*DEFENCES, *ATTACKS):
        assert SUMMARIES[name] and any(ln.split()[:1] == [name] and SUMMARIES[name] in ln for ln in lines), name
