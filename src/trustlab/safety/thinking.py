"""Thinking control (spec §2): forced prefixes, MoreThink budget forcing, K samples per prompt, response splitting.

Forced strategies append the opening (``think_start + "\\n"``) to the rendered prompt P unless P already *ends
with* it, then (ZeroThink / LessThink) a fixed suffix that closes the thought. MoreThink keeps thinking: each time
the model closes its thought (or stops) while budget is left, an extension string is appended and generation goes
on, at most ``max_extensions`` times; then the answer gets its own ``answer_max_tokens`` and no ``think_end`` stop.
The stored ``response`` is always the full assistant turn: the opening (if the turn started in a thought) + the
forced text + the generated text.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterable, Iterator, Mapping, Optional

from . import strategies as run
from .backends.base import messages_for
from .config import Sampling, ThinkFormat, Thinking, sample_seed
from .window import Windowed, backend_context, require_prompt_fits

# ---------------------------------------------------------------------------------------------------------------
# the record schema of generations.jsonl (spec §6)


@dataclass
class GenRecord:
    """One line of ``generations.jsonl``: sample ``sample`` of prompt ``prompt_id`` under ``strategy``.

    ``status`` is ``ok`` | ``error`` | ``filtered``; an error keeps ``error`` and has no text (never substituted).
    ``think_tokens`` / ``answer_tokens`` count generated tokens only (forced text excluded); ``stopped_by`` is
    ``budget`` | ``max_extensions`` for MoreThink and None otherwise. ``truncated``: the thought opened and never
    closed (``finish_reason`` says whether the budget ran out, ``length``, or the model stopped, ``stop``); such a
    sample has no answer, and its empty answer must never be judged as one (its own share in the results).
    ``extensions`` also counts placed Thinking Interventions at a marker (0 or 1)."""

    key: str
    prompt_id: str
    sample: int
    strategy: str
    prompt: str
    category: str = ""
    context: str = ""
    forced: bool = False
    prefilled: bool = False
    response: str = ""
    thought: str = ""
    answer: str = ""
    closed: bool = True
    truncated: bool = False
    think_tokens: int = 0
    answer_tokens: int = 0
    extensions: int = 0
    stopped_by: Optional[str] = None
    finish_reason: str = "stop"
    status: str = "ok"
    error: Optional[str] = None
    sample_seed: int = 0
    calls: int = 0
    elapsed_s: float = 0.0

    @property
    def store_key(self) -> str:
        """Unique across strategies: ``<strategy>/<prompt_id>#<sample>``."""
        return f"{self.strategy}/{self.key}"

    @property
    def tokens(self) -> int:
        return self.think_tokens + self.answer_tokens

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GenRecord":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def record_key(prompt_id: str, sample: int) -> str:
    return f"{prompt_id}#{sample}"


# ---------------------------------------------------------------------------------------------------------------
# splitting a stored response into thought and answer


def split_response(text: str, fmt: ThinkFormat) -> tuple[str, str, bool]:
    """``(thought, answer, closed)`` of a full assistant turn. Tags are matched as strings.

    - text starts with ``think_start``: the thought runs to the first ``think_end``;
    - else ``think_end`` present: the thought is the text before it;
    - else ``think_start`` later in the text (a preamble, then a thought that never closed): unclosed, the
      thought is the text with the tag removed;
    - else no thought (``thought=""``, the whole text is the answer).
    An opening without a ``think_end`` is unclosed: ``closed=False, answer=""`` (a truncated thought is never an
    answer). Answer tags are stripped; both parts are whitespace-trimmed."""
    if not fmt.think_end:
        return "", _strip_answer_tags(text, fmt), True
    body = text.lstrip()
    if fmt.think_start and body.startswith(fmt.think_start):
        body = body[len(fmt.think_start):]
        thought, sep, rest = body.partition(fmt.think_end)
        if not sep:
            return thought.strip(), "", False
        return thought.strip(), _strip_answer_tags(rest, fmt), True
    thought, sep, rest = text.partition(fmt.think_end)
    if sep:
        return thought.strip(), _strip_answer_tags(rest, fmt), True
    if fmt.think_start and fmt.think_start in text:
        return text.replace(fmt.think_start, "", 1).strip(), "", False
    return "", _strip_answer_tags(text, fmt), True


def _strip_answer_tags(text: str, fmt: ThinkFormat) -> str:
    if fmt.answer_start and fmt.answer_start in text:
        text = text.split(fmt.answer_start, 1)[1]
    if fmt.answer_end and fmt.answer_end in text:
        text = text.split(fmt.answer_end, 1)[0]
    return text.strip()


# ---------------------------------------------------------------------------------------------------------------
# forced prefixes


@dataclass(frozen=True)
class Forced:
    """The prompt sent for a strategy. ``turn_prefix`` is the part of the assistant turn that we wrote (opening +
    forced suffix); the stored response is ``turn_prefix + generated``."""

    prompt: str
    turn_prefix: str
    prefilled: bool


def forced_suffix(thinking: Thinking) -> str:
    """The text after the opening: ZeroThink ``"\\n"+think_end+"\\n\\n"``; LessThink
    ``lessthink_text+" \\n"+think_end+"\\n\\n"``; Thinking Intervention ``intervention_text+"\\n"`` (the thought
    goes on after it; at a marker the text is placed later, so nothing here); nothing for default and MoreThink."""
    end = thinking.think_format.think_end
    if thinking.strategy == "zerothink":
        return "\n" + end + "\n\n"
    if thinking.strategy == "lessthink":
        return thinking.lessthink_text + " \n" + end + "\n\n"
    if thinking.strategy == "intervention" and thinking.intervention_marker is None:
        return thinking.intervention_text + "\n"
    return ""


def judged_text(gen: Mapping[str, Any], part: str, thinking: Thinking) -> str:
    """The text a judge sees for ``part`` of a generation record: the stored part, except that the Thinking
    Intervention text we forced into the thought (our words, not the model's) is removed once from thought and
    response, so no judge scores our own reminder to refuse as the model's refusal. A response that is nothing but
    the format's tags (``<think>\\n</think>``: an empty thought and an empty answer) is empty, "" for the judge, as
    its two parts are: the same sample must not be ``empty`` (safe) by part and a non-refusal as a whole."""
    text = str(gen.get(part) or "")
    if gen.get("strategy") == "intervention" and part in ("thought", "response"):
        forced = thinking.intervention_text
        # the stored thought is trimmed: a thought that is only our text has lost the newline we placed after it
        text = text.replace(forced + "\n", "", 1) if forced + "\n" in text else text.replace(forced, "", 1)
    if part == "response" and not (judged_text(gen, "thought", thinking) or str(gen.get("answer") or "")).strip():
        return ""
    return text


def forced_prefix(rendered: str, thinking: Thinking) -> Forced:
    """The prompt to complete for ``thinking.strategy`` given the rendered prompt P.

    ``default`` adds nothing (``prefilled`` when P ends with the opening, and the opening then starts the turn);
    forced strategies append the opening unless P already ends with it, then the strategy's suffix. A template
    that ends with ``think_start`` but no newline gets only the newline (the tag is never doubled)."""
    fmt = thinking.think_format
    opening = fmt.opening
    prefilled = bool(opening) and rendered.endswith(opening)
    bare_tag = bool(fmt.think_start) and not prefilled and rendered.endswith(fmt.think_start)
    if thinking.strategy == "default":
        return Forced(rendered, opening if prefilled else "", prefilled)
    base = rendered if prefilled else rendered + "\n" if bare_tag else rendered + opening
    suffix = forced_suffix(thinking)
    return Forced(base + suffix, opening + suffix, prefilled or bare_tag)


def generate_samples(backend, records: Iterable[Any], thinking: Thinking, sampling: Sampling, *,
                     skip: Iterable[str] = (), system_prompt: Optional[str] = None,
                     chunk_size: Optional[int] = None) -> Iterator[GenRecord]:
    """K samples of every prompt record (``prompt_id``, ``prompt``, ``category``) under ``thinking.strategy``.

    Yields GenRecords in (prompt, sample) order, a chunk at a time; keys in ``skip`` (``store_key`` form or plain
    ``prompt_id#sample``) are not generated (resume). Sample j of prompt p is sent seed
    ``sample_seed(sampling.seed, p, j)``, which also seeds MoreThink's extension choice."""
    skip = set(skip)
    fmt = thinking.think_format
    size = chunk_size or int(getattr(backend, "chunk_size", 8))
    pending: list[tuple[Any, int]] = []
    for rec in records:
        for j in range(sampling.k):
            key = record_key(rec.prompt_id, j)
            if key in skip or f"{thinking.strategy}/{key}" in skip:
                continue
            pending.append((rec, j))
    needs_render = thinking.strategy != "default" or not getattr(backend, "prefers_chat", False)
    context = backend_context(backend) if needs_render else None
    if context is not None:
        backend = Windowed(backend, context)
    fitted: set[str] = set()
    for start in range(0, len(pending), size):
        chunk = pending[start:start + size]
        t0 = time.perf_counter()
        rendered: dict[str, str] = {}
        rows = []
        for rec, j in chunk:
            if needs_render and rec.prompt_id not in rendered:
                rendered[rec.prompt_id] = backend.render(messages_for(rec.prompt, system_prompt))
            forced = forced_prefix(rendered[rec.prompt_id], thinking) if needs_render else Forced("", "", False)
            if rec.prompt_id not in fitted:
                require_prompt_fits(backend, context, rec.prompt_id, forced.prompt)
                fitted.add(rec.prompt_id)
            g = GenRecord(key=record_key(rec.prompt_id, j), prompt_id=rec.prompt_id, sample=j,
                          strategy=thinking.strategy, prompt=rec.prompt, category=getattr(rec, "category", "") or "",
                          context=getattr(rec, "context", "") or "",
                          forced=thinking.strategy != "default", prefilled=forced.prefilled,
                          sample_seed=sample_seed(sampling.seed, rec.prompt_id, j))
            rows.append(run.Row(g, forced))
        if thinking.strategy == "default":
            run.run_default(backend, rows, sampling, system_prompt)
        elif thinking.strategy == "morethink":
            run.run_morethink(backend, rows, thinking, sampling)
        elif thinking.strategy == "intervention" and thinking.intervention_marker is not None:
            run.run_intervention_at_marker(backend, rows, thinking, sampling)
        else:
            run.run_forced(backend, rows, sampling)
        elapsed = (time.perf_counter() - t0) / max(1, len(rows))
        for r in rows:
            g = r.rec
            g.elapsed_s = round(elapsed, 6)
            if g.status != "ok":
                g.response = g.thought = g.answer = ""
                g.think_tokens = g.answer_tokens = 0
                yield g
                continue
            g.thought, g.answer, g.closed = split_response(g.response, fmt)
            g.truncated = not g.closed
            if thinking.strategy in ("default", "intervention"):  # one turn of thought and answer: split its tokens
                total = g.answer_tokens
                if thinking.strategy == "default":
                    g.think_tokens = run.split_generated_tokens(backend, g.thought, g.response, total)
                else:
                    generated = g.response[len(r.forced.turn_prefix):]
                    thought = generated.partition(fmt.think_end)[0] if g.closed else generated
                    thought = thought.replace(thinking.intervention_text + "\n", "", 1)
                    g.think_tokens = run.split_generated_tokens(backend, thought, generated, total)
                g.answer_tokens = total - g.think_tokens
            yield g
