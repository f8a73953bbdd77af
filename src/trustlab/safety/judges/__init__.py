"""Judges: refusal strings, Llama-Guard, HarmBench classifier, OpenAI moderation, StrongREJECT rubric.

    judge = make_judge(JudgeSpec("refusal"))
    [v.unsafe for v in judge.judge([JudgeItem(prompt="...", text="I can't help with that.")])]   # [False]

Unparsed output stays ``unparsed`` (raw kept), never safe or unsafe; empty text is ``empty`` (safe).
"""

from .base import (DEFAULT_MODELS, JUDGES, REGISTRY, Judge, JudgeItem, JudgeSpec, Verdict, canonical_judge, make_judge)

__all__ = ["DEFAULT_MODELS", "JUDGES", "REGISTRY", "Judge", "JudgeItem", "JudgeSpec", "Verdict", "canonical_judge", "make_judge"]
