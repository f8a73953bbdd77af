"""The shared LLM I/O ground: one OpenAI-compatible client (``openai_client``), its retry policy (``retry``),
bounded request threads (``bounded``), reply checks (``replies``), one scripted fake server (``fake_server``)
and one local transformers backend with the one completion type of every backend (``local``).

Nothing is imported at package import time; import the submodule you need.
"""
