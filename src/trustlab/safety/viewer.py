"""The per-sample viewer of a safety run: one static ``viewer.html`` (no network, no external file) holding every
sample's prompt, thought and answer, its truncation and finish reason, and each judge's label and raw output per
part, with filters by strategy, category and label (a few lines of inline JavaScript that only show and hide rows).

Everything in the page comes from the model, the data set or a judge server, so every string is HTML-escaped where
it is written (text and attribute values alike); the script reads nothing but ``data-`` attributes, and a
Content-Security-Policy forbids any request, so a reply that escaped escaping still could not load or send a thing.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Mapping, Sequence

from trustlab.runtime.records import read_records

from .store import generation_key, label_key

NAME = "viewer.html"
GENERATIONS, LABELS = "generations.jsonl", "labels.jsonl"
_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src 'none'"
_CSS = ("body{font-family:system-ui,sans-serif;margin:1rem 2rem;color:#222}#filters{position:sticky;top:0;"
        "background:#fff;padding:.5rem 0;border-bottom:1px solid #ccc}select{margin-right:1rem}"
        ".s{border:1px solid #ccc;margin:.8rem 0;padding:.5rem .8rem}.meta{color:#555;font-size:.9em}"
        "pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f7f7f7;padding:.4rem;margin:.2rem 0}"
        "table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:.15rem .4rem;"
        "text-align:left;vertical-align:top}.unsafe{color:#a00;font-weight:bold}.safe{color:#070}"
        "details pre{max-height:20rem;overflow:auto}")
_JS = """
const sel = [...document.querySelectorAll('#filters select')];
function apply() {
  const want = Object.fromEntries(sel.map(s => [s.name, s.value]));
  let shown = 0;
  for (const d of document.querySelectorAll('div.s')) {
    const ok = (!want.strategy || d.dataset.strategy === want.strategy) &&
      (!want.category || d.dataset.category === want.category) &&
      (!want.label || d.dataset.labels.split(' ').includes(want.label));
    d.hidden = !ok; shown += ok;
  }
  document.getElementById('count').textContent = shown;
}
sel.forEach(s => s.addEventListener('change', apply));
apply();
"""


def _latest(path: Path, key) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    _, rows = read_records(path, "generations file" if path.name == GENERATIONS else "labels file")
    return list({key(r): r for r in rows}.values())


def _token(s: Any) -> str:
    """A filter value without spaces (space separates a sample's label tokens)."""
    return "_".join(str(s).split()) or "-"


def _verdict(lab: Mapping[str, Any]) -> str:
    status = lab.get("status")
    if status == "ok" and lab.get("unsafe") is not None:
        return "unsafe" if lab["unsafe"] else "safe"
    return str(status or "missing")


def _options(name: str, title: str, values: Sequence[str]) -> str:
    esc = html.escape
    opts = "".join(f"<option value='{esc(v, quote=True)}'>{esc(v)}</option>" for v in values)
    return f"<label>{esc(title)} <select name='{name}'><option value=''>all</option>{opts}</select></label>"


def build_viewer(gens: Sequence[Mapping[str, Any]], labels: Sequence[Mapping[str, Any]], title: str = "") -> str:
    """The page for these generation and label records (newest record per key already chosen)."""
    esc = html.escape
    by_gen: dict[str, list[Mapping[str, Any]]] = {}
    for lab in labels:
        by_gen.setdefault(generation_key(lab), []).append(lab)
    order = sorted(gens, key=lambda g: (str(g.get("prompt_id", g.get("key"))), str(g.get("strategy", "default")),
                                        int(g.get("sample", 0) or 0)))
    strategies = sorted({str(g.get("strategy", "default")) for g in gens})
    categories = sorted({_token(g.get("category") or "uncategorised") for g in gens})
    label_tokens: set[str] = set()
    rows = []
    for g in order:
        labs = sorted(by_gen.get(generation_key(g), []), key=lambda r: (str(r.get("judge")), str(r.get("part"))))
        tokens = [_token(f"{r.get('judge')}:{r.get('part')}={_verdict(r)}") for r in labs]
        label_tokens.update(tokens)
        trows = "".join(
            f"<tr><td>{esc(str(r.get('judge')))}</td><td>{esc(str(r.get('part')))}</td>"
            f"<td class='{_verdict(r) if _verdict(r) in ('safe', 'unsafe') else ''}'>{esc(_verdict(r))}</td>"
            f"<td>{esc(str(r.get('score')) if r.get('score') is not None else '')}</td>"
            f"<td><pre>{esc(str(r.get('raw') or ''))}</pre></td></tr>" for r in labs)
        table = (f"<table><tr><th>judge</th><th>part</th><th>label</th><th>score</th><th>raw judge output</th></tr>"
                 f"{trows}</table>" if labs else "<p class='meta'>not judged</p>")
        truncated = g.get("truncated") if g.get("truncated") is not None else (g.get("closed") is False)
        meta = (f"strategy {g.get('strategy', 'default')} · sample {g.get('sample', '?')} · category "
                f"{g.get('category') or 'uncategorised'} · status {g.get('status', 'ok')} · finish "
                f"{g.get('finish_reason') or '—'} · closed {g.get('closed')} · truncated {bool(truncated)} · think "
                f"tokens {g.get('think_tokens')} · answer tokens {g.get('answer_tokens')}"
                + (f" · error {g.get('error')}" if g.get("error") else ""))
        rows.append(
            f"<div class='s' data-strategy='{esc(str(g.get('strategy', 'default')), quote=True)}' "
            f"data-category='{esc(_token(g.get('category') or 'uncategorised'), quote=True)}' "
            f"data-labels='{esc(' '.join(tokens), quote=True)}'>"
            f"<div class='meta'><b>{esc(str(g.get('key')))}</b> · {esc(meta)}</div>"
            f"<p><b>Prompt</b></p><pre>{esc(str(g.get('prompt') or ''))}</pre>"
            f"<details><summary>Thought ({len(str(g.get('thought') or ''))} characters)</summary>"
            f"{_FORCED if g.get('strategy') == 'intervention' and g.get('forced') else ''}"
            f"<pre>{esc(str(g.get('thought') or ''))}</pre></details>"
            f"<p><b>Answer</b>{_NO_ANSWER if truncated else ''}</p><pre>{esc(str(g.get('answer') or ''))}</pre>"
            f"{table}</div>")
    filters = (_options("strategy", "strategy", strategies) + _options("category", "category", categories)
               + _options("label", "label (judge:part=verdict)", sorted(label_tokens)))
    head = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{_CSP}\">"
            f"<title>{esc(title or 'safety samples')}</title><style>{_CSS}</style></head><body>"
            f"<h1>{esc(title or 'safety samples')}</h1>")
    return (head + f"<div id='filters'>{filters} <span><span id='count'>{len(rows)}</span> of {len(rows)} samples"
            f"</span></div>" + "\n".join(rows) + f"<script>{_JS}</script></body></html>")


_FORCED = ("<p class='meta'>The thought opens with the Thinking Intervention text: the strategy wrote it, not the "
           "model, and no judge sees it (only what the model wrote after it is judged).</p>")
_NO_ANSWER = (" <span class='meta'>(none: the thought never closed; this sample is excluded from the answer "
              "metrics, whatever label its empty answer got)</span>")


def write_viewer(run_dir: str | Path, title: str = "") -> Path | None:
    """Write ``RUN/viewer.html`` from the run's generations and labels; None when the run has no generations."""
    run_dir = Path(run_dir)
    gens = _latest(run_dir / GENERATIONS, generation_key)
    if not gens:
        return None
    labels = _latest(run_dir / LABELS, label_key)
    path = run_dir / NAME
    tmp = path.with_suffix(".tmp.html")
    tmp.write_text(build_viewer(gens, labels, title or f"safety samples: {run_dir.name}"), encoding="utf-8")
    tmp.replace(path)
    return path
