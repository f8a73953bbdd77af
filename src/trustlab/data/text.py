"""Benign dialogues from chatterbot-corpus, for fine-tuning that should not change a model's safety."""

from __future__ import annotations

from trustlab.runtime.errors import DataError

from .prompts import package_dir
from .types import TextCorpus


def load_chat_corpus(language: str = "english") -> TextCorpus:
    """All dialogues of one language of chatterbot-corpus; each a tuple of alternating turns."""
    import yaml

    folder = package_dir("chatterbot_corpus", "chatterbot-corpus") / "data" / language
    if not folder.is_dir():
        raise DataError(f"chat-corpus has no language {language!r}", hint="use language='english'")
    dialogues, cats = [], []
    for f in sorted(folder.glob("*.yml")):
        doc = yaml.safe_load(f.read_text()) or {}
        for conv in doc.get("conversations", []):
            turns = tuple(str(t).strip() for t in conv if t is not None and str(t).strip())
            if len(turns) >= 2:
                dialogues.append(turns)
                cats.append(f.stem)
    return TextCorpus("chat-corpus", tuple(dialogues), tuple(cats))
