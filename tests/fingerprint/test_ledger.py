"""The revealed-key ledger: 0600, beside the secret and never in a run folder, every torn or edited record a
clear error naming the line (never a silently shorter history)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from trustlab.fingerprint.ledger import Ledger, ledger_path_for
from trustlab.runtime.errors import ConfigError, DataError

SECRET = bytes(range(32))


def filled(tmp_path, n=3) -> Ledger:
    led = Ledger(ledger_path_for(tmp_path / "owner.secret"), SECRET)
    for b in range(n):
        led.append(set_digest="set-a", keys=[2 * b, 2 * b + 1], suspect={"endpoint": "http://x/v1",
                                                                          "served_model": "m"},
                   verb="verify", mode="sequential", run=f"run-{b}")
    return led


def test_records_are_kept_0600_and_counted_per_set(tmp_path):
    led = filled(tmp_path)
    led.append(set_digest="set-b", keys=[0], suspect={"name_or_path": "x"}, verb="verify", mode="fixed", run=None)
    assert led.path == tmp_path / "owner.secret.ledger.jsonl"
    assert stat.S_IMODE(os.stat(led.path).st_mode) == 0o600
    assert led.revealed("set-a") == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1, 5: 1} and led.revealed("set-b") == {0: 1}
    assert [r["seq"] for r in led.records()] == [0, 1, 2, 3]
    assert led.suspects_of("set-a", 3)[0]["suspect"]["served_model"] == "m"
    assert Ledger(tmp_path / "none.jsonl", SECRET).records() == []


def _lines(led):
    return led.path.read_text().splitlines(keepends=True)


@pytest.mark.parametrize("damage,fragment", [
    (lambda ls: ls[:-1] + [ls[-1][:-20]], "line 3 is torn"),
    (lambda ls: ls[:1] + ls[2:], "line 2 is out of sequence"),
    (lambda ls: [ls[0], ls[2], ls[1]], "line 2 is out of sequence"),
    (lambda ls: [ls[0].replace('"keys":[0,1]', '"keys":[0,7]')] + ls[1:], "line 1 fails its authentication"),
    (lambda ls: ls[:1] + ["{not json\n"] + ls[2:], "line 2 is not valid JSON"),
    (lambda ls: ls + ['{"seq": 3}\n'], "line 4 must hold the fields"),
])
def test_a_torn_or_edited_ledger_is_an_error_naming_the_line(tmp_path, damage, fragment):
    led = filled(tmp_path)
    led.path.write_text("".join(damage(_lines(led))))
    with pytest.raises(DataError, match=fragment) as exc:
        led.records()
    assert "restore it from a backup" in exc.value.hint
    with pytest.raises(DataError, match=fragment):  # nothing is appended to a damaged ledger
        led.append(set_digest="set-a", keys=[9], suspect={}, verb="verify", mode="fixed", run=None)


def test_another_secret_cannot_read_or_extend_the_ledger(tmp_path):
    led = filled(tmp_path, 1)
    with pytest.raises(DataError, match="authentication"):
        Ledger(led.path, bytes(range(1, 33))).revealed("set-a")


def test_loose_permissions_and_run_folders_are_refused(tmp_path):
    led = filled(tmp_path, 1)
    os.chmod(led.path, 0o644)
    with pytest.raises(ConfigError, match="mode 0644") as exc:
        led.records()
    assert exc.value.hint == f"chmod 600 {led.path}"
    run = tmp_path / "runs" / "fingerprint-verify-x"
    run.mkdir(parents=True)
    from trustlab.runtime.rundir import MARKER

    (run / MARKER).write_text(json.dumps({"lab": "fingerprint", "verb": "verify"}))
    with pytest.raises(ConfigError, match="inside the run folder"):
        Ledger(run / "sub" / "s.ledger.jsonl", SECRET)
    later = Ledger(tmp_path / "runs" / "fingerprint-verify-y" / "s.ledger.jsonl", SECRET)  # no run there yet
    (later.path.parent).mkdir()
    (later.path.parent / MARKER).write_text("{}")  # ... until a run claims the folder
    with pytest.raises(ConfigError, match="inside the run folder"):
        later.append(set_digest="s", keys=[0], suspect={}, verb="verify", mode="fixed", run=None)
    assert not later.path.exists()


@pytest.fixture(scope="module")
def served_set(tiny_lm):
    """32 hand-built keys (p0 = 1/3) and the text answers of a suspect that holds every fingerprint."""
    from .helpers import make_set

    fps = make_set(tiny_lm[1], [(f"ledger key number {i} is here", f" r{i}") for i in range(32)])
    return fps, {fp.key_text: fp.response_text for fp in fps.fingerprints}


def test_the_ledger_steers_each_verification_to_unrevealed_keys(served_set, tmp_path):
    from trustlab.fingerprint.backends import OpenAIBackend
    from trustlab.fingerprint.config import VerifyConfig
    from trustlab.fingerprint.sequential import fixed_keys, key_order, verify_sequential
    from trustlab.models.llm.fake_server import FakeServer

    fps, table = served_set
    led = filled(tmp_path, 0)
    with FakeServer(models=("suspect",), check_model=True, answer=lambda p: table[p]) as srv:
        cfg = VerifyConfig(endpoint=srv.url, served_model="suspect")
        runs = [verify_sequential(fps, OpenAIBackend(srv.url, "suspect"), cfg, SECRET, ledger=led,
                                  suspect={"endpoint": srv.url}, run=f"r{j}") for j in range(4)]
        sent = [p for body in srv.posts() for p in ([body["prompt"]] if isinstance(body["prompt"], str)
                                                    else body["prompt"])]
    revealed = [set(r.outcome.revealed) for r in runs]
    assert all(r.owned and len(r.outcome.revealed) == 7 for r in runs)
    assert all(not (revealed[a] & revealed[b]) for a in range(4) for b in range(a))  # fresh keys every time
    assert [r.unrevealed for r in runs] == [25, 18, 11, 4]
    assert runs[0].outcome.revealed == tuple(key_order(SECRET, fps.set_digest, fps.ids)[:7])
    assert runs[2].ledger_warning is None and "only 4 key(s) remain unrevealed" in runs[3].ledger_warning
    # the ledger holds exactly what the server was sent, batch by batch, before it was sent
    by_text = {fp.key_text: fp.id for fp in fps.fingerprints}
    assert sorted(by_text[p] for p in sent) == sorted(k for rec in led.records() for k in rec["keys"])
    assert [rec["run"] for rec in led.records()] == ["r0", "r1", "r2", "r3"]
    # a fixed-M run with the ledger takes the 4 unrevealed keys first, then the least revealed
    keys = fixed_keys(fps, SECRET, led, 6)
    assert set(keys[:4]) == set(fps.ids) - set().union(*revealed) and len(keys) == 6


def test_cli_sequential_then_fixed_take_fresh_keys_and_a_torn_ledger_stops_before_any_query(cli, served_set,
                                                                                            tmp_path):
    from trustlab.models.llm.fake_server import FakeServer
    from trustlab.runtime.files import write_secret

    fps, table = served_set
    fps.save(tmp_path / "fp.json")
    write_secret(tmp_path / "owner.secret", SECRET.hex().encode() + b"\n")
    with FakeServer(models=("suspect",), check_model=True, answer=lambda p: table[p]) as srv:
        args = ("fingerprint", "verify", "--fingerprints", str(tmp_path / "fp.json"), "--endpoint", srv.url,
                "--served-model", "suspect", "--secret", str(tmp_path / "owner.secret"))
        code, out, err = cli(*args, "--mode", "sequential", "--out", str(tmp_path / "s1"))
        assert code == 0, err
        assert out.startswith("OWNED (sequential) 7/7 matched, 7 of 32 keys revealed")
        assert "; 25 key(s) of the set never revealed" in out
        code, out, err = cli(*args, "--num-queries", "10", "--out", str(tmp_path / "f2"))
        assert code == 0, err
        assert out.startswith("OWNED 10/10 matched") and "; 15 key(s) of the set never revealed" in out
        code, out, err = cli(*args, "--mode", "sequential", "--out", str(tmp_path / "s3"))
        assert code == 0 and "; 8 key(s) of the set never revealed" in out, err
        code, out, err = cli(*args, "--mode", "sequential", "--out", str(tmp_path / "s4"))
        assert code == 0 and "warning: only 1 key(s) remain unrevealed" in out, err
    r1, r2, r3 = (json.loads((tmp_path / d / "verify_result.json").read_text()) for d in ("s1", "f2", "s3"))
    assert r1["mode"] == "sequential" and len(r1["revealed"]) == 7 and r2["mode"] == "fixed"
    assert not set(r1["revealed"]) & set(r2["subset_ids"]) and not set(r3["revealed"]) & set(r2["subset_ids"])
    assert not set(r1["revealed"]) & set(r3["revealed"])
    results = json.loads((tmp_path / "s1" / "results.json").read_text())
    assert results["mode"] == "sequential" and results["metrics"]["keys_revealed"] == 7
    ledger = tmp_path / "owner.secret.ledger.jsonl"
    assert stat.S_IMODE(os.stat(ledger).st_mode) == 0o600 and not list((tmp_path / "s1").glob("*ledger*"))

    ledger.write_bytes(ledger.read_bytes()[:-3])  # a torn write
    with FakeServer(models=("suspect",), check_model=True, answer=lambda p: table[p]) as srv:
        code, out, err = cli("fingerprint", "verify", "--fingerprints", str(tmp_path / "fp.json"), "--endpoint",
                             srv.url, "--served-model", "suspect", "--secret", str(tmp_path / "owner.secret"),
                             "--mode", "sequential", "--out", str(tmp_path / "s5"))
        assert srv.posts() == []
    assert code == 2 and "error: ledger" in err and "is torn" in err and "Traceback" not in err
    code, out, err = cli("fingerprint", "verify", "--fingerprints", str(tmp_path / "fp.json"), "--endpoint",
                         "http://127.0.0.1:9/v1", "--served-model", "x", "--mode", "sequential")
    assert code == 2 and "needs the owner's secret" in err and "hint: pass --secret" in err


def test_a_server_that_dies_mid_run_stops_the_sequential_test_naming_why(served_set, tmp_path):
    from trustlab.fingerprint.backends import OpenAIBackend
    from trustlab.fingerprint.config import VerifyConfig
    from trustlab.fingerprint.sequential import verify_sequential
    from trustlab.models.llm.fake_server import FakeServer
    from trustlab.runtime.errors import BackendError

    fps, table = served_set
    with FakeServer(models=("suspect",), check_model=True, answer=lambda p: " nope", fail_after=1,
                    fail_status=500) as srv:  # the first batch misses (7 keys, one request); then HTTP 500
        res = verify_sequential(fps, OpenAIBackend(srv.url, "suspect", max_retries=0),
                                VerifyConfig(endpoint=srv.url, served_model="suspect"), SECRET)
    assert res.outcome.decision == "not owned" and "answered none of the 20 keys of the last batch" in \
        res.outcome.reason and len(res.outcome.unanswered) == 20 and res.outcome.answered == 7
    with FakeServer(models=("suspect",), check_model=True, answer=lambda p: " nope", fail_after=0,
                    fail_status=500) as srv:  # nothing ever answered: exit 4 with the endpoint's own message
        with pytest.raises(BackendError, match="answered none"):
            verify_sequential(fps, OpenAIBackend(srv.url, "suspect", max_retries=0),
                              VerifyConfig(endpoint=srv.url, served_model="suspect"), SECRET)
