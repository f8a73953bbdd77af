"""Safety's name for the one shared fake server (``trustlab.models.llm.fake_server``): ``FakeOpenAIServer(rules,
latency_s=0, fail_first=0, context_len=None, ...)``, a context manager with ``.base_url`` and ``.requests``."""

from __future__ import annotations

from typing import Optional

from trustlab.models.llm.fake_server import FakeServer as FakeOpenAIServer
from trustlab.models.llm.script import Script


def serve(script_path: Optional[str], host: str = "127.0.0.1", port: int = 0, latency_s: float = 0.0):
    """A FakeOpenAIServer for ``trustlab safety fake-server``; loopback only."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        from trustlab.runtime.errors import ConfigError

        raise ConfigError(f"the fake server binds loopback only, got host {host!r}", hint="use --host 127.0.0.1")
    script = Script.load(script_path) if script_path else Script()
    return FakeOpenAIServer(script, latency_s=latency_s, port=port)


__all__ = ["FakeOpenAIServer", "serve"]
