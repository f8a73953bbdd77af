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
