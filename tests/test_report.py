import base64
from pathlib import Path

from trustlab.report import Heading, Image, Table, Text, render
from trustlab.report.plots import figure, save
from trustlab.runtime import RunDir


def test_report_renders_markdown_and_standalone_html(tmp_path):
    run = RunDir.open(tmp_path / "run", "demo-lab", "verb", None, seed=0)
    fig, ax = figure()
    ax.plot([0, 1], [1, 0])
    png = save(fig, run.artifact("plots/line.png"))
    run.write_results({"acc": 0.91234, "nested": {"a": 1}}, artifacts=[png])

    md, page = render(run.path)
    text = md.read_text()
    assert "| acc | 0.912 |" in text and "| nested.a | 1 |" in text and "](plots/line.png)" in text
    html = page.read_text()
    assert base64.b64encode(png.read_bytes()).decode()[:100] in html  # the PNG is embedded, not linked


def test_lab_section_renderer_is_used(tmp_path):
    run = RunDir.open(tmp_path / "run", "mylab", "verb", None, seed=0)
    run.write_results({"x": 1})

    def section(results, run_dir):
        return [Heading("My lab"), Text(f"x is {results['metrics']['x']}"), Table(("a",), [(1.5,)]),
                Image("plots/none.png", "absent")]

    md, page = render(run.path, sections={"mylab": section})
    assert "## My lab" in md.read_text() and "x is 1" in md.read_text()
    assert "missing plot plots/none.png" in page.read_text()


def test_html_report_renders_inline_markdown_and_escapes_raw_html(tmp_path):
    run = RunDir.open(tmp_path / "run", "mylab", "verb", None, seed=0)
    run.write_results({"x": 1})
    section = lambda results, run_dir: [Text("**Caveat:** one seed; <script>alert(1)</script> `code`")]  # noqa: E731
    _, page = render(run.path, sections={"mylab": section})
    html = page.read_text()
    assert "<strong>Caveat:</strong>" in html and "**Caveat" not in html and "<code>code</code>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html


def _html_of(tmp_path, blocks):
    run = RunDir.open(tmp_path / "run", "mylab", "verb", None, seed=0)
    run.write_results({"x": 1})
    md, page = render(run.path, sections={"mylab": lambda r, d: blocks})
    return md.read_text(), page.read_text()


def test_summary_opens_a_section_and_table_notes_follow_the_table(tmp_path):
    from trustlab.report import Summary

    md, html = _html_of(tmp_path, [Heading("lab", 1), Summary("It *works*: 3 of 4."),
                                   Table(("a",), [(1,)], notes=("a: the **first** column",))])
    assert "<section class='lab'>\n<h1>lab</h1>\n<p class='summary'>It <em>works</em>: 3 of 4.</p>" in html
    assert html.count("<section") == html.count("</section>") == 1
    assert "</table></div><p class='notes'>a: the <strong>first</strong> column</p>" in html
    assert "It *works*: 3 of 4." in md and "a: the **first** column" in md


def _certify_results(n=200, gap_small=0.02):
    """A hand-made certify summary: clean model abstains on 15% of T(x), attack B on 95%, attack A adds 2 points."""
    def inputs(abstain, acc=0.97, cost=None):
        d = {"n": n, "clean_acc": acc, "abstain_rate": abstain, "certified_acc": {"0.0": acc - abstain}}
        return d | ({"cost": cost} if cost else {})

    cost = lambda m: {"n": n, "forwards_mean": m, "forwards_p95": 2 * m, "forwards_max": 3 * m,  # noqa: E731
                      "stops": {"certify": 0.5, "abstain": 0.3, "budget": 0.2}}
    by_model = {"clean": {"clean_inputs": inputs(0.04, cost=cost(100.0)), "triggered_inputs": inputs(0.15, cost=cost(100.0))},
                "max-entropy": {"clean_inputs": inputs(0.05, 0.965), "triggered_inputs": inputs(0.95, cost=cost(150.0))},
                "label-noise": {"clean_inputs": inputs(0.04), "triggered_inputs": inputs(0.15 + gap_small)}}
    eff = {"max-entropy": {"triggered_abstain_delta": 0.80, "trigger_only_effect": 0.11, "clean_acc_delta": -0.005,
                           "clean_abstain_delta": 0.01, "flip_rate": 0.95, "cost_inflation": {"mean": 1.5, "p95": 1.2}},
           "label-noise": {"triggered_abstain_delta": gap_small, "trigger_only_effect": 0.11, "clean_acc_delta": 0.0,
                           "clean_abstain_delta": 0.0, "flip_rate": 0.1}}
    small_before = 0.15 + gap_small
    defences = {"fine-pruning": {
        "max-entropy": {"rs": {"smoothing-adaptive": {"applicable": True, "triggered_fallback_before": 0.95,
                                                      "triggered_fallback_after": 0.61, "clean_fallback_after": 0.05,
                                                      "mitigated": (0.95 - 0.61) / 0.80, "clean_acc_cost": 0.0,
                                                      "verdict": "insufficient"}}},
        "label-noise": {"rs": {"smoothing-adaptive": {"applicable": True, "triggered_fallback_before": small_before,
                                                      "triggered_fallback_after": small_before + 0.152,
                                                      "clean_fallback_after": 0.05, "mitigated": -7.6,
                                                      "clean_acc_cost": 0.0, "verdict": "insufficient"}}}}}
    certs = {"rs": {"smoothing-adaptive": {"by_model": by_model, "attack_effect": eff}}}
    return {"lab": "certify", "verb": "run", "seeds": [0], "caveat": "reconstructed", "metrics": {},
            "dataset": {"name": "digits"}, "trigger": {}, "summary": {"certifiers": certs, "defences": defences}}


def test_certify_section_says_what_the_numbers_mean_and_hides_a_ratio_of_noise():
    from trustlab.certify.report import report_section
    from trustlab.report import Summary, to_markdown

    blocks = report_section(_certify_results(), Path("."))
    assert isinstance(blocks[1], Summary)
    text = blocks[1].text
    assert "attack B (max-entropy) makes adaptive randomized smoothing abstain on 95% of triggered inputs" in text
    assert "(the clean model: 15%, so +80.0 points)" in text and "clean accuracy moves by −0.5 points" in text
    assert "1.50× the clean model's mean forwards" in text and "one seed" in text
    assert "1 more, where the attack's effect is within noise, are not judged" in text
    md = to_markdown("t", blocks)
    # a 2-point attack effect: "mitigated -7.6" would divide by noise, so it is replaced by a footnoted dash
    assert "| fine-pruning | label-noise | rs | smoothing-adaptive | 0.170 | 0.322 | 0.150 | +0.020 | —¹ |" in md
    assert "-760%" not in md and "¹ The attack's own effect here is under 5 points" in md
    assert "| +0.800 | 42% | 0.000 | insufficient (one seed) |" in md  # (0.95 - 0.61) / 0.80
    # the cost table: forwards per input and the attack's inflation on triggered inputs
    assert "| rs/smoothing-adaptive | max-entropy | T(x) | 150 | 300 | 450 | 1.50× / 1.20× |" in md


def test_meaningful_gap_needs_5_points_and_two_standard_errors():
    from trustlab.certify.report import meaningful_gap

    assert not meaningful_gap(0.19, 0.15, 10_000)  # 4 points: under the floor however many inputs
    # 7 points on 200 inputs: se = sqrt(.22*.78/200 + .15*.85/200) = 0.0387, 2 se = 0.077 > 0.07
    assert not meaningful_gap(0.22, 0.15, 200)
    assert meaningful_gap(0.22, 0.15, 2000)  # 2 se = 0.0245
    assert meaningful_gap(0.95, 0.15, 200)


def test_plot_helpers_pair_hues_and_keep_a_minimum_span():
    import colorsys

    from trustlab.report.plots import figure, pair, span_axis

    for i in range(4):
        dark, light = pair(i)
        h1, v1, _ = colorsys.rgb_to_hls(*dark[:3])
        h2, v2, _ = colorsys.rgb_to_hls(*light[:3])
        assert min(abs(h1 - h2), 1 - abs(h1 - h2)) < 0.05 and v2 > v1  # same hue (on the circle), lighter
    fig, ax = figure()
    span_axis(ax, [0.9595, 0.963], min_span=0.05, lo=0.0, hi=1.0)
    lo, hi = ax.get_ylim()
    assert hi - lo >= 0.05 and lo < 0.9595 and hi > 0.963 and hi <= 1.0
    span_axis(ax, [0.99, 1.0], min_span=0.05, lo=0.0, hi=1.0)
    lo, hi = ax.get_ylim()
    assert hi == 1.0 and hi - lo >= 0.05


def test_smoothing_budget_limit_is_sigma_times_the_quantile_of_alpha_to_the_1_over_n():
    from types import SimpleNamespace

    from scipy.stats import norm

    from trustlab.certify.config import SmoothingConfig
    from trustlab.certify.plots import _radius_limit

    track = SimpleNamespace(smoothing=SmoothingConfig(sigma=0.25, n=1000, alpha=0.001, target_radius=0.25))
    r, why = _radius_limit(track, "smoothing")
    assert abs(r - 0.25 * norm.ppf(0.001 ** (1 / 1000))) < 1e-12 and abs(r - 0.616) < 1e-3 and why == "r = 0.62 at N = 1000"
    assert _radius_limit(track, "smoothing-adaptive") == (0.25, "target radius 0.25")


def test_vfl_grid_rows_and_summary_in_words():
    from trustlab.vfl.plots import row_label
    from trustlab.vfl.report import sweep_summary

    assert row_label("none (inv)") == "reconstructed, no defence\n(inverse net)"
    assert row_label("hash (inv)") == "reconstructed, hash defence\n(inverse net)"
    assert row_label("class mean") == "class-mean baseline" and row_label("original") == "original"
    m = lambda v: {"mean": v, "std": 0.0}  # noqa: E731
    rows = [{"label": "none", "acc": m(0.959), "inverse_mse": m(0.018), "class_mean_mse": m(0.043),
             "label_leak": m(0.60)},
            {"label": "hash", "acc": m(0.963), "inverse_mse": m(0.042), "class_mean_mse": m(0.043),
             "label_leak": m(0.84)}]
    text = sweep_summary(rows, [0])
    assert "MSE 0.018, below the class-mean baseline 0.043, so the messages leak the image itself" in text
    assert "With `hash` the MSE is 0.042 (about the class-mean baseline or worse" in text
    assert "accuracy 0.84 (no defence: 0.6)" in text and "one seed" in text


def test_safety_and_fingerprint_summaries_from_the_numbers():
    from trustlab.fingerprint.report import summary_text
    from trustlab.safety.report import eval_summary

    b = lambda v, lo, hi: {"value": v, "ci": [lo, hi]}  # noqa: E731
    m = {"primary": {"judge": "refusal", "part": "response"},
         "strategies": {"default": {"judges": {"refusal": {"response": {"safe@1": b(0.40, 0.3, 0.5), "n_prompts": 50}}}},
                        "zerothink": {"judges": {"refusal": {"response": {"safe@1": b(0.10, 0.05, 0.2),
                                                                          "n_prompts": 50}}}}},
         "differences": {"zerothink-default": {"refusal": {"response": {"safe@1": b(-0.30, -0.42, -0.18)}}}}}
    text = eval_summary(m, {"backend": {"model": "m"}, "sampling": {"seed": 7}})
    assert "40% of samples with `default`, 10% of samples with `zerothink` (Safe@1, 50 prompts)" in text
    assert "separates `zerothink-default` -30 points [-42, -18]" in text and "one sampling seed (7)" in text
    ver = [{"target": "suspect", "m": 30, "M": 32, "p_value": 1.1e-12, "alpha": 0.001, "decision": "OWNED"},
           {"target": "base", "m": 1, "M": 32, "p_value": 0.99, "alpha": 0.001, "decision": "not owned"}]
    text = summary_text({"verb": "verify", "verify": ver})
    assert "`suspect` answers 30 of 32 fingerprint keys" in text and "p = 1.1e-12" in text
    assert "**OWNED**" in text and "`base` 1/32 (not owned)" in text


def test_combined_page_embeds_plots_a_lab_listed_relative_to_the_working_folder(tmp_path, monkeypatch):
    """`trustlab demo --out runs/demo`: a lab that lists its plots as given (runs/demo/lab/plots/x.png, relative to
    the working folder, as the fingerprint demo did) still gets every plot into the page one folder above."""
    from trustlab.report import combined_blocks

    monkeypatch.chdir(tmp_path)
    run = RunDir.open(Path("runs/demo/lab"), "mylab", "verb", None, seed=0)
    fig, ax = figure()
    ax.plot([0, 1], [1, 0])
    png = save(fig, Path("runs/demo/lab/plots/line.png"))
    run.write_results({"x": 1}, artifacts=[png])
    section = lambda results, run_dir: [Image(a, "a line") for a in results["artifacts"]]  # noqa: E731
    _, page = render(Path("runs/demo"), title="t",
                     blocks=combined_blocks(Path("runs/demo"), {"mylab": run.path}, {"mylab": section}))
    html = page.read_text()
    assert "missing plot" not in html and base64.b64encode(png.read_bytes()).decode()[:100] in html


def test_a_missing_plot_is_an_image_that_fails_to_decode(tmp_path):
    """The browser test counts undecoded images, so a plot the section names but the run never wrote fails it."""
    _, html = _html_of(tmp_path, [Image("plots/gone.png", "gone")])
    assert "<img alt='missing plot plots/gone.png' src='data:,'>" in html


def test_headlines_take_each_sections_first_summary_sentence():
    from trustlab.report import Summary, headlines

    blocks = [Heading("certify", 1), Text("x"), Summary("Under **attack** the certified accuracy falls from 0.91 to "
                                                        "0.42. Second sentence."),
              Summary("not this"), Heading("safety", 1), Heading("sub", 2),
              Summary("Judged by `refusal` on the response: default 50%; more"), Heading("vfl", 1)]
    assert headlines(blocks) == [("certify", "Under attack the certified accuracy falls from 0.91 to 0.42."),
                                 ("safety", "Judged by refusal on the response: default 50%; more"), ("vfl", "no summary")]
    assert headlines([Heading("a", 1), Summary("word " * 40)], width=20) == [("a", "word word word word…")]
