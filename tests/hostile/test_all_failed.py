"""Issue 16 §4, a run where everything failed: a server that answers 500, 429, 400, ``choices: []`` or nothing to
every request (and a failing moderation server) makes the verb exit 4 naming the URL and the failure, after
writing what succeeded; more than ``safety.failures.FAIL_SHARE`` (half) of the records failed is exit 4 too.
Today these runs exit 0 with an empty table."""

from __future__ import annotations

import json

import pytest

from tests.hostile.harness import assert_refused, run_cli
from trustlab.models.llm.fake_server import FakeServer

pytestmark = pytest.mark.net

CASES = ["eval-500-every-request", "eval-429-every-request", "eval-400-every-request", "eval-empty-choices",
         "eval-silent-server-every-request", "generate-500-every-request", "eval-three-of-four-failed",
         "judge-moderation-server-fails-every-request", "fp-verify-500-every-request"]

REFUSE = {"default": "I cannot help with that."}


def eval_args(verb: str, url: str, out, limit: int = 2) -> list[str]:
    args = ["safety", verb, "--backend", "openai", "--base-url", url, "--model", "fake", "--dataset", "fixture",
            "--limit", str(limit), "--max-tokens", "8", "--timeout", "60", "--max-retries", "0", "--out", str(out)]
    return args + (["--judge", "refusal"] if verb == "eval" else [])


def generations(out) -> list[dict]:
    lines = (out / "generations.jsonl").read_text().splitlines()
    return [json.loads(x) for x in lines[1:]]  # the first line is the stamped header


@pytest.mark.timeout(120)
@pytest.mark.parametrize("knobs,words", [
    (dict(fail_first=1000), ["HTTP 500"]), (dict(fail_first=1000, fail_status=429), ["HTTP 429"]),
    (dict(fail_first=1000, fail_status=400), ["HTTP 400"]),
], ids=["500", "429", "400"])
def test_eval_every_request_failing_is_exit_4_after_writing_results(capsys, tmp_path, knobs, words):
    with FakeServer(REFUSE, **knobs) as srv:
        got = run_cli(capsys, *eval_args("eval", srv.base_url, tmp_path / "run"))
    assert_refused(got, 4, srv.base_url, "2 of 2 generation(s) failed", *words)
    assert "--retry-errors" in got.hints[0]
    assert (tmp_path / "run" / "results.json").is_file()  # the results of what succeeded (nothing) are written
    assert [g["status"] for g in generations(tmp_path / "run")] == ["error", "error"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode,words", [("empty_choices", ["choices is empty"]), ("hang", ["deadline"]),
                                        ("close", ["unreachable"])],
                         ids=["empty-choices", "silent", "connection-dropped"])
def test_eval_server_that_never_answers_properly_is_exit_4(capsys, tmp_path, mode, words):
    with FakeServer(REFUSE, mode=mode) as srv:  # the model list answers; every generation request does not
        args = eval_args("eval", srv.base_url, tmp_path / "run")
        args[args.index("--timeout") + 1] = "2"
        got = run_cli(capsys, *args)
    assert_refused(got, 4, srv.base_url, *words)


@pytest.mark.timeout(120)
def test_generate_every_request_failing_is_exit_4(capsys, tmp_path):
    with FakeServer(REFUSE, fail_first=1000, fail_status=503) as srv:
        got = run_cli(capsys, *eval_args("generate", srv.base_url, tmp_path / "run"))
    assert_refused(got, 4, srv.base_url, "HTTP 503", "every one")
    assert len(generations(tmp_path / "run")) == 2  # stored as errors, retried by --retry-errors


@pytest.mark.timeout(120)
def test_more_than_the_stated_share_failed_is_exit_4_and_keeps_what_succeeded(capsys, tmp_path):
    from trustlab.safety.failures import FAIL_SHARE

    assert FAIL_SHARE == 0.5
    with FakeServer(REFUSE, faults=[500, 500, 500]) as srv:
        got = run_cli(capsys, *eval_args("eval", srv.base_url, tmp_path / "run", limit=4))
    assert_refused(got, 4, srv.base_url, "3 of 4 generation(s) failed", "more than 50%")
    ok = [g for g in generations(tmp_path / "run") if g["status"] == "ok"]
    assert len(ok) == 1 and ok[0]["response"] == "I cannot help with that."
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["metrics"]["strategies"]["default"]["judges"]["refusal"]["response"]["n_prompts"] == 1


@pytest.mark.timeout(120)
def test_a_failed_share_at_or_below_half_is_still_a_result(capsys, tmp_path):
    with FakeServer(REFUSE, faults=[500]) as srv:
        got = run_cli(capsys, *eval_args("eval", srv.base_url, tmp_path / "run", limit=4))
    assert got.code == 0, got.err
    assert sum(g["status"] == "error" for g in generations(tmp_path / "run")) == 1


@pytest.mark.timeout(180)
def test_judge_moderation_against_a_failing_server_is_exit_4(capsys, tmp_path):
    with FakeServer(REFUSE) as good:
        got = run_cli(capsys, *eval_args("generate", good.base_url, tmp_path / "run"))
    assert got.code == 0, got.err
    with FakeServer({}, fail_first=1000) as bad:
        got = run_cli(capsys, "safety", "judge", str(tmp_path / "run"), "--judge", "moderation", "--judge-base-url",
                      bad.base_url, "--timeout", "60", "--max-retries", "0")
        assert bad.posts("/moderations")  # it tried
    assert_refused(got, 4, bad.base_url, "judge moderation", "HTTP 500")
    labels = [json.loads(x) for x in (tmp_path / "run" / "labels.jsonl").read_text().splitlines()[1:]]
    statuses = [r["status"] for r in labels if r["part"] == "response"]
    assert statuses == ["error", "error"]  # kept, retried by --retry-errors


@pytest.mark.timeout(120)
def test_fp_verify_when_nothing_was_answered_is_exit_4(capsys, tmp_path, tiny_lm):
    from tests.fingerprint.helpers import make_set

    fps = make_set(tiny_lm[1], [(f"all failed key {i}", f" r{i}") for i in range(6)])
    fps.save(tmp_path / "fp.json")
    with FakeServer(REFUSE, fail_first=1000) as srv:
        got = run_cli(capsys, "fingerprint", "verify", "--fingerprints", str(tmp_path / "fp.json"), "--endpoint",
                      srv.base_url, "--served-model", "fake-model", "--timeout", "60", "--max-retries", "0",
                      "--out", str(tmp_path / "v"))
    assert_refused(got, 4, srv.base_url, "answered none", "HTTP 500")
    assert not (tmp_path / "v" / "verify_result.json").exists()
