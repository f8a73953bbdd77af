"""results.json -> report.md + standalone report.html (PNG plots embedded as data URIs)."""

from __future__ import annotations

import base64
import dataclasses
import html
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from trustlab.runtime.errors import DataError

from .blocks import Block, Bullets, Heading, Image, Link, Summary, Table, Text, fmt

SectionFn = Callable[[dict[str, Any], Path], Sequence[Block]]


def load_results(run_dir: str | Path) -> dict[str, Any]:
    """Read ``RUN_DIR/results.json``; a missing or corrupt file is a DataError naming it."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise DataError(f"{str(run_dir)!r} holds no results.json", hint="pass a finished run folder (runs/<lab>-...)")
    from trustlab.runtime.files import read_text

    try:
        results = json.loads(read_text(path, "results file"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{str(path)!r} is not valid JSON: {exc.msg} (line {exc.lineno})",
                        hint="rerun the run that wrote it; results.json is written atomically") from None
    if not isinstance(results, dict):
        raise DataError(f"{str(path)!r} holds a JSON {type(results).__name__}, not a trustlab results object",
                        hint="pass a run folder written by trustlab")
    missing = [k for k in ("lab", "verb", "metrics") if k not in results]
    if missing:
        raise DataError(f"{str(path)!r} lacks the field(s) {', '.join(missing)} of a trustlab results file",
                        hint="pass a run folder written by trustlab")
    if not isinstance(results["metrics"], dict) or not isinstance(results["lab"], str):
        raise DataError(f"{str(path)!r}: 'lab' must be a string and 'metrics' an object",
                        hint="pass a run folder written by trustlab")
    return results


def generic_section(results: dict[str, Any], run_dir: Path) -> list[Block]:
    """Fallback section for any run: its metrics flattened into a table, and its plots."""
    rows = [(k, fmt(v)) for k, v in _flatten(results.get("metrics", {}))]
    blocks: list[Block] = [Heading(f"{results.get('lab', '?')} {results.get('verb', '')}".strip()),
                           Summary(f"This {results.get('lab', '?')} run has no report section of its own; its "
                                   f"{len(rows)} recorded metrics follow as they were written.")]
    if rows:
        blocks.append(Table(("metric", "value"), rows))
    blocks += [Image(a) for a in results.get("artifacts", []) if str(a).endswith(".png")]
    return blocks


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(d, dict):
        out = []
        for k, v in d.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(d, list) and len(d) > 8:
        return [(prefix, f"[{len(d)} values]")]
    return [(prefix, d)]


def run_blocks(run_dir: Path, sections: Mapping[str, SectionFn] | None = None) -> list[Block]:
    """The blocks for one run: the lab's own section renderer if registered, else the generic one."""
    results = load_results(run_dir)
    section = (sections or {}).get(results.get("lab", ""), generic_section)
    env = results.get("environment", {})
    footer = Text(f"Run: trustlab {results.get('trustlab_version', '?')}, seed {results.get('seed')}, "
                  f"{results.get('started', '?')} – {results.get('finished', '?')}, "
                  f"python {env.get('python', '?')}, torch {env.get('torch', '—')}, device {env.get('device', '—')}, "
                  f"threads {env.get('threads', '—')}.")
    return [*rebase_images(section(results, run_dir), run_dir), footer]


def rebase_images(blocks: Sequence[Block], run_dir: Path) -> list[Block]:
    """Image paths relative to ``run_dir``, whatever the lab wrote: a path relative to the working folder at run
    time (``runs/demo/fingerprint/plots/x.png`` from ``--out runs/demo/fingerprint``) or an absolute one that lies
    inside the run folder is rewritten; anything else is left alone (and renders as a missing plot)."""
    root = Path(run_dir).resolve()
    out: list[Block] = []
    for b in blocks:
        if isinstance(b, (Image, Link)) and not (Path(run_dir) / b.path).is_file():
            cand = Path(b.path).resolve()
            if cand.is_file() and cand.is_relative_to(root):
                b = dataclasses.replace(b, path=cand.relative_to(root).as_posix())
        out.append(b)
    return out


def render(run_dir: str | Path, sections: Mapping[str, SectionFn] | None = None,
           title: str | None = None, blocks: Sequence[Block] | None = None) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into ``run_dir``; image paths are relative to it."""
    run_dir = Path(run_dir)
    blocks = list(blocks) if blocks is not None else run_blocks(run_dir, sections)
    title = title or f"trustlab report: {run_dir.name}"
    md = to_markdown(title, blocks)
    page = to_html(title, blocks, run_dir)
    from trustlab.runtime.errors import ConfigError
    from trustlab.runtime.files import at_path

    with at_path(run_dir, "report folder", ConfigError):
        (run_dir / "report.md").write_text(md)
        (run_dir / "report.html").write_text(page)
    return run_dir / "report.md", run_dir / "report.html"


def to_markdown(title: str, blocks: Sequence[Block]) -> str:
    out = [f"# {title}", ""]
    for b in blocks:
        if isinstance(b, Heading):
            out += [f"{'#' * (b.level)} {b.text}", ""]
        elif isinstance(b, (Text, Summary)):
            out += [b.text, ""]
        elif isinstance(b, Bullets):
            out += [f"- {item}" for item in b.items] + [""]
        elif isinstance(b, Table):
            if b.caption:
                out += [f"*{b.caption}*", ""]
            out.append("| " + " | ".join(map(str, b.headers)) + " |")
            out.append("|" + "---|" * len(b.headers))
            out += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in b.rows]
            out.append("")
            out += [f"{note}  " for note in b.notes] + ([""] if b.notes else [])
        elif isinstance(b, Image):
            out += [f"![{b.caption or Path(b.path).stem}]({b.path})", ""]
        elif isinstance(b, Link):
            out += [f"{b.text} [{b.label}]({b.path})".strip(), ""]
    return "\n".join(out)


_CSS = ("body{font-family:system-ui,sans-serif;max-width:64rem;margin:2rem auto;padding:0 1rem;color:#222;"
        "line-height:1.4}section.lab{margin-top:2.5rem}p.summary{font-size:1.08em;background:#f3f6fa;"
        "border-left:4px solid #4a78b0;padding:.6rem .9rem}div.table{overflow-x:auto;max-width:100%;margin:1rem 0}"
        "table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.25rem .5rem;"
        "text-align:right;vertical-align:top}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}"
        "p.notes{color:#555;font-size:.85em;margin:.2rem 0 1rem}figure{margin:1.2rem 0}"
        "img{max-width:100%;height:auto}figcaption{color:#444;font-size:.92em;max-width:48rem}"
        "caption{caption-side:top;color:#555;text-align:left;padding-bottom:.2rem}code{overflow-wrap:anywhere}")


def inline_markdown(text: str) -> str:
    """Inline Markdown (bold, italics, code, links) to HTML with raw HTML escaped, via markdown-it (rich's own
    dependency): the HTML report shows ``**Caveat:**`` as bold, not as asterisks."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).renderInline(text)


def to_html(title: str, blocks: Sequence[Block], run_dir: Path) -> str:
    """A standalone page: PNGs embedded as data URIs; each level-1 heading opens a ``<section class="lab">``."""
    esc = html.escape
    md = inline_markdown
    out = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
           "<meta name='viewport' content='width=device-width, initial-scale=1'>"
           f"<title>{esc(title)}</title><style>{_CSS}</style></head><body><h1>{esc(title)}</h1>"]
    open_section = False
    for b in blocks:
        if isinstance(b, Heading):
            lvl = min(max(b.level, 1), 6)
            if lvl == 1:
                out.append(("</section>" if open_section else "") + "<section class='lab'>")
                open_section = True
            out.append(f"<h{lvl}>{md(b.text)}</h{lvl}>")
        elif isinstance(b, Summary):
            out.append(f"<p class='summary'>{md(b.text)}</p>")
        elif isinstance(b, Text):
            out.append(f"<p>{md(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{md(str(i))}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            cap = f"<caption>{md(b.caption)}</caption>" if b.caption else ""
            head = "".join(f"<th>{esc(str(h))}</th>" for h in b.headers)
            body = "".join("<tr>" + "".join(f"<td>{esc(fmt(c))}</td>" for c in row) + "</tr>" for row in b.rows)
            notes = f"<p class='notes'>{'<br>'.join(md(n) for n in b.notes)}</p>" if b.notes else ""
            out.append(f"<div class='table'><table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
                       f"</table></div>{notes}")
        elif isinstance(b, Link):
            out.append(f"<p>{md(b.text)} <a href='{esc(b.path, quote=True)}'>{esc(b.label)}</a></p>")
        elif isinstance(b, Image):
            path = run_dir / b.path
            if path.is_file():
                data = base64.b64encode(path.read_bytes()).decode()
                out.append(f"<figure><img alt='{esc(b.caption)}' src='data:image/png;base64,{data}'>"
                           f"<figcaption>{md(b.caption)}</figcaption></figure>")
            else:  # an image that fails to decode, so a browser check counts it, and the words for a reader
                out.append(f"<figure class='missing'><img alt='missing plot {esc(b.path)}' src='data:,'>"
                           f"<figcaption><em>missing plot {esc(b.path)}</em></figcaption></figure>")
    out.append(("</section>" if open_section else "") + "</body></html>")
    return "\n".join(out)


def prefix_images(blocks: Sequence[Block], prefix: str) -> list[Block]:
    """Re-root image paths (for a combined report one folder above the runs)."""
    return [dataclasses.replace(b, path=f"{prefix}/{b.path}") if isinstance(b, (Image, Link)) else b for b in blocks]


def combined_blocks(out: Path, runs: Mapping[str, Path], sections: Mapping[str, SectionFn] | None = None
                    ) -> list[Block]:
    """The blocks of one page over several runs (what ``trustlab demo`` writes into ``out``): a level-1 heading per
    lab, then that run's blocks with every image path re-rooted from its run folder to ``out``."""
    root = Path(out).resolve()
    blocks: list[Block] = []
    for lab, run_dir in runs.items():
        rel = Path(os.path.relpath(Path(run_dir).resolve(), root)).as_posix()
        blocks += [Heading(lab, 1), *prefix_images(run_blocks(Path(run_dir), sections), rel)]
    return blocks


def headlines(blocks: Sequence[Block], width: int = 100) -> list[tuple[str, str]]:
    """(lab, headline) for each level-1 section of a combined page: the first sentence of the section's opening
    summary as plain text (Markdown marks dropped), cut to ``width`` characters; "no summary" when it has none."""
    import re

    out: list[tuple[str, str]] = []
    for b in blocks:
        if isinstance(b, Heading) and b.level == 1:
            out.append((b.text, ""))
        elif isinstance(b, Summary) and out and not out[-1][1]:
            text = re.sub(r"[`*]", "", " ".join(b.text.split()))
            m = re.match(r"(.+?\.)(\s|$)", text)
            first = m.group(1) if m else text
            out[-1] = (out[-1][0], first if len(first) <= width else first[:width - 1].rstrip() + "…")
    return [(lab, h or "no summary") for lab, h in out]
