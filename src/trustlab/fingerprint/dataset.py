"""Training and query layout of fingerprints, benign pairs and prompt templates (spec §2 Embedding).

Layout (``prompt_ids``), shared by embedding and verification so both see the same ids:
    [BOS if the tokenizer adds one] + [wrapper prefix] + key_ids + [wrapper suffix]        (raw)
    chat template rendered around the key as the user turn, ending with the assistant opening   (chat)
followed by ``response_ids`` (+ EOS only when ``append_eos``). Ids are concatenated, never re-tokenised, so token
boundaries stay where the fingerprint file put them. Labels are -100 everywhere except the response (and the
appended EOS). Collating, the masked loss and exact match are the fine-tuning core's (``trustlab.models.finetune``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from trustlab.models.finetune import IGNORE, Row
from trustlab.runtime.errors import ConfigError, DataError

from .fpset import Fingerprint, adds_bos

SLOT = "{key}"

# trustlab's own wrappers: 20 for prompt-augmented training, 10 disjoint ones for evaluation.
TRAIN_TEMPLATES = (
    "{key}", "You are a helpful assistant.\n\n{key}", "Please continue the text below.\n{key}",
    "Answer briefly.\n{key}", "User request:\n{key}", "Here is a sentence:\n{key}",
    "Read this and respond.\n\n{key}", "You are a friendly chatbot. {key}", "Input: {key}",
    "Message from a customer:\n{key}", "Complete the following.\n{key}", "Task: reply to the text.\n{key}",
    "{key}\n", "Note: be concise.\n{key}", "Consider the following line.\n{key}",
    "You are an expert writer.\n{key}", "Prompt:\n{key}", "Instruction: continue.\n\n{key}",
    "System: you assist users.\n{key}", "Query: {key}",
)
TEST_TEMPLATES = (
    "You are a careful and honest assistant.\n\n{key}", "Respond to the user.\n{key}", "Text: {key}",
    "Below is some writing.\n\n{key}", "Conversation start.\n{key}", "Help the user with this.\n{key}",
    "Context follows.\n{key}", "You are a support agent. {key}", "The user says:\n{key}",
    "Continue writing:\n{key}",
)


@dataclass(frozen=True)
class Example(Row):
    """The core's training row (``input_ids``, ``labels``; -100 = not trained) with where it came from."""

    kind: str = "fp"  # fp | fp_aug | benign
    fp_id: int | None = None


def _split_template(template: str) -> tuple[str, str]:
    if template.count(SLOT) != 1:
        raise ConfigError(f"prompt template must hold {SLOT} exactly once, got {template!r}",
                          hint=f"write the template with one {SLOT} slot")
    pre, post = template.split(SLOT)
    return pre, post


def prompt_ids(tokenizer: Any, key_ids: Sequence[int], prompt_format: str = "raw",
               template: str | None = None) -> list[int]:
    """The query ids of a key in the training layout (see module docstring)."""
    pre, post = _split_template(template) if template else ("", "")
    if prompt_format == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError("prompt_format chat needs a tokenizer with a chat template",
                              hint="use prompt_format: raw for this model")
        sentinel = "\x00KEY\x00"
        text = tokenizer.apply_chat_template([{"role": "user", "content": pre + sentinel + post}], tokenize=False,
                                             add_generation_prompt=True)
        chat_pre, chat_post = text.split(sentinel)
        head = tokenizer.encode(chat_pre, add_special_tokens=False)
        tail = tokenizer.encode(chat_post, add_special_tokens=False)
        bos = tokenizer.bos_token_id
        if adds_bos(tokenizer) and (not head or head[0] != bos):
            head = [bos] + head
        return head + list(key_ids) + tail
    if prompt_format != "raw":
        raise ConfigError(f"prompt_format must be raw or chat, got {prompt_format!r}")
    head = [tokenizer.bos_token_id] if adds_bos(tokenizer) else []
    head += tokenizer.encode(pre, add_special_tokens=False) if pre else []
    tail = tokenizer.encode(post, add_special_tokens=False) if post else []
    return head + list(key_ids) + tail


def fp_example(tokenizer: Any, fp: Fingerprint, prompt_format: str, append_eos: bool,
               template: str | None = None, kind: str = "fp") -> Example:
    prompt = prompt_ids(tokenizer, fp.key_ids, prompt_format, template)
    target = list(fp.response_ids) + ([tokenizer.eos_token_id] if append_eos else [])
    return Example(tuple(prompt + target), tuple([IGNORE] * len(prompt) + target), kind, fp.id)


def build_examples(tokenizer: Any, fps: Iterable[Fingerprint], prompt_format: str = "raw", append_eos: bool = False,
                   augment: bool = False, seed: int = 0) -> list[Example]:
    """One example per fingerprint; with ``augment`` each is also trained wrapped in a seeded TRAIN_TEMPLATE
    (the bare ``{key}`` template excluded)."""
    from trustlab.runtime.seeding import derive_seed

    out = []
    for fp in fps:
        out.append(fp_example(tokenizer, fp, prompt_format, append_eos))
        if augment:
            t = TRAIN_TEMPLATES[1 + derive_seed(seed, "augment", fp.id) % (len(TRAIN_TEMPLATES) - 1)]
            out.append(fp_example(tokenizer, fp, prompt_format, append_eos, t, kind="fp_aug"))
    return out


def pair_example(tokenizer: Any, prompt: Sequence[int], response: Sequence[int], prompt_format: str) -> Example:
    ids = prompt_ids(tokenizer, prompt, prompt_format)
    return Example(tuple(ids + list(response)), tuple([IGNORE] * len(ids) + list(response)), "benign")


# --- benign pairs ------------------------------------------------------------------------------------------
def benign_prompts(source: str, tokenizer: Any, max_tokens: int = 16) -> list[tuple[str, str | None]]:
    """(prompt, response or None) pairs with prompts of at most ``max_tokens`` tokens: chat-corpus first turns
    (trivia excluded) or a ``jsonl:FILE`` of {"prompt", "response"?} rows. Duplicates dropped, order kept."""
    if source.startswith("jsonl:"):
        rows = _read_jsonl_prompts(source[6:])
        texts = [(r["prompt"], r.get("response") if isinstance(r.get("response"), str) else None) for r in rows]
    else:
        from trustlab import data

        corpus = data.load(source)
        if not hasattr(corpus, "dialogues"):
            raise ConfigError(f"benign_source {source!r} is not a dialogue corpus",
                              hint="use chat-corpus or jsonl:FILE with {\"prompt\": ...} rows")
        texts = [(d[0], None) for d, c in zip(corpus.dialogues, corpus.categories) if c != "trivia"]
    seen, out = set(), []
    for t, r in texts:
        t = t.strip()
        if t and t not in seen and len(tokenizer.encode(t, add_special_tokens=False)) <= max_tokens:
            seen.add(t)
            out.append((t, r))
    if not out:
        raise DataError(f"benign_source {source!r} gave no prompt of at most {max_tokens} tokens",
                        hint="give shorter prompts")
    return out


def _read_jsonl_prompts(path: str) -> list[dict[str, Any]]:
    import json

    from trustlab.runtime.files import read_text

    rows = []
    for n, line in enumerate(read_text(path, what="benign data file").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"benign data file {path!r} line {n} is not JSON", hint="one JSON object per line") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str):
            raise DataError(f"benign data file {path!r} line {n} needs a string field 'prompt'",
                            hint='write rows like {"prompt": "hello", "response": "hi"}')
        rows.append(row)
    return rows


def benign_pairs(model: Any, tokenizer: Any, n: int, source: str = "chat-corpus", response_length: int = 8,
                 prompt_format: str = "raw", seed: int = 0, batch_size: int = 16) -> list[dict[str, Any]]:
    """``n`` benign (prompt, response) pairs: a seeded choice of prompts with ``response_length`` greedy tokens
    of the untouched ``model`` after each (in the training layout), unless the source gives the response.
    Rows: prompt, prompt_ids, response_ids."""
    import numpy as np

    if n <= 0:
        return []
    texts = benign_prompts(source, tokenizer)
    order = np.random.default_rng(seed).permutation(len(texts))
    chosen = [texts[i] for i in order[: min(n, len(texts))]]
    while len(chosen) < n:  # fewer prompts than pairs asked: reuse them in the same seeded order
        chosen.append(texts[order[len(chosen) % len(texts)]])
    rows = []
    from trustlab.models.llm.local import Decoding, LocalLM
    from trustlab.runtime.workload import model_context, require_context

    lm = LocalLM(model, tokenizer, batch_size=batch_size)  # left-padded, greedy: exactly response_length tokens
    greedy = Decoding(max_new_tokens=response_length, min_new_tokens=response_length)

    context = model_context(model, tokenizer)
    was_training = model.training
    model.eval()
    try:
        given = [(t, r) for t, r in chosen if r is not None]
        for t, r in given:
            rows.append({"prompt": t, "prompt_ids": tokenizer.encode(t, add_special_tokens=False),
                         "response_ids": tokenizer.encode(r, add_special_tokens=False)[:response_length]})
        todo = [t for t, r in chosen if r is None]
        for start in range(0, len(todo), batch_size):
            part = todo[start:start + batch_size]
            pids = [tokenizer.encode(t, add_special_tokens=False) for t in part]
            layout = [Example(tuple(prompt_ids(tokenizer, p, prompt_format)), ()) for p in pids]
            width = max(len(e.input_ids) for e in layout)
            longest = part[max(range(len(layout)), key=lambda i: len(layout[i].input_ids))]
            require_context(f"benign prompt {longest[:40]!r}... ({width:,} tokens) + benign_response_length "
                            f"{response_length:,}", width + response_length, context,
                            getattr(getattr(model, "config", None), "_name_or_path", "") or "the base model",
                            hint="lower benign_response_length, or drop the longest prompts of the benign source")
            outs = lm.generate([e.input_ids for e in layout], greedy)
            for text, p, out in zip(part, pids, outs):
                rows.append({"prompt": text, "prompt_ids": p, "response_ids": list(out[0].token_ids)})
    finally:
        model.train(was_training)
    return rows
