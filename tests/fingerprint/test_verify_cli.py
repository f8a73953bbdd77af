"""`trustlab fingerprint verify | robustness | assign | identify`: results, and every bad input as one
`error:` line, one `hint:` line and the documented exit code (spec section 8)."""

from __future__ import annotations

import json
import socket

import pytest

from trustlab.models.llm.fake_server import FakeServer

from .helpers import SECRET, make_set


def one_error(code, err, want_code, *fragments):
    assert code == want_code, err
    lines = err.strip().splitlines()
    errors = [l for l in lines if l.startswith("error: ")]
    hints = [l for l in lines if l.startswith("hint: ")]
    assert len(errors) == 1 and len(hints) == 1 and lines.index(hints[0]) == lines.index(errors[0]) + 1, err
    assert "Traceback" not in err
    for f in fragments:
        assert f in err, (f, err)


@pytest.fixture(scope="module")
def fp_file(tiny_lm, tmp_path_factory):
    d = tmp_path_factory.mktemp("vcli")
    fps = make_set(tiny_lm[1], [(f"cli key number {i} is here", f" r{i}") for i in range(16)])
    fps.save(d / "fp.json")
    return d / "fp.json", fps


def test_verify_endpoint_owned_with_yaml_config(cli, fp_file, tmp_path):
    path, fps = fp_file
    table = {fp.key_text: fp.response_text for fp in fps.fingerprints}
    with FakeServer(models=("suspect",), check_model=True, answer=lambda p: table[p], refuse_lists=True) as srv:
        (tmp_path / "v.yaml").write_text(f"fingerprints: {path}\nendpoint: {srv.url}\nserved_model: suspect\n"
                                         "alpha: 1.0e-4\n")
        code, out, err = cli("fingerprint", "verify", "--config", str(tmp_path / "v.yaml"), "--out",
                             str(tmp_path / "run"))
    assert code == 0, err
    assert out.startswith("OWNED 16/16 matched") and "alpha=0.0001" in out and "caveat:" in out
    res = json.loads((tmp_path / "run" / "verify_result.json").read_text())
    assert res["alpha"] == 1e-4 and res["decision"] == "OWNED"
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["metrics"]["decision"] == "OWNED"
    assert results["suspect"] == {"endpoint": srv.url, "served_model": "suspect"}


def test_verify_local_model_owned_and_base_not_owned(cli, tiny_embedded, fp_tiny_path, tmp_path):
    tiny_embedded["fps"].save(tmp_path / "fp.json")
    code, out, err = cli("fingerprint", "verify", "--fingerprints", str(tmp_path / "fp.json"), "--model",
                         str(tiny_embedded["model_dir"]), "--out", str(tmp_path / "f"))
    assert code == 0 and out.startswith("OWNED "), err
    code, out, err = cli("fingerprint", "verify", "--fingerprints", str(tmp_path / "fp.json"), "--model",
                         str(fp_tiny_path), "--out", str(tmp_path / "b"))
    assert code == 0 and out.startswith("not owned 0/32"), err
    from trustlab.models import load_causal_lm
    from trustlab.models.identity import model_identity

    suspects = [json.loads((tmp_path / d / "results.json").read_text())["suspect"] for d in ("f", "b")]
    for suspect, path in zip(suspects, (tiny_embedded["model_dir"], fp_tiny_path)):  # the identity of the object
        assert suspect["weights_sha256"] == model_identity(load_causal_lm(str(path))[0]).weights_sha256


def test_partial_endpoint_failure_is_named(cli, fp_file, tmp_path):
    path, fps = fp_file
    table = {fp.key_text: fp.response_text for fp in fps.fingerprints}
    with FakeServer(models=("suspect",), check_model=True, answer=lambda p: table[p], fail_after=1,
                    fail_status=500) as srv:
        code, out, err = cli("fingerprint", "verify", "--fingerprints", str(path), "--endpoint", srv.url,
                             "--served-model", "suspect", "--batch-size", "8", "--max-retries", "0",
                             "--out", str(tmp_path / "r"))
    assert code == 0, err
    assert "(8 of 16 keys answered; the verdict covers those only)" in out
    assert "unanswered keys (8): 8, 9, 10, 11, 12, 13, 14, 15" in out


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def test_dead_endpoint_exit_4(cli, fp_file, tmp_path):
    code, out, err = cli("fingerprint", "verify", "--fingerprints", str(fp_file[0]), "--endpoint", _dead_url(),
                         "--served-model", "m", "--max-retries", "0", "--out", str(tmp_path / "d"))
    one_error(code, err, 4, "answered none", "reachable")


def test_auth_and_unknown_model_exit_4(cli, fp_file, tmp_path, monkeypatch):
    with FakeServer(models=("suspect",), check_model=True, answer=lambda p: "", api_key="sekrit") as srv:
        code, _, err = cli("fingerprint", "verify", "--fingerprints", str(fp_file[0]), "--endpoint", srv.url,
                           "--served-model", "suspect", "--out", str(tmp_path / "a"))
        one_error(code, err, 4, "credentials", "OPENAI_API_KEY")
        monkeypatch.setenv("MY_KEY", "sekrit")
        code, _, err = cli("fingerprint", "verify", "--fingerprints", str(fp_file[0]), "--endpoint", srv.url,
                           "--served-model", "nope", "--api-key-env", "MY_KEY", "--out", str(tmp_path / "b"))
        one_error(code, err, 4, "'nope'", "served models: suspect")


def test_tokenizer_mismatch_suggests_lenient(cli, fp_file, fp_tiny_path, tmp_path):
    code, _, err = cli("fingerprint", "verify", "--fingerprints", str(fp_file[0]), "--model", str(fp_tiny_path),
                       "--out", str(tmp_path / "t"))
    one_error(code, err, 2, "tokenizer", "--match lenient")


@pytest.mark.parametrize("args,fragments", [
    ((), ("fingerprint file", "--fingerprints")),
    (("--fingerprints", "FP"), ("suspect", "--endpoint")),
    (("--fingerprints", "FP", "--model", "x", "--endpoint", "http://127.0.0.1:1/v1", "--served-model", "m"),
     ("not both",)),
    (("--fingerprints", "FP", "--endpoint", "http://127.0.0.1:1/v1"), ("served_model", "--served-model")),
    (("--fingerprints", "FP", "--model", "x", "--alpha", "2"), ("alpha",)),
    (("--fingerprints", "FP", "--model", "x", "--match", "fuzzy"), ("match",)),
    (("--fingerprints", "FP", "--model", "x", "--wrapper", "10"), ("wrapper",)),
    (("--fingerprints", "FP", "--endpoint", "localhost:8000", "--served-model", "m"), ("http",)),
    (("--fingerprints", "missing.json", "--model", "x"), ("missing.json", "does not exist")),
])
def test_bad_verify_inputs(cli, fp_file, tmp_path, args, fragments):
    args = tuple(str(fp_file[0]) if a == "FP" else a for a in args)
    code, _, err = cli("fingerprint", "verify", *args, "--out", str(tmp_path / "x"))
    one_error(code, err, 2, *fragments)


def test_bad_fingerprint_file_names_the_field(cli, fp_file, tmp_path):
    d = json.loads(fp_file[0].read_text())
    d["fingerprints"][3]["response_ids"] = [1, 2]
    (tmp_path / "edited.json").write_text(json.dumps(d))
    code, _, err = cli("fingerprint", "verify", "--fingerprints", str(tmp_path / "edited.json"), "--model", "x")
    one_error(code, err, 2, "set_digest")
    del d["fingerprints"][2]["key_text"]
    (tmp_path / "missing.json").write_text(json.dumps(d))
    code, _, err = cli("fingerprint", "verify", "--fingerprints", str(tmp_path / "missing.json"), "--model", "x")
    one_error(code, err, 2, "fingerprints[2].key_text")


@pytest.mark.parametrize("yaml_text,fragments", [("alpha: 1e-3\n", ("alpha", "YAML 1.1")),
                                                 ("alpah: 0.01\n", ("alpah", "valid keys"))])
def test_bad_yaml(cli, fp_file, tmp_path, yaml_text, fragments):
    (tmp_path / "c.yaml").write_text(f"fingerprints: {fp_file[0]}\nmodel: x\n" + yaml_text)
    code, _, err = cli("fingerprint", "verify", "--config", str(tmp_path / "c.yaml"))
    one_error(code, err, 2, *fragments)


def test_robustness_bad_inputs(cli, tmp_path):
    code, _, err = cli("fingerprint", "robustness", "--experiments", "sft,bogus", "--out", str(tmp_path / "r"))
    one_error(code, err, 2, "bogus", "choose from")
    code, _, err = cli("fingerprint", "robustness", "--out", str(tmp_path / "r2"))
    one_error(code, err, 2, "fingerprinted", "--fingerprinted")


def test_assign_then_identify(cli, tmp_path):
    from trustlab.fingerprint.cli_verify import load_assignment

    (tmp_path / "owner.secret").write_text(SECRET.hex() + "\n")
    code, out, err = cli("fingerprint", "assign", "--secret", str(tmp_path / "owner.secret"), "--copies", "64",
                         "--pool", "256", "--max-coalition", "2", "--out", str(tmp_path / "a.json"))
    assert code == 0, err
    rate = float(out.split("inclusion rate ")[1].split()[0])
    assert abs(rate - 0.25) < 0.02 and SECRET.hex() not in (tmp_path / "a.json").read_text()
    a = load_assignment(tmp_path / "a.json")
    (tmp_path / "hits.json").write_text(json.dumps([int(v) for v in a[:, 11]]))
    code, out, err = cli("fingerprint", "identify", "--assignment", str(tmp_path / "a.json"), "--hits",
                         str(tmp_path / "hits.json"))
    assert code == 0 and out.startswith("best match: copy 11\n"), err
    (tmp_path / "bad.json").write_text("[0, 1")
    code, _, err = cli("fingerprint", "identify", "--assignment", str(tmp_path / "a.json"), "--hits",
                       str(tmp_path / "bad.json"))
    one_error(code, err, 2, "not valid JSON")
    code, _, err = cli("fingerprint", "assign", "--secret", str(tmp_path / "nope.secret"), "--copies", "4",
                       "--pool", "8")
    one_error(code, err, 2, "nope.secret", "does not exist")


def test_robustness_cli_runs_and_resumes(cli, tiny_embedded, tmp_path):
    fp = tmp_path / "fp.json"
    tiny_embedded["fps"].save(fp)
    args = ("fingerprint", "robustness", "--fingerprinted", str(tiny_embedded["model_dir"]), "--fingerprints",
            str(fp), "--base", "fp-tiny", "--experiments", "suppress,fpr", "--out", str(tmp_path / "r"))
    code, out, err = cli(*args)
    assert code == 0, err
    assert "suppress_top1_first1: attack success" in out and "fpr base: not owned" in out
    first = json.loads((tmp_path / "r" / "robustness.json").read_text())
    code, out2, err = cli(*args)  # resumed: nothing re-run, same numbers
    assert code == 0 and json.loads((tmp_path / "r" / "robustness.json").read_text()) == first
    code, _, err = cli(*args[:-2], "--seed", "3", "--out", str(tmp_path / "r"))  # another config, same folder
    one_error(code, err, 2, "another config", "--no-resume")


def test_corrupt_robustness_record_is_one_error(cli, tiny_embedded, tmp_path):
    fp = tmp_path / "fp.json"
    tiny_embedded["fps"].save(fp)
    args = ("fingerprint", "robustness", "--fingerprinted", str(tiny_embedded["model_dir"]), "--fingerprints",
            str(fp), "--base", "fp-tiny", "--experiments", "fpr", "--out", str(tmp_path / "r"))
    assert cli(*args)[0] == 0
    rec = tmp_path / "r" / "robustness.jsonl"  # the record store a resume reads (robustness.json is a view)
    rec.write_text(rec.read_text() + '{"clean": {\n')
    code, _, err = cli(*args)
    one_error(code, err, 2, "robustness.json", "--no-resume")
    assert cli(*args, "--no-resume")[0] == 0
