"""The report section and plots: the metric table holds exactly the run's figures, the 2x2, length, agreement and
caveats appear, every plot is written; build and sft runs get their own sections."""

from __future__ import annotations

import json

from trustlab.report import Image, Link, Table, render
from trustlab.safety.backends.scripted import ScriptedBackend
from trustlab.safety.config import BackendConfig, EvalConfig, JudgeSpec, Sampling, Thinking
from trustlab.safety.pipeline import run_eval
from trustlab.safety.report import report_section

SCRIPT = {"rules": [{"match": "weather", "reply": "I cannot help with that."},
                    {"match": "yellow", "reply": ["I'm sorry.", "Sure: bananas."]}],
          "default": "Okay, sure. </think>\n\nHere you go."}


def _run(tmp_path):
    cfg = EvalConfig(backend=BackendConfig(kind="scripted", model="fake"), dataset="fixture",
                     strategies=("default", "zerothink", "morethink"),
                     thinking=Thinking(think_budget=8, max_extensions=2), sampling=Sampling(k=2, max_tokens=16),
                     judges=(JudgeSpec("refusal"), JudgeSpec("refusal", None, {"preset": "safechain",
                                                                               "label": "refusal_safechain"})),
                     bootstrap=100)
    return run_eval(cfg, tmp_path / "run", backend=ScriptedBackend(SCRIPT))


def test_eval_section_matches_results_and_plots_exist(tmp_path):
    r = _run(tmp_path)
    results = json.loads(r.results_path.read_text())
    m = results["metrics"]
    blocks = report_section(results, r.run_dir)
    tables = [b for b in blocks if isinstance(b, Table)]
    head = tables[0]
    assert head.caption.startswith("Headline") and len(head.rows) == 3 * 2  # strategies x judges, on the response
    row = next(x for x in head.rows if x[:2] == ("zerothink", "refusal"))
    b = m["strategies"]["zerothink"]["judges"]["refusal"]["response"]
    assert row[2] == f"{b['safe@1']['value']:.3f} [{b['safe@1']['ci'][0]:.3f}, {b['safe@1']['ci'][1]:.3f}]"
    th = m["strategies"]["zerothink"]
    assert row[5] == "—" and row[7] == f"{100 * th['thinking']['frac_truncated']:.1f}%"  # no benign set in this run
    assert row[6] == f"{100 * b['n_empty'] / b['n_labels']:.1f}%"
    assert row[8] == f"{th['tokens']['completion'] / th['thinking']['n']:.3g}" and row[9] == 12
    main = next(t for t in tables if t.caption.startswith("Every judged part"))
    assert len(main.rows) == 3 * 2 * 3  # strategies x judges x parts
    row = next(x for x in main.rows if x[:3] == ("zerothink", "refusal", "answer"))
    b = m["strategies"]["zerothink"]["judges"]["refusal"]["answer"]
    assert row[3] == f"{b['safe@1']['value']:.3f} [{b['safe@1']['ci'][0]:.3f}, {b['safe@1']['ci'][1]:.3f}]"
    assert row[6] == b["n_prompts"] == 12
    assert "whose K samples are **all** safe" in main.notes[0] and "at least one" not in main.notes[0]
    captions = " | ".join(t.caption for t in tables)
    for part in ("Paired-bootstrap differences", "per category", "Thought x answer", "length by label",
                 "Judge agreement"):
        assert part in captions
    images = {b.path for b in blocks if isinstance(b, Image)}
    for name in ("metrics_by_strategy", "per_category", "length_hist", "thought_answer", "morethink"):
        assert f"plots/{name}.png" in images and (r.run_dir / "plots" / f"{name}.png").stat().st_size > 1000
    md, _ = render(r.run_dir, sections={"safety": report_section})
    text = md.read_text()
    assert "measures refusal, not harm" in text and "ConsSafe@K" in text
    link = next(b for b in blocks if isinstance(b, Link))  # the per-sample viewer, every sample of every strategy
    page = (r.run_dir / link.path).read_text()
    assert page.count("<div class='s'") == len(m["strategies"]) * 12 * 2
    assert "value='refusal_safechain:thought=safe'" in page and "](viewer.html)" in text


def test_build_and_sft_sections(tmp_path):
    build = {"lab": "safety", "verb": "build", "metrics": {"n_pool": 10, "n_sampled": 8, "k": 5, "n_kept": 3,
                                                           "keep_rate": 0.5, "safe_rate": 0.7, "n_dropped_unsafe": 2,
                                                           "n_dropped_incomplete": 2, "n_dropped_unclosed": 1,
                                                           "completion_tokens": 900, "judge": "refusal",
                                                           "part": "response", "output": "x.jsonl"}}
    t = [b for b in report_section(build, tmp_path) if isinstance(b, Table)][0]
    assert t.rows[0][:5] == (10, 8, 5, 3, "0.5")
    sft = {"lab": "safety", "verb": "sft", "config": {"model": "tiny-llama"},
           "metrics": {"lora": True, "n_examples": 4, "n_dropped_too_long": 0, "steps": 20, "loss_before": 5.5,
                       "loss_after": 3.0, "wall_s": 2.0}}
    t = [b for b in report_section(sft, tmp_path) if isinstance(b, Table)][0]
    assert t.rows[0][:5] == ("tiny-llama", "LoRA", 4, 0, 20)


def test_baselines_table(tmp_path):
    r = _run(tmp_path)
    results = json.loads(r.results_path.read_text())
    results["baselines"] = {"always_refuse": {"default": {"refusal": {"response": 1.0, "thought": 1.0, "answer": 1.0}}},
                            "always_comply": {"default": {"refusal": {"response": 0.0, "thought": 1.0, "answer": 0.0}}}}
    t = next(b for b in report_section(results, r.run_dir) if isinstance(b, Table) and "baseline" in b.headers)
    assert t.rows == [("always_refuse", "default", "refusal", "1", "1", "1"),
                      ("always_comply", "default", "refusal", "0", "1", "0")]
