"""The generation calls of each thinking strategy, batched over rows (spec §2). ``thinking.generate_samples`` builds
the rows (a GenRecord and the forced prompt of each sample) and calls one runner per chunk:

- ``run_default``: one call (chat on servers that prefer it, else a completion of the rendered prompt);
- ``run_forced``: one completion after the forced prefix (ZeroThink, LessThink, and Thinking Intervention at the
  start of the thought);
- ``run_intervention_at_marker``: Thinking Intervention placed after the first ``intervention_marker`` the model
  writes (two calls);
- ``run_morethink``: budget forcing (at most ``max_extensions + 2`` calls).

Think tags are matched as strings, never as token ids, so a model whose vocabulary lacks ``</think>`` (the tag is
then several tokens) works the same: servers and ``generate`` cut at stop *strings*, and a tag cut in half by a
think budget (``"...</thi"``) is dropped before an extension string is appended (``strip_partial_tag``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from .backends.base import Completion, GenParams, messages_for
from .config import Sampling, Thinking


@dataclass
class Row:
    """One sample in flight: its record (a ``thinking.GenRecord``) and forced prompt (a ``thinking.Forced``)."""

    rec: Any
    forced: Any
    thought: str = ""
    left: int = 0
    ext: int = 0
    done: bool = False
    rng: Optional[random.Random] = None


def params(sampling: Sampling, max_tokens: int, stop: Sequence[str], seed: int) -> GenParams:
    return GenParams(max_tokens=max(1, int(max_tokens)), temperature=sampling.temperature, top_p=sampling.top_p,
                     top_k=sampling.top_k, repetition_penalty=sampling.repetition_penalty, stop=tuple(stop),
                     seed=seed)


def fail(row: Row, out: Completion) -> None:
    row.rec.status = "filtered" if out.finish_reason == "filtered" else "error"
    row.rec.error = out.error or out.finish_reason
    row.rec.finish_reason = out.finish_reason
    row.done = True


def strip_partial_tag(text: str, tag: str) -> str:
    """``text`` without a trailing proper prefix of ``tag`` of two or more characters (``"...</thi"`` for
    ``</think>``): what a budget cut leaves of a tag that spans several tokens."""
    for n in range(min(len(tag) - 1, len(text)), 1, -1):
        if text.endswith(tag[:n]):
            return text[:-n]
    return text


def split_generated_tokens(backend, thought: str, generated: str, total: int) -> int:
    """How many of ``total`` generated tokens wrote ``thought`` (the generated part of the thought): counted with
    the backend's tokenizer when it has one, else by the thought's share of the generated characters."""
    if not thought or total <= 0:
        return 0
    counter = getattr(backend, "count_tokens", None)
    n = counter(thought) if counter is not None else None
    if n is None:
        n = round(total * len(thought) / max(1, len(generated)))
    return int(min(total, n))


def run_default(backend, rows: list[Row], sampling: Sampling, system_prompt: Optional[str]) -> None:
    ps = [params(sampling, sampling.max_tokens, (), r.rec.sample_seed) for r in rows]
    if getattr(backend, "prefers_chat", False):
        outs = backend.chat([messages_for(r.rec.prompt, system_prompt) for r in rows], ps)
    else:
        outs = backend.complete([r.forced.prompt for r in rows], ps)
    store_turns(rows, outs)  # default turns: answer_tokens is split by the caller, once the thought is known


def run_forced(backend, rows: list[Row], sampling: Sampling) -> None:
    ps = [params(sampling, sampling.max_tokens, (), r.rec.sample_seed) for r in rows]
    store_turns(rows, backend.complete([r.forced.prompt for r in rows], ps))


def store_turns(rows: list[Row], outs) -> None:
    """One generation call per row: the response is the forced turn prefix + the generated text."""
    for r, o in zip(rows, outs):
        r.rec.calls += 1
        if not o.ok:
            fail(r, o)
            continue
        r.rec.response = r.forced.turn_prefix + o.text
        r.rec.finish_reason = o.finish_reason
        r.rec.answer_tokens = o.tokens


def run_intervention_at_marker(backend, rows: list[Row], thinking: Thinking, sampling: Sampling) -> None:
    """Thinking Intervention at a marker: the thought runs until the model writes ``intervention_marker`` (or
    closes its thought, or stops), the marker and the intervention text are appended there, and generation goes
    on with the tokens left of ``max_tokens``. A thought that spends the whole budget before any marker gets no
    intervention (its record says ``extensions=0``; ``extensions=1`` once the text was placed)."""
    marker, end, text = thinking.intervention_marker, thinking.think_format.think_end, thinking.intervention_text
    ps = [params(sampling, sampling.max_tokens, (marker, end), r.rec.sample_seed) for r in rows]
    outs = backend.complete([r.forced.prompt for r in rows], ps)
    again = []
    for r, o in zip(rows, outs):
        r.rec.calls += 1
        if not o.ok:
            fail(r, o)
            continue
        r.left = sampling.max_tokens - o.tokens
        r.rec.answer_tokens = o.tokens
        r.rec.finish_reason = o.finish_reason
        r.thought = o.text
        if o.finish_reason == "length" or r.left <= 0:
            r.rec.response = r.forced.turn_prefix + r.thought
            continue
        r.thought += marker + text + "\n"
        r.ext = 1
        again.append(r)
    ps = [params(sampling, r.left, (), r.rec.sample_seed) for r in again]
    outs = backend.complete([r.forced.prompt + r.thought for r in again], ps) if again else []
    for r, o in zip(again, outs):
        r.rec.calls += 1
        if not o.ok:
            fail(r, o)
            continue
        r.rec.response = r.forced.turn_prefix + r.thought + o.text
        r.rec.answer_tokens += o.tokens
        r.rec.finish_reason = o.finish_reason
    for r in rows:
        r.rec.extensions = r.ext


def run_morethink(backend, rows: list[Row], thinking: Thinking, sampling: Sampling) -> None:
    """Budget forcing, batched over the rows still thinking (each row with its own budget):

        o = complete(prefix, stop=[think_end], max_tokens=left); thought += o.text; left -= o.tokens
        while ext < max_extensions and left > 0:
            thought += separator + rng.choice(extension_strings)
            o = complete(prefix + thought, stop=[think_end], max_tokens=left); ...; ext += 1
        answer = complete(prefix + thought + think_end + "\\n\\n", stop=[], max_tokens=answer_max_tokens)
    """
    end = thinking.think_format.think_end
    for r in rows:
        r.left = thinking.think_budget
        r.rng = random.Random(r.rec.sample_seed)

    def think_round(active: list[Row]) -> None:
        ps = [params(sampling, r.left, (end,), r.rec.sample_seed) for r in active]
        outs = backend.complete([r.forced.prompt + r.thought for r in active], ps)
        for r, o in zip(active, outs):
            r.rec.calls += 1
            if not o.ok:
                fail(r, o)
                continue
            r.thought += o.text if o.finish_reason != "length" else strip_partial_tag(o.text, end)
            r.left -= o.tokens
            r.rec.think_tokens += o.tokens

    think_round(rows)
    while True:
        active = [r for r in rows if not r.done and r.ext < thinking.max_extensions and r.left > 0]
        if not active:
            break
        for r in active:
            r.thought += thinking.extension_separator + r.rng.choice(thinking.extension_strings)
            r.ext += 1
        think_round(active)
    live = [r for r in rows if not r.done]
    ps = [params(sampling, thinking.answer_max_tokens, (), r.rec.sample_seed) for r in live]
    outs = backend.complete([r.forced.prompt + r.thought + end + "\n\n" for r in live], ps) if live else []
    for r, o in zip(live, outs):
        r.rec.calls += 1
        r.rec.extensions = r.ext
        r.rec.stopped_by = "budget" if r.left <= 0 else "max_extensions"
        if not o.ok:
            fail(r, o)
            continue
        r.rec.response = r.forced.turn_prefix + r.thought + end + "\n\n" + o.text
        r.rec.answer_tokens = o.tokens
        r.rec.finish_reason = o.finish_reason
    for r in rows:
        r.rec.extensions = r.ext
