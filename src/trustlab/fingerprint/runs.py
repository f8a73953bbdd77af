"""The fingerprint lab's run-folder verbs: ``run_generate`` and ``run_embed`` (a verb inside a ``RunDir``, with the
skip/resume rules of spec §8), used by the CLI, the demo and notebooks alike. Nothing heavy at import time."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from trustlab.runtime.errors import ConfigError

LAB = "fingerprint"
SMOLLM2 = "smollm2-135m-instruct"  # the model `embed` loads when none is named


def resolve_config(cls, config: Optional[Path], overrides: dict[str, Any]):
    """The YAML file's keys (if any), overridden by the flags that were given (None = not given)."""
    from trustlab.runtime.config import config_with_overrides

    return config_with_overrides(cls, config, overrides)


def _load_model(ref: str, dtype: str = "float32"):
    from trustlab.models import load_causal_lm

    from .tiny import resolve_model_ref

    return load_causal_lm(resolve_model_ref(ref), dtype="float32" if dtype == "auto" else dtype)


def run_generate(cfg, secret_path: Path, out: Path, overwrite: bool = False, run_dir: Optional[Path] = None,
                 lm=None) -> tuple[Path, bool]:
    """Generate into ``out`` (fingerprints.json); (path, skipped). The run record goes to ``run_dir``.

    An existing ``out`` made with the same config hash and secret is kept (skipped); any other is an error
    unless ``overwrite``."""
    from trustlab.runtime.config import config_hash
    from trustlab.runtime.rundir import RunDir

    from .fpset import FingerprintSet
    from .keys import generate_fingerprints
    from .secret import commitment, load_or_create_secret

    digest = config_hash(cfg)
    if out.exists() and not overwrite:
        old = FingerprintSet.load(out)
        secret_exists = Path(secret_path).exists()
        same = (old.params.get("config_hash") == digest and secret_exists
                and old.secret_commitment == commitment(_read_secret(secret_path)))
        if same:
            return out, True
        raise ConfigError(f"fingerprint file {str(out)!r} exists and was made with another config or secret",
                          hint="pass --overwrite to replace it, or choose another --out")
    run = RunDir.open(run_dir, LAB, "generate", config=cfg, seed=cfg.seed, new_only=True)  # checked before writing
    secret, created = load_or_create_secret(secret_path)
    fps = generate_fingerprints(cfg, secret, lm=lm, model_ref=cfg.model)
    fps = FingerprintSet.create(**{**{f: getattr(fps, f) for f in fps.__dataclass_fields__},
                                   "params": {**fps.params, "config_hash": digest}})
    fps.save(out)
    base_probs = [f.base_prob for f in fps.fingerprints if f.base_prob is not None]
    run.write_results({"num_fingerprints": len(fps), "strategy": fps.strategy, "null_p": fps.null_p,
                       "mean_base_prob": sum(base_probs) / len(base_probs) if base_probs else None,
                       "max_base_prob": max(base_probs) if base_probs else None,
                       "keys_tried": fps.params.get("keys_tried"), "rejected": fps.params.get("rejected")},
                      artifacts=[], set_digest=fps.set_digest, secret_commitment=fps.secret_commitment,
                      fingerprint_file=str(out), secret_created=created)
    return out, False


def _read_secret(path: Path) -> bytes:
    from .secret import load_secret

    return load_secret(path)


def open_embed_dir(out: Path, cfg, resume: bool, overwrite: bool):
    """(RunDir, 'run' | 'skip' | 'resume') for an embed run folder (spec §8: same config -> skip when complete,
    resume when not; another config -> error). ``overwrite`` / ``--no-resume`` remove only what the earlier embed
    run wrote; a folder of another verb, lab or of no trustlab run is refused untouched."""
    from trustlab.runtime.rundir import RunDir, read_marker

    had_run = out.is_dir() and read_marker(out) is not None
    run = RunDir.open(out, LAB, "embed", config=cfg, seed=cfg.seed, resume=resume and not overwrite,
                      fresh_hint="pass --overwrite to replace it (only the files it wrote are removed), or choose "
                                 "another --out")
    if not had_run or overwrite or not resume:
        return run, "run"
    return run, "skip" if (out / "results.json").is_file() else "resume"


def run_embed(cfg, out: Path, resume: bool = False, overwrite: bool = False, lm=None, fps=None):
    """Embed inside a RunDir at ``out``; returns (run folder, EmbedResult or None when skipped)."""
    import dataclasses

    from accelerate import PartialState

    from .fpset import FingerprintSet
    from .train import embed

    if fps is None:
        if not cfg.fingerprints:
            raise ConfigError("embed needs the fingerprint file", hint="pass --fingerprints fingerprints.json")
        fps = FingerprintSet.load(cfg.fingerprints)
    cfg = dataclasses.replace(cfg, out_dir=str(out))
    import torch

    main = PartialState(cpu=not torch.cuda.is_available()).is_main_process
    run, mode = open_embed_dir(out, cfg, resume, overwrite) if main else (None, "resume" if resume else "run")
    if mode == "skip":
        return out, None
    if main:
        fps.save(out / "fingerprints.json")
    model, tok = lm if lm is not None else _load_model(cfg.model or SMOLLM2, cfg.dtype)
    result = embed(model, tok, fps, cfg, out_dir=out, resume=mode == "resume", model_ref=cfg.model)
    if main:
        run.write_results(result.summary(), artifacts=[out / "model", out / "train_log.jsonl",
                                                       out / "embed_result.json", out / "fingerprints.json"],
                          set_digest=fps.set_digest, secret_commitment=fps.secret_commitment,
                          model=result.base_model.to_dict())
    return out, result
