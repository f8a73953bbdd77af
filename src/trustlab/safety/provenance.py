"""What generated a safety run's records: the model's identity, taken from the backend object and recorded in
``run.json`` and in the generations file's stamp, so two models never resume into one record file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from trustlab.runtime.errors import ConfigError


def backend_identity(backend: Any) -> Optional[dict[str, Any]]:
    """What generated the records, from the object: a local model's weights digest and architecture, else the
    served model's name (a config's model name is a request, not a fact)."""
    model = getattr(backend, "model", None)
    if model is not None and hasattr(model, "state_dict"):
        from trustlab.models.identity import model_identity

        ident = model_identity(model)
        return {"weights_sha256": ident.weights_sha256, "architecture": ident.architecture}
    return {"served_model": model} if isinstance(model, str) else None


def require_same_model(path: Path, recorded: Optional[dict[str, Any]], found: Optional[dict[str, Any]]) -> None:
    """ConfigError (exit 2) when the run in ``path`` recorded another model than the one generating now."""
    if recorded and found and recorded != found:
        raise ConfigError(f"run folder {str(path)!r} holds records of another model ({recorded}; now {found}); "
                          "two models never share one record file", hint="choose a new --out folder")
