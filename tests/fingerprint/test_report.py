"""The report section of a verify run (through an endpoint, with unanswered keys) renders the verdict and caveat."""

import json

from trustlab.fingerprint.cli_verify import run_verify
from trustlab.fingerprint.config import VerifyConfig
from trustlab.fingerprint.report import report_section
from trustlab.models.llm.fake_server import FakeServer
from trustlab.report import to_markdown

from .helpers import SECRET, make_set


def test_verify_report_names_verdict_partial_keys_and_caveat(tiny_lm, tmp_path):
    fps = make_set(tiny_lm[1], [(f"report key number {i} here", f" w{i}") for i in range(12)])
    fps.save(tmp_path / "fp.json")
    table = {fp.key_text: fp.response_text for fp in fps.fingerprints}
    with FakeServer(models=("suspect",), check_model=True, answer=lambda p: table[p], fail_after=2,
                    fail_status=500) as srv:
        cfg = VerifyConfig(fingerprints=str(tmp_path / "fp.json"), endpoint=srv.url, served_model="suspect",
                           batch_size=4)
        run = run_verify(cfg, tmp_path / "run", max_retries=0)
    results = json.loads((run / "results.json").read_text())
    md = to_markdown("t", report_section(results, run))
    assert "| 8/8 |" in md and "OWNED" in md
    assert "4 of 12 keys unanswered (ids 8, 9, 10, 11)" in md and "2509.26598" in md
    for f in run.rglob("*"):  # the secret never reaches the run folder
        if f.is_file():
            assert SECRET.hex() not in f.read_text(errors="ignore")


def test_sequential_and_inconclusive_rows_say_what_they_rest_on(tiny_lm, tmp_path, cli, monkeypatch):
    """A sequential verdict rests on the anytime-valid 1/max E (and the plan line states its budget, not a key
    count); a fixed verdict on too few keys is INCONCLUSIVE with its reason; neither is called a binomial test."""
    from trustlab.runtime.files import write_secret

    monkeypatch.delenv("TRUSTLAB_QUIET", raising=False)  # the plan line is stated unless the user asked for quiet
    monkeypatch.delenv("CI", raising=False)
    fps = make_set(tiny_lm[1], [(f"sequential report key {i} here", f" s{i}") for i in range(12)])
    fps.save(tmp_path / "fp.json")
    write_secret(tmp_path / "owner.secret", SECRET.hex().encode() + b"\n")
    table = {fp.key_text: fp.response_text for fp in fps.fingerprints}
    with FakeServer(models=("suspect",), check_model=True, answer=lambda p: table[p]) as srv:
        args = ("fingerprint", "verify", "--fingerprints", str(tmp_path / "fp.json"), "--endpoint", srv.url,
                "--served-model", "suspect")
        code, out, err = cli(*args, "--mode", "sequential", "--secret", str(tmp_path / "owner.secret"),
                             "--out", str(tmp_path / "seq"))
        assert code == 0, err
        assert "for at most 12 key(s) (the sequential budget; it stops as soon as the evidence decides)" in err
        code, out, err = cli(*args, "--num-queries", "3", "--out", str(tmp_path / "few"))
        assert code == 0, err
        assert "for 3 key(s):" in err  # fixed mode sends every key it names
    seq, few = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("seq", "few"))
    md = to_markdown("t", report_section(seq, tmp_path / "seq"))
    assert "binomial" not in md.split("**Caveat:**")[0]
    assert "sequential: OWNED as soon as the test martingale E reaches 1/α" in md and "fixed:" not in md
    assert "anytime-valid p = 1/max E" in md and "7 of 12 keys revealed" in md and "| OWNED |" in md
    md = to_markdown("t", report_section(few, tmp_path / "few"))
    assert "| 3/3 |" in md and "| INCONCLUSIVE |" in md and "sequential:" not in md
    assert "fixed: OWNED iff the exact Poisson-binomial tail over the answered keys' per-key nulls" in md
    assert "INCONCLUSIVE: even 3/3 hits could not reach α under these nulls (binomial, p0=1/3)" in md
    assert "**INCONCLUSIVE** (even 3/3 hits could not reach α" in md  # the summary gives the reason too
