import base64

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
