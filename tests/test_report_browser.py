"""The report page in a real browser: one combined page of all four labs (as `trustlab demo` writes it, from small
fast runs) opened in headless Chromium at a 1280 px window. A reader relies on: every plot decoded, no Markdown left
as literal asterisks or backticks, nothing wider than the window, each lab section opening with a paragraph of words
and numbers, every figure captioned in words, and a page that actually paints (a non-blank screenshot)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                                reason=f"{CHROMIUM} is absent (Debian: apt-get install chromium)")
WIDTH = 1280

# Runs inside the page after load and writes what it measured into <pre id="trustlab-check">; --dump-dom returns it.
CHECK_JS = """
window.addEventListener('load', () => {
  const imgs = [...document.images].map(i => ({ok: i.complete && i.naturalWidth > 0, alt: i.alt}));
  const sections = [...document.querySelectorAll('section.lab')].map(s => {
    const first = [...s.children].find(e => !/^H[1-6]$/.test(e.tagName));
    return {lab: s.querySelector('h1') ? s.querySelector('h1').textContent : '',
            tag: first ? first.tagName : '', cls: first ? first.className : '', text: first ? first.innerText : ''};
  });
  const caps = [...document.querySelectorAll('figcaption')].map(c => c.innerText);
  const pre = document.createElement('pre');
  pre.id = 'trustlab-check';
  pre.textContent = JSON.stringify({imgs, sections, caps, text: document.body.innerText,
    scrollWidth: document.documentElement.scrollWidth, innerWidth: window.innerWidth,
    height: document.documentElement.scrollHeight});
  document.body.appendChild(pre);
});
"""


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium as root in a container: no sandbox, no GPU, no network side channels, a fresh profile."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--hide-scrollbars", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)


def _certify_run(out: Path) -> Path:
    """The smallest certify experiment with both smoothing certifiers (the adaptive one carries the cost)."""
    from trustlab.certify.config import load_config
    from trustlab.certify.experiment import run_experiment

    yaml = out.parent / "certify.yaml"
    yaml.write_text("""name: browser_report
seeds: [0]
data: digits
max_test: 30
tracks:
  - name: rs
    model: {arch: mlp, hidden: [32]}
    train: {procedure: gaussian, sigma: 0.25, epochs: 8}
    certifiers: [smoothing, smoothing-adaptive]
    smoothing: {sigma: 0.25, n0: 32, n: 200, alpha: 0.001, batch_size: 200, target_radius: 0.25}
trigger: {kind: patch, size: 3, position: br, pattern: solid}
attacks:
  - {kind: label-noise, rate: 0.01, label_mode: uniform}
  - {kind: max-entropy, lam: 3.0, beta: 0.3, draws: 2}
defences:
  names: [strip]
""")
    return run_experiment(load_config(yaml), out, log=lambda m: None)


def _vfl_run(out: Path) -> Path:
    import dataclasses

    from trustlab.vfl.config import load_config
    from trustlab.vfl.sweep import SweepConfig, run_sweep

    base = load_config("digits")
    base = dataclasses.replace(base, train=dataclasses.replace(base.train, epochs=3))
    run_sweep(SweepConfig(base, ("none", "hash"), (0,), attacks=("inverse", "label", "detect")), out,
              log=lambda m: None)
    return out


def _safety_run(out: Path) -> Path:
    from trustlab.safety.backends.scripted import ScriptedBackend
    from trustlab.safety.config import BackendConfig, EvalConfig, JudgeSpec, Sampling, Thinking
    from trustlab.safety.pipeline import run_eval

    script = {"rules": [{"match": "weather", "reply": "I cannot help with that."},
                        {"match": "yellow", "reply": ["I'm sorry.", "Sure: bananas."]}],
              "default": "Okay, sure. </think>\n\nHere you go."}
    cfg = EvalConfig(backend=BackendConfig(kind="scripted", model="fake"), dataset="fixture",
                     strategies=("default", "zerothink", "morethink"),
                     thinking=Thinking(think_budget=8, max_extensions=2), sampling=Sampling(k=2, max_tokens=16),
                     judges=(JudgeSpec("refusal"),), bootstrap=100)
    return run_eval(cfg, out, backend=ScriptedBackend(script)).run_dir


def _fingerprint_run(out: Path, tiny_lm) -> Path:
    from trustlab.fingerprint.cli_verify import run_verify
    from trustlab.fingerprint.config import VerifyConfig
    from trustlab.models.llm.fake_server import FakeServer

    from tests.fingerprint.helpers import make_set

    fps = make_set(tiny_lm[1], [(f"browser key number {i} here", f" w{i}") for i in range(12)])
    fps.save(out.parent / "fp.json")
    table = {fp.key_text: fp.response_text for fp in fps.fingerprints}
    with FakeServer(models=("suspect",), check_model=True, answer=lambda p: table[p]) as srv:
        cfg = VerifyConfig(fingerprints=str(out.parent / "fp.json"), endpoint=srv.url, served_model="suspect",
                           batch_size=4)
        return Path(run_verify(cfg, out, max_retries=0))


@pytest.fixture(scope="module")
def page(tmp_path_factory, tiny_lm):
    """One combined page of four lab runs, built exactly as `trustlab demo` builds its report: each lab writes into
    a folder given relative to the working folder (as `--out runs/demo` is), and the page sits one folder above."""
    import os

    from trustlab.cli.main import lab_sections
    from trustlab.report import combined_blocks, render

    root = tmp_path_factory.mktemp("browser-report")
    for lab in ("certify", "vfl", "safety", "fingerprint"):
        (root / "work" / lab).mkdir(parents=True)
    cwd = os.getcwd()
    os.chdir(root)
    try:
        runs = {"certify": _certify_run(Path("work/certify/run")),
                "vfl": _vfl_run(Path("work/vfl/run")),
                "safety": _safety_run(Path("work/safety/run")),
                "fingerprint": _fingerprint_run(Path("work/fingerprint/run"), tiny_lm)}
        _, html = render(Path("."), title="trustlab browser test", blocks=combined_blocks(Path("."), runs,
                                                                                          lab_sections()))
    finally:
        os.chdir(cwd)
    return root / html


@pytest.fixture(scope="module")
def measured(page, tmp_path_factory):
    """What Chromium measured on the page after load, at a 1280 px wide window."""
    tmp = tmp_path_factory.mktemp("chromium")
    probe = tmp / "probe.html"
    probe.write_text(page.read_text().replace("</body>", f"<script>{CHECK_JS}</script></body>"))
    dom = chromium(tmp, f"--window-size={WIDTH},900", "--virtual-time-budget=10000", "--dump-dom",
                   probe.as_uri()).stdout
    m = re.search(r'<pre id="trustlab-check">(.*?)</pre>', dom, re.S)
    assert m, "the check script did not run: " + dom[-500:]
    import html as _html

    return json.loads(_html.unescape(m.group(1)))


def test_screenshot_is_painted(page, measured, tmp_path):
    from PIL import Image

    shot = tmp_path / "report.png"
    height = min(int(measured["height"]), 8000)
    chromium(tmp_path, f"--window-size={WIDTH},{height}", f"--screenshot={shot}", page.as_uri())
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (height, WIDTH)
    assert img.std() > 20  # text, tables and plots on white, not a blank or one-colour page
    assert (img < 128).mean() > 0.01  # enough dark ink to be text and curves


def test_every_plot_is_decoded(measured):
    assert len(measured["imgs"]) >= 8  # certify, vfl and safety each draw several
    bad = [i["alt"] for i in measured["imgs"] if not i["ok"]]
    assert not bad, bad  # a missing plot is drawn as an image that cannot decode, so it lands here
    assert "missing plot" not in measured["text"]  # a plot the section names but the run never wrote
    assert "Certification cost" in measured["text"] and any("forwards" in c for c in measured["caps"])


def test_no_literal_markdown_in_visible_text(measured):
    text = measured["text"]
    for token in ("**", "`"):
        where = text.find(token)
        assert where < 0, f"literal {token!r} near: {text[max(0, where - 60):where + 60]!r}"


def test_no_horizontal_overflow_at_1280px(measured):
    assert measured["innerWidth"] == WIDTH
    assert measured["scrollWidth"] <= WIDTH, measured["scrollWidth"]


def test_each_lab_section_opens_with_a_paragraph_of_results(measured):
    sections = measured["sections"]
    assert [s["lab"] for s in sections] == ["certify", "vfl", "safety", "fingerprint"]
    for s in sections:
        assert s["tag"] == "P" and "summary" in s["cls"], s
        words = s["text"].split()
        assert len(words) >= 20 and re.search(r"\d", s["text"]), s  # sentences built from the run's numbers


def test_captions_are_words(measured):
    assert measured["caps"]
    for cap in measured["caps"]:
        assert len(cap.split()) >= 8, cap  # says what to look at, not a file name


def test_screenshot_command_in_docs():
    """The make-free way for a user to look at a report page is written down."""
    text = (Path(__file__).parents[1] / "docs" / "architecture.md").read_text()
    assert "--screenshot" in text and "chromium" in text


VIEWER_JS = """
window.addEventListener('load', () => {
  const all = document.querySelectorAll('div.s').length;
  const pick = (name, value) => { const s = document.querySelector(`select[name=${name}]`); s.value = value;
                                  s.dispatchEvent(new Event('change')); };
  pick('strategy', 'zerothink');
  const zt = [...document.querySelectorAll('div.s')].filter(d => !d.hidden);
  pick('label', 'refusal:answer=unsafe');
  const both = [...document.querySelectorAll('div.s')].filter(d => !d.hidden);
  const pre = document.createElement('pre');
  pre.id = 'trustlab-check';
  pre.textContent = JSON.stringify({all, zt: zt.length, ztOk: zt.every(d => d.dataset.strategy === 'zerothink'),
    both: both.length, bothOk: both.every(d => d.dataset.labels.split(' ').includes('refusal:answer=unsafe')),
    count: document.getElementById('count').textContent});
  document.body.appendChild(pre);
});
"""


def test_viewer_filters_in_the_browser(page, tmp_path):
    """The safety run's per-sample viewer, linked from the combined page, filters by strategy and label."""
    viewer = page.parent / "work" / "safety" / "run" / "viewer.html"
    assert "work/safety/run/viewer.html" in page.read_text()  # the link is re-rooted to the combined page
    probe = tmp_path / "viewer.html"
    probe.write_text(viewer.read_text().replace("</body>", f"<script>{VIEWER_JS}</script></body>"))
    dom = chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()).stdout
    m = re.search(r'<pre id="trustlab-check">(.*?)</pre>', dom, re.S)
    assert m, dom[-500:]
    import html as _html

    got = json.loads(_html.unescape(m.group(1)))
    assert got["all"] == 3 * 12 * 2 and got["zt"] == 12 * 2 and got["ztOk"]
    assert 0 < got["both"] < got["zt"] and got["bothOk"] and got["count"] == str(got["both"])
