"""Test helpers shipped with the lab: the fake OpenAI-compatible server."""
