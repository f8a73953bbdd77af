"""Held-out data with provenance for the robustness lab's utility measures: documents for perplexity (gensim's Lee
news corpus, else chatterbot-corpus dialogues; fp-tiny's own grammar for its tokenizer) and 4-option trivia items."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trustlab.runtime.files import read_text


def _is_fp_tiny_tokenizer(tok) -> bool:
    from . import tiny
    from .fpset import tokenizer_info

    words, _ = tiny.grammar(tiny.SETTINGS["seed"])
    return tokenizer_info(tok)["vocab_sha256"] == tokenizer_info(tiny.tokenizer(words))["vocab_sha256"]


def heldout_texts(n_docs: int = 100, tokenizer: Any = None) -> tuple[list[str], str]:
    """(documents, provenance): gensim's Lee news corpus (300 news documents, read as a file) when gensim is
    installed, else chatterbot-corpus dialogues joined per conversation. For the fp-tiny tokenizer (to which
    English is all ``<unk>``) the held-out documents of its own grammar (``tiny.heldout_texts``)."""
    import importlib.util

    if tokenizer is not None and _is_fp_tiny_tokenizer(tokenizer):
        from . import tiny

        return tiny.heldout_texts(n_docs), f"fp-tiny grammar: {n_docs} held-out documents (corpus seed 12345)"

    spec = importlib.util.find_spec("gensim")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data" / "lee_background.cor"
        if path.is_file():
            docs = [d.strip() for d in read_text(path, "Lee corpus").splitlines() if d.strip()]
            return docs[:n_docs], f"lee-news: gensim test_data/lee_background.cor, first {min(n_docs, len(docs))} docs"
    from trustlab import data

    corpus = data.load("chat-corpus")
    docs = [" ".join(d) for d, c in zip(corpus.dialogues, corpus.categories) if c != "trivia" and len(d) >= 3]
    return docs[:n_docs], "chat-corpus: chatterbot-corpus dialogues of 3+ turns (gensim not installed)"


def trivia_items(subset: int | None = None, seed: int = 0) -> tuple[list[dict[str, Any]], str]:
    """4-option multiple-choice items from chatterbot-corpus ``trivia.yml``: the answer plus 3 distractors drawn
    (seeded) from the other questions' answers. Returns (items, provenance)."""
    import numpy as np
    import yaml

    from trustlab.data.prompts import package_dir

    path = package_dir("chatterbot_corpus", "chatterbot-corpus") / "data" / "english" / "trivia.yml"
    pairs = [(str(c[0]).strip(), str(c[1]).strip()) for c in yaml.safe_load(read_text(path, "trivia file"))
             ["conversations"] if len(c) >= 2 and str(c[1]).strip()]
    answers = sorted({a for _, a in pairs})
    rng = np.random.default_rng(seed)
    items = []
    for q, a in pairs:
        others = [x for x in answers if x != a]
        options = [a] + [others[i] for i in rng.choice(len(others), size=3, replace=False)]
        order = rng.permutation(4)
        items.append({"question": q, "options": [options[i] for i in order], "answer": int(np.argmax(order == 0))})
    if subset is not None and subset < len(items):
        items = [items[i] for i in sorted(rng.choice(len(items), size=subset, replace=False))]
    return items, (f"chatterbot-corpus data/english/trivia.yml: {len(items)} of {len(pairs)} Q/A pairs, 4 options, "
                   f"distractors = other answers (seed {seed})")
