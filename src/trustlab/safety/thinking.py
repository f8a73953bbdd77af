"""Thinking control (spec §2): forced prefixes, MoreThink budget forcing, K samples per prompt, response splitting.

Forced strategies append the opening (``think_start + "\\n"``) to the rendered prompt P unless P already *ends
with* it, then (ZeroThink / LessThink) a fixed suffix that closes the thought. MoreThink keeps thinking: each time
the model closes its thought (or stops) while budget is left, an extension string is appended and generation goes
on, at most ``max_extensions`` times; then the answer gets its own ``answer_max_tokens`` and no ``think_end`` stop.
The stored ``response`` is always the full assistant turn: the opening (if the turn started in a thought) + the
forced text + the generated text.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, fields
from typing import Any, Iterable, Iterator, Optional, Sequence

from .backends.base import Completion, GenParams, messages_for
from .config import Sampling, ThinkFormat, Thinking, sample_seed

# ---------------------------------------------------------------------------------------------------------------
# the record schema of generations.jsonl (spec §6)


@dataclass
class GenRecord:
    """One line of ``generations.jsonl``: sample ``sample`` of prompt ``prompt_id`` under ``strategy``.

    ``status`` is ``ok`` | ``error`` | ``filtered``; an error keeps ``error`` and has no text (never substituted).
    ``think_tokens`` / ``answer_tokens`` count generated tokens only (forced text excluded); ``stopped_by`` is
    ``budget`` | ``max_extensions`` for MoreThink and None otherwise."""

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
    """``(thought, answer, closed)`` of a full assistant turn.

    - text starts with ``think_start``: the thought runs to the first ``think_end``;
    - else ``think_end`` present: the thought is the text before it;
    - else no thought (``thought=""``, the whole text is the answer).
    An opening without a ``think_end`` is unclosed: ``closed=False, answer=""``. Answer tags are stripped; both
    parts are whitespace-trimmed."""
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
    ``lessthink_text+" \\n"+think_end+"\\n\\n"``; nothing for default and MoreThink."""
    end = thinking.think_format.think_end
    if thinking.strategy == "zerothink":
        return "\n" + end + "\n\n"
    if thinking.strategy == "lessthink":
        return thinking.lessthink_text + " \n" + end + "\n\n"
    return ""


def forced_prefix(rendered: str, thinking: Thinking) -> Forced:
    """The prompt to complete for ``thinking.strategy`` given the rendered prompt P.

    ``default`` adds nothing (``prefilled`` when P ends with the opening, and the opening then starts the turn);
    forced strategies append the opening unless P already ends with it, then the strategy's suffix."""
    opening = thinking.think_format.opening
    prefilled = bool(opening) and rendered.endswith(opening)
    if thinking.strategy == "default":
        return Forced(rendered, opening if prefilled else "", prefilled)
    base = rendered if prefilled else rendered + opening
    suffix = forced_suffix(thinking)
    return Forced(base + suffix, opening + suffix, prefilled)


# ---------------------------------------------------------------------------------------------------------------
# generation


@dataclass
class _Row:
    rec: GenRecord
    forced: Forced
    thought: str = ""
    left: int = 0
    ext: int = 0
    done: bool = False
    rng: Optional[random.Random] = None


def _params(sampling: Sampling, max_tokens: int, stop: Sequence[str], seed: int) -> GenParams:
    return GenParams(max_tokens=max(1, int(max_tokens)), temperature=sampling.temperature, top_p=sampling.top_p,
                     top_k=sampling.top_k, repetition_penalty=sampling.repetition_penalty, stop=tuple(stop),
                     seed=seed)


def _fail(row: _Row, out: Completion) -> None:
    row.rec.status = "filtered" if out.finish_reason == "filtered" else "error"
    row.rec.error = out.error or out.finish_reason
    row.rec.finish_reason = out.finish_reason
    row.done = True


def _split_tokens(backend, thought: str, response: str, total: int) -> int:
    """Generated thought tokens of a default-strategy turn: counted with the backend's tokenizer when it has one,
    else by the thought's share of the characters."""
    if not thought or total <= 0:
        return 0
    counter = getattr(backend, "count_tokens", None)
    n = counter(thought) if counter is not None else None
    if n is None:
        n = round(total * len(thought) / max(1, len(response)))
    return int(min(total, n))


def _run_default(backend, rows: list[_Row], sampling: Sampling, system_prompt: Optional[str]) -> None:
    params = [_params(sampling, sampling.max_tokens, (), r.rec.sample_seed) for r in rows]
    if getattr(backend, "prefers_chat", False):
        outs = backend.chat([messages_for(r.rec.prompt, system_prompt) for r in rows], params)
    else:
        outs = backend.complete([r.forced.prompt for r in rows], params)
    _store_turns(rows, outs)  # default turns: answer_tokens is split below, once the thought is known


def _run_forced(backend, rows: list[_Row], sampling: Sampling) -> None:
    params = [_params(sampling, sampling.max_tokens, (), r.rec.sample_seed) for r in rows]
    _store_turns(rows, backend.complete([r.forced.prompt for r in rows], params))


def _store_turns(rows: list[_Row], outs) -> None:
    """One generation call per row: the response is the forced turn prefix + the generated text."""
    for r, o in zip(rows, outs):
        r.rec.calls += 1
        if not o.ok:
            _fail(r, o)
            continue
        r.rec.response = r.forced.turn_prefix + o.text
        r.rec.finish_reason = o.finish_reason
        r.rec.answer_tokens = o.tokens


def _run_morethink(backend, rows: list[_Row], thinking: Thinking, sampling: Sampling) -> None:
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

    def think_round(active: list[_Row]) -> None:
        params = [_params(sampling, r.left, (end,), r.rec.sample_seed) for r in active]
        outs = backend.complete([r.forced.prompt + r.thought for r in active], params)
        for r, o in zip(active, outs):
            r.rec.calls += 1
            if not o.ok:
                _fail(r, o)
                continue
            r.thought += o.text
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
    params = [_params(sampling, thinking.answer_max_tokens, (), r.rec.sample_seed) for r in live]
    outs = backend.complete([r.forced.prompt + r.thought + end + "\n\n" for r in live], params) if live else []
    for r, o in zip(live, outs):
        r.rec.calls += 1
        r.rec.extensions = r.ext
        r.rec.stopped_by = "budget" if r.left <= 0 else "max_extensions"
        if not o.ok:
            _fail(r, o)
            continue
        r.rec.response = r.forced.turn_prefix + r.thought + end + "\n\n" + o.text
        r.rec.answer_tokens = o.tokens
        r.rec.finish_reason = o.finish_reason
    for r in rows:
        r.rec.extensions = r.ext


# ---------------------------------------------------------------------------------------------------------------
# the model's context window (local backends): a prompt must fit, and no request asks for tokens past the window

def backend_context(backend) -> Optional[int]:
    """Positions a local backend's model attends to (``runtime.workload.model_context``); None for remote ones."""
    from trustlab.runtime.workload import model_context

    explicit = getattr(backend, "context_length", None)
    if isinstance(explicit, int) and explicit > 0:
        return explicit
    if getattr(backend, "count_tokens", None) is None:
        return None
    try:  # vLLM: the engine's own window
        return int(backend.llm.llm_engine.model_config.max_model_len)
    except (AttributeError, TypeError, ValueError):
        pass
    model = getattr(backend, "model", None)
    return model_context(model, getattr(backend, "tokenizer", None)) if model is not None else None


class _Windowed:
    """``backend`` with every request's ``max_tokens`` cut to the positions its prompt leaves in the window.

    The budgets (``max_tokens``, ``think_budget``, ``answer_max_tokens``) are caps: a model cannot write past its
    context, so a cap beyond it (``--max-tokens 100000000``) is the window, said once in a warning."""

    def __init__(self, backend, context: int):
        self._backend, self.context, self._warned = backend, context, False

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def complete(self, prompts: Sequence[str], params):
        import dataclasses
        import warnings

        plist = list(params) if isinstance(params, (list, tuple)) else [params] * len(prompts)
        fitted = []
        for prompt, p in zip(prompts, plist):
            room = max(1, self.context - self._backend.count_tokens(prompt))
            if p.max_tokens > room:
                if not self._warned and p.max_tokens > self.context:
                    warnings.warn(f"a generation budget of {p.max_tokens:,} tokens is more than the model's "
                                  f"{self.context:,}-token context: each sample stops where the context ends",
                                  stacklevel=2)
                    self._warned = True
                p = dataclasses.replace(p, max_tokens=room)
            fitted.append(p)
        return self._backend.complete(prompts, fitted)


def require_prompt_fits(backend, context: Optional[int], prompt_id: str, text: str) -> None:
    """ConfigError naming the prompt when its rendered tokens leave no room in the model's context."""
    if context is None:
        return
    if len(text) <= context:  # a token holds at least one character: it fits without counting
        return
    n = backend.count_tokens(text)
    if n >= context:
        from trustlab.runtime.errors import ConfigError

        raise ConfigError(f"prompt {prompt_id!r} is {n:,} tokens ({len(text):,} characters) once rendered, but the "
                          f"model's context holds {context:,}: nothing could be generated",
                          hint="shorten or drop that prompt (--limit / --start select prompts), or use a model with "
                               "a longer context")


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
        backend = _Windowed(backend, context)
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
            rows.append(_Row(g, forced))
        if thinking.strategy == "default":
            _run_default(backend, rows, sampling, system_prompt)
        elif thinking.strategy == "morethink":
            _run_morethink(backend, rows, thinking, sampling)
        else:
            _run_forced(backend, rows, sampling)
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
            if thinking.strategy == "default":
                total = g.answer_tokens
                g.think_tokens = _split_tokens(backend, g.thought, g.response, total)
                g.answer_tokens = total - g.think_tokens
            yield g
