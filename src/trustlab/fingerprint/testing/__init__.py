"""Test helpers shipped with the lab (a scripted OpenAI-compatible server for fault injection)."""
