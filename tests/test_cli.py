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
