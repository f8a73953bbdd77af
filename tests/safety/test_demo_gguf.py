"""The demo model's install path (trustlab.models.demo_gguf) on small fake slices: assembled in order into the
cache, SHA-256 checked before every use, a mismatch a one-line ModelError, a missing slice the install hint."""

import hashlib

import pytest

from trustlab.models import demo_gguf
from trustlab.runtime.errors import MissingDependencyError, ModelError


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    parts = []
    for i, chunk in enumerate((b"GGUF-head-", b"middle-", b"tail")):
        p = tmp_path / "parts" / f"part{i:02d}.bin"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(chunk)
        parts.append(p)
    whole = b"".join(p.read_bytes() for p in parts)
    monkeypatch.setenv("TRUSTLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(demo_gguf, "part_paths", lambda: list(parts))
    monkeypatch.setattr(demo_gguf, "SHA256", hashlib.sha256(whole).hexdigest())
    monkeypatch.setattr(demo_gguf, "SIZE", len(whole))
    return tmp_path, whole


def test_assembled_in_order_into_the_cache_and_checked(fake_parts):
    tmp_path, whole = fake_parts
    path = demo_gguf.gguf_path()
    assert path == tmp_path / "cache" / "models" / demo_gguf.NAME / "model.gguf" and path.read_bytes() == whole
    assert demo_gguf.gguf_path() == path  # the second use re-checks the cached file and keeps it
    assert not [p for p in path.parent.iterdir() if p.name != "model.gguf"]  # no temporary file left


def test_a_tampered_cache_file_is_refused_with_one_line(fake_parts):
    path = demo_gguf.gguf_path()
    path.write_bytes(b"X" + path.read_bytes()[1:])  # same size, other bytes
    with pytest.raises(ModelError) as exc:
        demo_gguf.gguf_path()
    assert "SHA-256" in exc.value.message and "\n" not in exc.value.message and f"remove {path}" in exc.value.hint
    path.write_bytes(b"short")
    with pytest.raises(ModelError, match="bytes, expected"):
        demo_gguf.gguf_path()


def test_wrong_parts_never_reach_the_cache(fake_parts, monkeypatch):
    monkeypatch.setattr(demo_gguf, "SHA256", "0" * 64)
    with pytest.raises(ModelError, match="assembled file") as exc:
        demo_gguf.gguf_path()
    assert "--force-reinstall" in exc.value.hint
    tmp_path, _ = fake_parts
    folder = tmp_path / "cache" / "models" / demo_gguf.NAME
    assert not any(folder.iterdir())  # neither the bad file nor its temporary copy is kept


def test_missing_slices_name_the_install_command(monkeypatch):
    monkeypatch.setattr(demo_gguf, "PARTS", (("trustlab_no_such_slice_pkg", "part01.bin"),))
    with pytest.raises(MissingDependencyError) as exc:
        demo_gguf.part_paths()
    assert "trustlab-no-such-slice-pkg" in exc.value.message and "make demo-model" in exc.value.hint


def test_listed_in_the_models_registry():
    from trustlab.models.causal_lm import MODELS, listing

    assert demo_gguf.NAME in MODELS and any(r["name"] == demo_gguf.NAME for r in listing())
