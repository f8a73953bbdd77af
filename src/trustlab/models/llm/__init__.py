"""The shared LLM I/O ground: one OpenAI-compatible client (``openai_client``), its retry policy (``retry``),
bounded request threads (``bounded``), reply checks (``replies``) and one scripted fake server (``fake_server``).

Nothing is imported at package import time; import the submodule you need.
"""
