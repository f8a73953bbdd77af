"""``trustlab fingerprint demo`` (tiny profile, the ``trustlab demo --quick`` path): the whole story in one folder."""

from __future__ import annotations

import json

from trustlab.cli.main import main
from trustlab.fingerprint.cli import run_demo


def _cli(capsys, *args) -> tuple[int, str]:
    """(exit code, stderr) of ``trustlab fingerprint demo ARGS`` through the real entry point."""
    code = 0
    try:
        main(["fingerprint", "demo", *map(str, args)])
    except SystemExit as exc:
        code = exc.code or 0
    return code, capsys.readouterr().err


def test_tiny_demo_tells_the_whole_story(tmp_path, capsys, monkeypatch):
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
    # --resume (the default): the same command continues this run and reuses its finished steps
    weights = next((run_dir / "embed" / "model").glob("*.safetensors"))
    marker, stamp = (run_dir / ".trustlab-run.json").read_text(), weights.stat().st_mtime_ns
    code, err = _cli(capsys, "--profile", "tiny", "--out", out)
    assert code == 0, err
    assert (run_dir / ".trustlab-run.json").read_text() == marker and weights.stat().st_mtime_ns == stamp
    # --no-resume removes what the demo wrote (its nested runs included) and nothing else; the secret stays
    (out / "mine.txt").write_text("a user's note")
    (out / "embed" / "notes.txt").write_text("another")
    import trustlab.models

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(trustlab.models, "load_causal_lm", ctrl_c)  # stop right after the folder is made fresh
    code, err = _cli(capsys, "--profile", "tiny", "--out", out, "--no-resume")
    assert code == 130 and "Traceback" not in err
    hint = next(ln for ln in err.splitlines() if ln.startswith("hint: resume with: "))
    assert "--no-resume" not in hint and f"--out {out}" in hint
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert left == [".trustlab-manifest.json", ".trustlab-run.json", "config.yaml", "config_hash", "embed/notes.txt",
                    "events.jsonl", "mine.txt"], left  # the new run's marker, config and interruption event
    assert (run_dir / ".trustlab-run.json").read_text() != marker  # a new run claimed the folder
    assert bytes.fromhex(out.with_name("demo.secret").read_text().strip()) == secret
