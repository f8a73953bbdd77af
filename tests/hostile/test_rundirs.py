"""Issue 16 §1 and §7: no verb deletes, clears or overwrites what its run did not write, and resume hints are
commands that work. Each case replays a hostile or careless command line through the CLI and checks the exit code,
one ``error:`` and one ``hint:`` line, no traceback, and that every file that existed before is byte-identical."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trustlab.runtime.rundir import RunDir

from .harness import assert_refused, assert_untouched, run_cli, snapshot

CASES = [
    "fingerprint-verify-out-dot", "fingerprint-verify-out-embed-run", "fingerprint-generate-run-dir-project",
    "fingerprint-embed-overwrite-project", "fingerprint-robustness-out-embed-run", "safety-generate-no-resume-embed",
    "safety-sft-no-resume-embed", "safety-judge-project", "certify-train-no-resume-embed",
    "certify-train-no-resume-project", "certify-train-project-config-yaml", "certify-train-cross-lab-hint",
    "vfl-train-no-resume-project", "vfl-sweep-no-resume-embed", "demo-no-resume-foreign-lab-folder",
    "certify-train-no-resume-keeps-user-files", "demo-ctrl-c-hint-resumes-the-demo", "safety-ctrl-c-hint-is-a-command",
]

CERTIFY_TRAIN = ["certify", "train", "--epochs", "1", "--hidden", "8"]


@pytest.fixture()
def project(tmp_path, monkeypatch) -> Path:
    """A user's source tree, the working directory of every case."""
    proj = tmp_path / "proj"
    (proj / "src" / "pkg").mkdir(parents=True)
    (proj / "src" / "pkg" / "__init__.py").write_text("VALUE = 1\n")
    (proj / "README.md").write_text("# my project\n")
    (proj / "config.yaml").write_text("mine: true\n")
    (proj / "results.json").write_text('{"mine": true}\n')
    monkeypatch.chdir(proj)
    return proj


@pytest.fixture()
def embed_run(tmp_path) -> Path:
    """A fingerprint embed run folder: marker, config and a fingerprinted model."""
    run = RunDir.open(tmp_path / "embed", "fingerprint", "embed", {"lr": 0.003})
    (run.path / "model").mkdir()
    (run.path / "model" / "model.safetensors").write_bytes(b"fingerprinted weights")
    (run.path / "fingerprints.json").write_text("{}")
    run.write_results({"accuracy": 1.0})
    run.close()
    return run.path


def _refused_untouched(capsys, root: Path, argv: list, *words: str) -> str:
    before = snapshot(root)
    outcome = run_cli(capsys, *argv)
    assert_refused(outcome, 2, *words)
    assert_untouched(before, root)
    return outcome.errors[0]


def test_fingerprint_verify_out_dot_refuses_the_project(capsys, project, fp_file):
    import shutil

    shutil.copy(fp_file, project / "fp.json")
    error = _refused_untouched(capsys, project, ["fingerprint", "verify", "--fingerprints", "fp.json", "--model",
                                                 "fp-tiny", "--out", "."], "not a trustlab run folder", "README.md")
    assert "OWNED" not in error


def test_fingerprint_verify_into_the_embed_run_it_verifies_is_refused(capsys, tmp_path, embed_run, fp_file):
    _refused_untouched(capsys, tmp_path, ["fingerprint", "verify", "--fingerprints", fp_file, "--model",
                                          embed_run / "model", "--out", embed_run], "fingerprint embed")


def test_fingerprint_generate_into_a_project_writes_nothing(capsys, project):
    before = snapshot(project.parent)
    outcome = run_cli(capsys, "fingerprint", "generate", "--model", "fp-tiny", "-n", "2", "--out",
                      project.parent / "new-fp.json", "--secret", project.parent / "new.secret", "--run-dir", project)
    assert_refused(outcome, 2, "not a trustlab run folder")
    assert_untouched(before, project.parent)
    assert not (project.parent / "new-fp.json").exists() and not (project.parent / "new.secret").exists()


def test_fingerprint_embed_overwrite_refuses_a_project(capsys, project, fp_file):
    _refused_untouched(capsys, project, ["fingerprint", "embed", "--fingerprints", fp_file, "--model", "fp-tiny",
                                         "--out", project, "--overwrite"], "not a trustlab run folder")


def test_fingerprint_robustness_into_the_embed_run_is_refused(capsys, tmp_path, embed_run, fp_file):
    _refused_untouched(capsys, tmp_path, ["fingerprint", "robustness", "--fingerprinted", embed_run / "model",
                                          "--base", "fp-tiny", "--fingerprints", fp_file, "--experiments", "fpr",
                                          "--out", embed_run], "fingerprint embed")


def test_safety_generate_no_resume_refuses_an_embed_run(capsys, tmp_path, embed_run):
    _refused_untouched(capsys, tmp_path, ["safety", "generate", "--backend", "openai", "--base-url",
                                          "http://127.0.0.1:9/v1", "--model", "m", "--dataset", "fixture",
                                          "--out", embed_run, "--no-resume"], "fingerprint embed")


def test_safety_sft_no_resume_refuses_an_embed_run(capsys, tmp_path, embed_run):
    data = tmp_path / "sft.jsonl"
    data.write_text(json.dumps({"prompt": "hi", "response": "<think>ok</think> hello"}) + "\n")
    _refused_untouched(capsys, tmp_path, ["safety", "sft", "--data", data, "--model", "tiny-llama", "--out",
                                          embed_run, "--no-resume"], "fingerprint embed")
    assert (embed_run / "model" / "model.safetensors").read_bytes() == b"fingerprinted weights"


def test_safety_judge_refuses_a_folder_of_no_safety_run(capsys, project):
    _refused_untouched(capsys, project, ["safety", "judge", project], "no run marker")


def test_certify_train_no_resume_refuses_an_embed_run(capsys, tmp_path, embed_run):
    _refused_untouched(capsys, tmp_path, [*CERTIFY_TRAIN, "--out", embed_run, "--no-resume"], "fingerprint embed")


def test_certify_train_no_resume_refuses_a_project(capsys, project):
    _refused_untouched(capsys, project, [*CERTIFY_TRAIN, "--out", project, "--no-resume"], "src/")


def test_certify_train_never_overwrites_a_users_config_yaml(capsys, project):
    _refused_untouched(capsys, project, [*CERTIFY_TRAIN, "--out", project], "config.yaml")


def test_cross_lab_refusal_names_the_run_not_forty_keys_and_never_hints_no_resume(capsys, tmp_path, embed_run):
    outcome = run_cli(capsys, *CERTIFY_TRAIN, "--out", embed_run)
    assert_refused(outcome, 2, "fingerprint embed")
    assert "differing" not in outcome.errors[0] and "--no-resume" not in outcome.hints[0]


def test_vfl_train_no_resume_refuses_a_project(capsys, project):
    _refused_untouched(capsys, project, ["vfl", "train", "--out", project, "--no-resume"], "not a trustlab run")


def test_vfl_sweep_no_resume_refuses_an_embed_run(capsys, tmp_path, embed_run):
    _refused_untouched(capsys, tmp_path, ["vfl", "sweep", "--out", embed_run, "--no-resume"], "fingerprint embed")


def test_demo_no_resume_refuses_a_lab_folder_it_did_not_write(capsys, project):
    (project / "certify").mkdir()
    (project / "certify" / "notes.txt").write_text("mine\n")
    _refused_untouched(capsys, project, ["demo", "--labs", "certify", "--out", project, "--no-resume"],
                       "certify")


def test_no_resume_on_its_own_run_removes_only_what_that_run_wrote(capsys, tmp_path):
    out = tmp_path / "run"
    assert run_cli(capsys, *CERTIFY_TRAIN, "--out", out).code == 0
    (out / "notes.txt").write_text("the user's notes\n")
    (out / "model" / "README").write_text("the user's readme\n")
    ours = set(RunDir.open(out, "certify", "train", resume=True).manifest)
    assert "model/model.pt" in ours and "notes.txt" not in ours
    assert run_cli(capsys, *CERTIFY_TRAIN, "--out", out, "--no-resume").code == 0
    assert (out / "notes.txt").read_text() == "the user's notes\n"
    assert (out / "model" / "README").read_text() == "the user's readme\n"
    assert (out / "model" / "model.pt").is_file()


def test_demo_ctrl_c_hint_resumes_the_demo_not_one_lab(capsys, tmp_path, monkeypatch):
    import trustlab.certify.cli as certify_cli

    def interrupted(out, quick=True, resume=True):
        raise KeyboardInterrupt

    monkeypatch.setattr(certify_cli, "run_demo", interrupted)
    outcome = run_cli(capsys, "demo", "--labs", "certify", "--out", tmp_path / "d")
    assert_refused(outcome, 130, "interrupted")
    assert outcome.hints[0] == f"hint: resume with: trustlab demo --labs certify --out {tmp_path / 'd'}"


def test_safety_ctrl_c_hint_is_the_real_command_and_pasting_it_resumes(capsys, tmp_path, monkeypatch):
    import shlex

    from trustlab.models.llm.fake_server import FakeServer

    import trustlab.safety.pipeline as pipeline

    calls = {"n": 0}
    real = pipeline.generations_store

    def store_then_interrupt(path, cfg):
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return real(path, cfg)

    monkeypatch.setattr(pipeline, "generations_store", store_then_interrupt)
    monkeypatch.chdir(tmp_path)
    with FakeServer({"rules": [{"match": "", "reply": "I cannot help with that."}]}) as srv:
        argv = ["safety", "generate", "--backend", "openai", "--base-url", srv.base_url, "--model", "fake",
                "--dataset", "fixture", "--limit", "2", "--strategy", "default", "--max-tokens", "8"]
        outcome = run_cli(capsys, *argv)
        assert_refused(outcome, 130, "interrupted")
        command = outcome.hints[0].removeprefix("hint: resume with: ")
        words = shlex.split(command)
        assert words[0] == "trustlab" and words[1:len(argv) + 1] == argv and "--out" in words
        again = run_cli(capsys, *words[1:])
        assert again.code == 0, again.err
