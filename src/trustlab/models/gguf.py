"""The GGUF path of a Hugging Face causal LM: llama.cpp's own converter, then llama.cpp's quantizer.

``convert_to_gguf(model_dir, out)`` runs llama.cpp's HF-to-GGUF converter (``convert_hf_to_gguf.py`` and its
``conversion`` and ``gguf-py`` packages, unpacked from the llama-cpp-python sdist of the pinned version by
``make gguf-converter``) in a child process. Two small adjustments are made in that process, and only there:

* the converter imports ``sentencepiece`` before it checks for a ``tokenizer.model`` file; for a model without one
  the check is done first (its own fallback then takes the BPE path), so sentencepiece need not be installed;
* the converter has no path for a **word-level** tokenizer (``fp-tiny``). Its vocabulary is written as a unigram
  (``t5``) vocabulary of whole words, each stored as "▁word" with equal scores. llama.cpp's unigram tokenizer then
  maps whitespace-separated text word by word, exactly as the WordLevel tokenizer does: every piece starts with
  "▁", so the only segmentation of "▁w1▁w2…" into pieces is one piece per word (a word not in the vocabulary
  becomes ``<unk>`` as in the original, or a known prefix followed by ``<unk>``: llama.cpp's unigram search
  splits off the longest known piece), and "▁" is decoded back to a space. Every word of a fingerprint key is in
  the vocabulary (the model generated it), so keys tokenize exactly as before (tested).

``quantize_gguf(src, out, "Q8_0" | "Q4_K_M")`` calls llama.cpp's quantizer (``llama_cpp.llama_model_quantize``).
``tensor_types(path)`` counts the tensor types of a GGUF file: on a small model llama.cpp falls back from a
k-quant to another type for rows not a multiple of 256, which a survival table must show.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from trustlab.runtime.errors import ConfigError, MissingDependencyError, ModelError

from .llm.llamacpp_server import INSTALL as LLAMACPP_INSTALL
from .llm.llamacpp_server import LLAMACPP_VERSION

CONVERTER_ENV = "TRUSTLAB_GGUF_CONVERTER"
CONVERTER_HINT = "make gguf-converter (unpacks llama.cpp's converter from the llama-cpp-python sdist)"
OUTTYPES = ("f32", "f16", "bf16", "q8_0")
QUANTS = {"Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M", "Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
          "Q5_K_M": "LLAMA_FTYPE_MOSTLY_Q5_K_M", "Q6_K": "LLAMA_FTYPE_MOSTLY_Q6_K"}


def converter_dir() -> Path:
    """Where llama.cpp's converter is unpacked: $TRUSTLAB_GGUF_CONVERTER, else <venv>/share/llama.cpp-<version>."""
    d = Path(os.environ.get(CONVERTER_ENV) or Path(sys.prefix) / "share" / f"llama.cpp-{LLAMACPP_VERSION}")
    need = [d / "convert_hf_to_gguf.py", d / "conversion" / "__init__.py", d / "gguf-py" / "gguf" / "__init__.py"]
    missing = [str(p.relative_to(d)) for p in need if not p.is_file()]
    if missing:
        raise MissingDependencyError(f"llama.cpp's HF-to-GGUF converter is not unpacked at {d} (missing: "
                                     f"{', '.join(missing)})", hint=CONVERTER_HINT)
    return d


def convert_to_gguf(model_dir: str | os.PathLike, out: str | os.PathLike, *, outtype: str = "f16",
                    timeout: float = 1800.0) -> Path:
    """Convert the HF folder ``model_dir`` to the GGUF file ``out`` (which must not exist) with llama.cpp's
    converter; ``outtype`` is one of f32, f16, bf16, q8_0. Returns ``out``."""
    model_dir, out = Path(model_dir), Path(out)
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"{str(model_dir)!r} is not a Hugging Face model folder (no config.json)",
                          hint="pass the folder a fingerprinted model was saved to, e.g. runs/fp/model")
    if outtype not in OUTTYPES:
        raise ConfigError(f"GGUF outtype {outtype!r} is not one of {', '.join(OUTTYPES)}")
    if out.exists():
        raise ConfigError(f"{str(out)!r} already exists; not overwriting it", hint="choose another output path")
    conv = converter_dir()
    out.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("NO_LOCAL_GGUF", None)  # the converter uses its own gguf-py, the version it was written for
    cmd = [sys.executable, "-m", "trustlab.models.gguf", str(conv), str(model_dir), str(out), outtype]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0 or not out.is_file():
        tail = (proc.stderr or proc.stdout or "")[-1500:]
        raise ModelError(f"llama.cpp's converter failed on {model_dir} (exit {proc.returncode}): {tail}")
    return out


def quantize_gguf(src: str | os.PathLike, out: str | os.PathLike, qtype: str, *, threads: int = 1) -> Path:
    """Quantize the GGUF file ``src`` to ``qtype`` (Q8_0, Q4_K_M, ...) with llama.cpp's quantizer."""
    src, out = Path(src), Path(out)
    if qtype not in QUANTS:
        raise ConfigError(f"quantization {qtype!r} is not one of {', '.join(QUANTS)}")
    if not src.is_file():
        raise ConfigError(f"GGUF file {str(src)!r} does not exist")
    if out.exists():
        raise ConfigError(f"{str(out)!r} already exists; not overwriting it", hint="choose another output path")
    try:
        import llama_cpp
    except ImportError as exc:
        raise MissingDependencyError(f"quantizing needs llama-cpp-python: {exc}", hint=LLAMACPP_INSTALL) from exc
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANTS[qtype])
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), params)
    if rc != 0 or not out.is_file():
        raise ModelError(f"llama.cpp's quantizer failed ({qtype}) on {src}: return code {rc}")
    return out


def tensor_types(path: str | os.PathLike) -> dict[str, int]:
    """{GGML type name: number of tensors} of a GGUF file, read with the gguf package."""
    from gguf import GGUFReader

    return dict(Counter(t.tensor_type.name for t in GGUFReader(str(path)).tensors))


# ---- the child process: llama.cpp's converter with the two adjustments of the module docstring ----

def _word_level_vocab(model, dir_model: Path) -> None:
    """Write a WordLevel tokenizer.json vocabulary as a whole-word unigram (t5) vocabulary."""
    import gguf

    tj = json.loads((dir_model / "tokenizer.json").read_text(encoding="utf-8"))
    vocab = tj["model"]["vocab"]
    n = model.hparams.get("vocab_size", len(vocab))
    if sorted(vocab.values()) != list(range(len(vocab))) or len(vocab) > n:
        raise ValueError(f"word-level vocabulary ids are not 0..{len(vocab) - 1} within vocab_size {n}")
    special = {t["content"]: t["id"] for t in tj.get("added_tokens", []) if t.get("special")}
    unk = tj["model"].get("unk_token")
    by_id = {i: w for w, i in vocab.items()}
    tokens, types = [], []
    for i in range(n):
        w = by_id.get(i)
        if w is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif w == unk:
            tokens.append(w)
            types.append(gguf.TokenType.UNKNOWN)
        elif w in special:
            tokens.append(w)
            types.append(gguf.TokenType.CONTROL)
        else:
            tokens.append("\u2581" + w)
            types.append(gguf.TokenType.NORMAL)
    w = model.gguf_writer
    w.add_tokenizer_model("t5")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * n)
    w.add_token_types(types)
    w.add_add_space_prefix(True)
    w.add_remove_extra_whitespaces(True)
    if unk is not None:
        w.add_unk_token_id(vocab[unk])
    gguf.SpecialVocab(dir_model, load_merges=False, n_vocab=n).add_to_gguf(w)
    cfg_path = dir_model / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    post = json.dumps(tj.get("post_processor") or {})
    bos = cfg.get("bos_token")
    w.add_add_bos_token(bool(cfg.get("add_bos_token", bos is not None and json.dumps(bos) in post)))
    w.add_add_eos_token(bool(cfg.get("add_eos_token", False)))


def _child(conv: str, model_dir: str, out: str, outtype: str) -> None:
    import runpy

    sys.path[:0] = [str(Path(conv) / "gguf-py"), conv]
    from conversion import get_model_class
    from conversion.base import ModelBase

    hparams = ModelBase.load_hparams(Path(model_dir), False)
    cls = get_model_class(hparams["architectures"][0])
    stock_sp, stock_vocab = cls._set_vocab_sentencepiece, cls.set_vocab

    def set_vocab_sentencepiece(self):
        if not (self.dir_model / "tokenizer.model").is_file():
            raise FileNotFoundError(f"File not found: {self.dir_model / 'tokenizer.model'}")
        return stock_sp(self)

    def set_vocab(self):
        tj = self.dir_model / "tokenizer.json"
        if tj.is_file() and json.loads(tj.read_text(encoding="utf-8"))["model"].get("type") == "WordLevel":
            return _word_level_vocab(self, self.dir_model)
        return stock_vocab(self)

    cls._set_vocab_sentencepiece, cls.set_vocab = set_vocab_sentencepiece, set_vocab
    sys.argv = ["convert_hf_to_gguf.py", model_dir, "--outfile", out, "--outtype", outtype]
    runpy.run_path(str(Path(conv) / "convert_hf_to_gguf.py"), run_name="__main__")


if __name__ == "__main__":
    _child(*sys.argv[1:5])
