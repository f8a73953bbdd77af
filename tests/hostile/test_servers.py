"""Issue 16 §3, hostile or broken servers, replayed against the one scripted fake server (``models.llm.fake_server``)
through both LLM labs' endpoint verbs: every malformed reply is exit 4 naming the URL and what was wrong, a server
that drips or stays silent is cut off by the total deadline, an oversized body is refused (never stored), a server
that ignores max_tokens or sends impossible usage is flagged, a port above 65535 is exit 2 at once, and Ctrl-C
exits 130 within seconds while requests are in flight.

Time bounds wait for readiness (the fake server has received the request) and are generous multiples of the
deadline: on today's code these cases run forever, so pytest-timeout fails them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.hostile.harness import assert_refused, run_cli
from trustlab.models.llm.fake_server import FakeServer

pytestmark = pytest.mark.net

CASES = ["safety-non-json-body", "safety-invalid-utf8-body", "safety-content-12345", "safety-usage-tokens-abc",
         "safety-negative-usage", "safety-oversized-body-for-few-tokens", "safety-ignores-max-tokens",
         "safety-drip-one-byte-per-second", "safety-probe-timeout", "safety-port-above-65535",
         "safety-ctrl-c-while-dripping", "fp-verify-drip-one-byte-per-second", "fp-verify-non-json-body",
         "fp-verify-chat-content-12345", "fp-verify-oversized-body", "fp-verify-port-above-65535",
         "fp-verify-silent-server-states-its-wait", "fp-verify-ctrl-c-chat-while-dripping"]

REFUSE = {"default": "I cannot help with that."}
DEADLINE_S = 2  # the --timeout of the cases that must time out (drip, silent)
PATIENT_S = 60  # the --timeout of the other cases: a busy machine never turns a reply into a timeout
BOUND_S = 60  # a generous multiple of DEADLINE_S for a busy machine; today's code never returns


def safety_eval(url: str, out: Path, *extra: str, timeout: float = PATIENT_S) -> list[str]:
    return ["safety", "eval", "--backend", "openai", "--base-url", url, "--model", "fake", "--dataset", "fixture",
            "--limit", "2", "--judge", "refusal", "--max-tokens", "8", "--timeout", str(timeout),
            "--max-retries", "0", "--out", str(out), *extra]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode,words", [
    ("non_json", ["not JSON"]), ("non_utf8", ["UTF-8"]), ("wrong_type", ["content", "12345"]),
    ("bad_usage", ["completion_tokens", "abc"]), ("negative_usage", ["negative"]),
    ("oversized", ["cap"]), ("ignore_max_tokens", ["ignores max_tokens"]), ("drip", ["deadline"]),
], ids=["non-json", "invalid-utf8", "content-12345", "usage-abc", "negative-usage", "oversized", "ignores-max-tokens",
        "drip"])
def test_safety_malformed_or_dripping_reply_is_exit_4_naming_the_url(capsys, tmp_path, mode, words):
    with FakeServer(REFUSE, mode=mode, oversize_bytes=2_000_000, drip_bps=1.0) as srv:
        t0 = time.monotonic()
        got = run_cli(capsys, *safety_eval(srv.base_url, tmp_path / "run",
                                           timeout=DEADLINE_S if mode == "drip" else PATIENT_S))
        elapsed = time.monotonic() - t0
    assert_refused(got, 4, srv.base_url, *words)
    assert elapsed < BOUND_S
    stored = b"".join(p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file())
    assert b"x" * 1000 not in stored and b"word word word word" not in stored  # nothing of the bad reply is kept


@pytest.mark.timeout(120)
def test_safety_probe_timeout_is_exit_4_within_the_deadline(capsys, tmp_path):
    with FakeServer(REFUSE, mode="hang", hostile_get=True) as srv:
        t0 = time.monotonic()
        got = run_cli(capsys, *safety_eval(srv.base_url, tmp_path / "run", timeout=DEADLINE_S))
        elapsed = time.monotonic() - t0
        assert [r["path"] for r in srv.requests] == ["/v1/models"]  # the probe is not retried on a timeout
    assert_refused(got, 4, srv.base_url, "/models", "deadline")
    assert elapsed < BOUND_S


def test_safety_port_above_65535_is_exit_2_before_any_request(capsys, tmp_path):
    got = run_cli(capsys, *safety_eval("http://127.0.0.1:70000/v1", tmp_path / "run"))
    assert_refused(got, 2, "70000", "port")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------- fingerprint verify
@pytest.fixture(scope="module")
def fp_file(tiny_lm, tmp_path_factory):
    from tests.fingerprint.helpers import make_set

    fps = make_set(tiny_lm[1], [(f"hostile key number {i} here", f" r{i}") for i in range(8)])
    path = tmp_path_factory.mktemp("hostile-fp") / "fp.json"
    fps.save(path)
    return path


def fp_verify(fp: Path, url: str, out: Path, *extra: str, timeout: float = PATIENT_S) -> list[str]:
    return ["fingerprint", "verify", "--fingerprints", str(fp), "--endpoint", url, "--served-model", "fake-model",
            "--timeout", str(timeout), "--max-retries", "0", "--out", str(out), *extra]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode,api,words", [
    ("drip", "completions", ["deadline"]), ("non_json", "completions", ["not JSON"]),
    ("wrong_type", "chat", ["content", "12345"]), ("oversized", "completions", ["cap"]),
], ids=["drip", "non-json", "chat-content-12345", "oversized"])
def test_fp_verify_hostile_endpoint_is_exit_4_naming_the_url(capsys, tmp_path, fp_file, mode, api, words):
    with FakeServer(REFUSE, mode=mode, oversize_bytes=2_000_000) as srv:
        t0 = time.monotonic()
        got = run_cli(capsys, *fp_verify(fp_file, srv.base_url, tmp_path / "v", "--api", api,
                                         timeout=DEADLINE_S if mode == "drip" else PATIENT_S))
        elapsed = time.monotonic() - t0
    assert_refused(got, 4, srv.base_url, *words)
    assert elapsed < BOUND_S
    assert not (tmp_path / "v" / "verify_result.json").exists()


def test_fp_verify_port_above_65535_is_exit_2(capsys, tmp_path, fp_file):
    got = run_cli(capsys, *fp_verify(fp_file, "http://127.0.0.1:99999/v1", tmp_path / "v"))
    assert_refused(got, 2, "99999", "port")


@pytest.mark.timeout(120)
def test_fp_verify_silent_server_states_its_wait_and_ends_at_the_deadline(capsys, tmp_path, fp_file, monkeypatch):
    monkeypatch.delenv("TRUSTLAB_QUIET", raising=False)  # the wait is stated unless the user asked for quiet
    monkeypatch.delenv("CI", raising=False)
    with FakeServer(REFUSE, mode="hang") as srv:
        t0 = time.monotonic()
        got = run_cli(capsys, *fp_verify(fp_file, srv.base_url, tmp_path / "v", timeout=DEADLINE_S))
        elapsed = time.monotonic() - t0
    assert_refused(got, 4, srv.base_url, "deadline")
    assert f"each request waits at most {DEADLINE_S} s" in got.err  # stated before the first request
    assert elapsed < BOUND_S


# --------------------------------------------------------------------------------------------- Ctrl-C
def _as_from_a_shell() -> None:
    """In the child before exec: SIGINT at its default and unblocked, as a terminal starts a command. A child
    inherits ignored signals and the signal mask, and a shell without job control starts a background command
    (``make test &``, ``nohup ... &``, a CI runner's detached step) with SIGINT ignored (POSIX, asynchronous lists):
    pytest then runs with SIGINT ignored from its first test (traced with a plugin that logged the disposition after
    every test), and so did the CLI it started, which kept looping in daemon_map (faulthandler dump)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _interrupt_while_in_flight(args: list[str], srv: FakeServer, route: str) -> tuple[int, float, str]:
    """Start ``trustlab ARGS``, wait until the server holds a request on ``route`` (readiness, not a sleep), send
    SIGINT, and return the exit code, the seconds from the signal to the exit, and stderr."""
    env = dict(os.environ, OMP_NUM_THREADS="1", TRUSTLAB_QUIET="1", PYTHONFAULTHANDLER="1")
    proc = subprocess.Popen([sys.executable, "-m", "trustlab", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, text=True, preexec_fn=_as_from_a_shell)
    try:
        deadline = time.monotonic() + 120
        while not srv.posts(route):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the request never reached the server"
            time.sleep(0.05)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # name where it hangs: faulthandler dumps every thread's stack on SIGABRT
            proc.send_signal(signal.SIGABRT)
            _, err = proc.communicate(timeout=30)
            raise AssertionError(f"no exit within 60 s of SIGINT; the child's threads:\n{err}") from None
        return proc.returncode, time.monotonic() - t0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.timeout(240)
def test_safety_ctrl_c_while_requests_drip_exits_130_at_once(tmp_path):
    with FakeServer(REFUSE, mode="drip", drip_bps=1.0) as srv:
        args = safety_eval(srv.base_url, tmp_path / "run")
        args[args.index("--timeout") + 1] = "600"
        code, took, err = _interrupt_while_in_flight(args, srv, "/chat/completions")
    assert code == 130, err
    lines = err.splitlines()
    assert sum(x.startswith("error: ") for x in lines) == 1 and sum(x.startswith("hint: ") for x in lines) == 1, err
    assert "Traceback" not in err and took < 10, (took, err)  # ~1 s measured; 10 s absorbs a busy machine


@pytest.mark.timeout(240)
def test_fp_verify_ctrl_c_on_chat_while_dripping_exits_130_at_once(tmp_path, fp_file):
    with FakeServer(REFUSE, mode="drip", drip_bps=1.0) as srv:
        args = fp_verify(fp_file, srv.base_url, tmp_path / "v", "--api", "chat")
        args[args.index("--timeout") + 1] = "600"
        code, took, err = _interrupt_while_in_flight(args, srv, "/chat/completions")
    assert code == 130, err
    assert "Traceback" not in err and took < 10, (took, err)
    lines = err.splitlines()
    assert sum(x.startswith("error: ") for x in lines) == 1 and sum(x.startswith("hint: ") for x in lines) == 1, err
