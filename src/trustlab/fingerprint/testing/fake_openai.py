"""Fingerprint's spelling of the one shared fake server (``trustlab.models.llm.fake_server``).

``FakeOpenAI(answer=fn)`` answers ``/v1/completions`` and ``/v1/chat/completions`` with ``fn(prompt_text)``;
it checks the served model (404 otherwise), and its ``requests`` lists the POST bodies with their ``path``.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

from trustlab.models.llm.fake_server import FakeServer


class FakeOpenAI(FakeServer):
    def __init__(self, answer: Callable[[str], str] = lambda prompt: "", models: Sequence[str] = ("suspect",),
                 api_key: Optional[str] = None, refuse_lists: bool = False, fail_first: Sequence[int] = (),
                 fail_after: Optional[int] = None, fail_status: int = 500, retry_after_ms: Optional[int] = 1,
                 drop_one: bool = False, **hostile):
        super().__init__(answer=answer, models=models, check_model=True, api_key=api_key, refuse_lists=refuse_lists,
                         fail_first=list(fail_first), fail_after=fail_after, fail_status=fail_status,
                         retry_after_ms=retry_after_ms, drop_one=drop_one, **hostile)

    @property
    def requests(self) -> list[dict]:
        return [{"path": r["path"], **r["body"]} for r in self.log if r["method"] == "POST"]


__all__ = ["FakeOpenAI"]
