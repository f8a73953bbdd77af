"""A causal LM's identity, read from the object: ``name_or_path`` plus a digest of its weights (peft-style).

A model name in a config is a *request*; the object a user passes is the *fact*. ``model_identity(model)`` reads the
fact once: where the model was loaded from (``model.name_or_path`` / ``config._name_or_path``), its architecture,
its parameter count and ``weights_sha256``, a sha256 over every state-dict tensor in order as
``name|dtype|shape|`` + its bytes (floating tensors as float32, so a bf16 copy of a model hashes like its float32
load; the same bytes ``fingerprint.keys.weights_sha256`` hashes). The result is cached on the object and reused while
no tensor of the state dict has changed (torch bumps a tensor's ``_version`` on every in-place update, so a trained
model is hashed anew). ``check_request(identity, "smollm2-135m-instruct")`` warns, naming both, when a config's name
and the object disagree. ``family`` and ``preset_family`` recognise the registry's models from architecture and size,
never from a name.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from trustlab.runtime.errors import ModelError

SMOLLM2 = "smollm2-135m-instruct"
SMOLLM2_SIGNATURE = ("LlamaForCausalLM", 134_515_008)  # SmolLM2-135M(-Instruct): architecture, parameters (tied)
TINY_PARAMS = 5_000_000  # below this a model takes the tiny fingerprint preset
_CACHE_ATTR = "_trustlab_identity"


@dataclass(frozen=True)
class ModelIdentity:
    """Where a model came from and what its weights are. ``name_or_path`` is what ``load_causal_lm`` reloads it
    from (a folder, a hub id or a registry name); empty for a model built in memory that names nothing."""

    name_or_path: str
    weights_sha256: str
    architecture: str
    n_params: int

    @property
    def family(self) -> Optional[str]:
        """The registry model these weights are a member of by architecture and size (``smollm2-135m-instruct``),
        ``"tiny"`` for any model under 5M parameters, else None."""
        if (self.architecture, self.n_params) == SMOLLM2_SIGNATURE:
            return SMOLLM2
        return "tiny" if self.n_params < TINY_PARAMS else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str = "model identity") -> "ModelIdentity":
        fields = {"name_or_path": str, "weights_sha256": str, "architecture": str, "n_params": int}
        if not isinstance(d, dict) or any(not isinstance(d.get(k), t) for k, t in fields.items()):
            raise ModelError(f"{where} must hold {', '.join(fields)}; got {d!r:.120}",
                             hint="the record was written by another trustlab version or edited; rerun the step")
        return cls(**{k: d[k] for k in fields})

    def short(self) -> str:
        return f"{self.name_or_path or '(in-memory model)'} (weights sha256 {self.weights_sha256[:12]})"


def _name_or_path(model: Any) -> str:
    for obj in (model, getattr(model, "config", None)):
        for attr in ("name_or_path", "_name_or_path"):
            value = getattr(obj, attr, None)
            if isinstance(value, (str, Path)) and str(value):
                return str(value)
    return ""


def _architecture(model: Any) -> str:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft wrapper: the wrapped model
    names = getattr(getattr(base, "config", None), "architectures", None)
    return str(names[0]) if names else type(base).__name__


def weights_digest(model: Any) -> str:
    """sha256 over ``name|dtype|shape|`` and the bytes of every state-dict tensor, in state-dict order (floating
    tensors as float32). Hashes the tensors' own buffers (no copy for float32 on the CPU)."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(memoryview((t.float() if t.dtype.is_floating_point else t).numpy()))
    return h.hexdigest()


def _state_key(model: Any) -> tuple:
    """Changes whenever a state-dict tensor is replaced or updated in place (cheap: no tensor data is read)."""
    return (_name_or_path(model),) + tuple((id(t), t.data_ptr(), t._version)
                                           for t in model.state_dict(keep_vars=True).values())


def model_identity(model: Any) -> ModelIdentity:
    """The model's identity, computed once and cached on the object until its weights change."""
    key = _state_key(model)
    cached = getattr(model, _CACHE_ATTR, None)
    if cached is not None and cached[0] == key:
        return cached[1]
    ident = ModelIdentity(name_or_path=_name_or_path(model), weights_sha256=weights_digest(model),
                          architecture=_architecture(model),
                          n_params=int(sum(p.numel() for p in model.parameters())))
    try:
        object.__setattr__(model, _CACHE_ATTR, (key, ident))
    except (AttributeError, TypeError):  # an object that takes no attributes: recomputed next time
        pass
    return ident


def _aliases(request: str) -> set[str]:
    """The spellings a registry name or a path is known by (without building or loading anything)."""
    from .causal_lm import ALIASES, FP_TINY, cached_dir, fp_tiny_dir

    name = ALIASES.get(request, request)
    out = {request, name}
    if name == SMOLLM2:
        out.add(str(cached_dir(SMOLLM2)))
    if name == FP_TINY:
        out.add(str(fp_tiny_dir()))
    path = Path(request).expanduser()
    if path.exists():
        out.add(str(path.resolve()))
        if path.suffix == ".gguf":  # loaded from its converted cache folder (causal_lm._convert_gguf)
            out.add(str(cached_dir(f"gguf-{path.stem}-{path.stat().st_size}")))
    return out


def matches(identity: ModelIdentity, request: str) -> bool:
    """True when a config's model name can mean this object: the same name or path, or a registry name whose
    architecture and size the weights have (``smollm2-135m-instruct`` for SmolLM2 loaded from any folder)."""
    from .causal_lm import ALIASES

    mine = {identity.name_or_path}
    path = Path(identity.name_or_path).expanduser() if identity.name_or_path else None
    if path is not None and path.exists():
        mine.add(str(path.resolve()))
    if ALIASES.get(request, request) == SMOLLM2 and identity.family == SMOLLM2:
        return True
    return bool(mine & _aliases(request))


def check_request(identity: ModelIdentity, request: Optional[str], what: str = "config") -> None:
    """Warn (one line, naming both) when ``request`` names another model than the object's identity."""
    if request and not matches(identity, request):
        warnings.warn(f"the {what} names model {request!r} but the model passed is {identity.short()}: "
                      f"the object's identity is recorded and decides the preset", stacklevel=3)


def load_recorded(block: Any, where: str, device: str = "cpu"):
    """(model, tokenizer) loaded from a recorded identity's ``name_or_path``; ModelError (exit 2) naming both
    digests when the weights found there are not the ones recorded."""
    from .causal_lm import load_causal_lm

    recorded = ModelIdentity.from_dict(block, where)
    if not recorded.name_or_path:
        raise ModelError(f"{where} records a model built in memory (no name or path to reload it from)",
                         hint="pass the base model object explicitly")
    model, tok = load_causal_lm(recorded.name_or_path, device=device)
    require_same(recorded, model_identity(model), where)
    return model, tok


def require_same(recorded: ModelIdentity, found: ModelIdentity, where: str) -> None:
    """ModelError (exit 2) naming both digests when ``found`` is not the recorded model's weights."""
    if found.weights_sha256 != recorded.weights_sha256:
        raise ModelError(f"{where}: the base model at {recorded.name_or_path!r} has weights sha256 "
                         f"{found.weights_sha256}, but the run was trained on weights sha256 "
                         f"{recorded.weights_sha256}", hint="restore the original base model at that path, or pass "
                                                            "the base model the run was trained on")
