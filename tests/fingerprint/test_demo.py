"""``trustlab fingerprint demo`` (tiny profile, the ``trustlab demo --quick`` path): the whole story in one folder."""

from __future__ import annotations

import json

from trustlab.fingerprint.cli import run_demo


def test_tiny_demo_tells_the_whole_story(tmp_path):
    """With a fixed owner secret the demo is deterministic. (A fresh random secret draws other fingerprints: the
    tiny demo's exact match then ranges over about 0.88-0.97, so a threshold on it would be a coin toss.)"""
    from trustlab.runtime.files import write_secret

    out = tmp_path / "demo"
    write_secret(out.with_name("demo.secret"), bytes(range(32)).hex().encode() + b"\n")
    run_dir = run_demo(out, quick=True)
    res = json.loads((run_dir / "results.json").read_text())
    m = res["metrics"]
    assert res["lab"] == "fingerprint" and res["verb"] == "demo"
    assert m["owned"] == "OWNED" and m["base"] == "not owned"  # verify F, verify B
    assert m["accuracy"] >= 0.9 and len(m["sft_exact"]) == 1  # embed, short benign SFT re-verified
    assert m["ppl_ratio"] > 0 and m["mc_ratio"] is not None  # utility of F against B
    assert res["caveat"] and "2509.26598" in res["caveat"]
    report = (run_dir / "report.md").read_text()
    assert "OWNED" in report and "not owned" in report and (run_dir / "report.html").is_file()
    assert (run_dir / "plots" / "training_curve.png").stat().st_size > 0
    secret = bytes.fromhex(out.with_name("demo.secret").read_text().strip())
    for p in (f for f in run_dir.rglob("*") if f.is_file()):
        blob = p.read_bytes()
        assert secret not in blob and secret.hex().encode() not in blob, p
    assert run_demo(out, quick=True) == run_dir  # a rerun reuses the finished steps
