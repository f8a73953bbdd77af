"""What ``certify eval`` certifies (``EvalJob``: a lab model folder via ``lab_job`` or a user model via ``user_job``,
its test inputs, noise seed, run settings and certifier config) and ``run_eval``, which certifies a job into a run
folder on one rank or many. Loading the user's model itself lives in ``trustlab.certify.loading``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from trustlab.runtime import ConfigError, ModelError

from .loading import check_channels, load_user_model, parse_normalize, parse_spec, with_autocast


# --- what `certify eval` certifies -----------------------------------------------------------------------------------
@dataclass
class EvalJob:
    """One ``certify eval``: the base ``model`` (on its device), the seed's ``data`` (test inputs x and T(x)), the
    noise ``seed``, the run ``settings`` (config.yaml of the run folder), the certifier and its config."""

    model: Any
    data: Any
    seed: int
    settings: dict
    certifier: str
    cfg: Any
    inputs: str
    flags: dict
    sigma: Optional[float]


def _configs(certifier, *, sigma, n0, n, alpha, batch, predict, max_hours, radius, eps, bound=None):
    from .config import SMOOTHING_CERTIFIERS, BoundsConfig, SmoothingConfig

    smooth = certifier in SMOOTHING_CERTIFIERS
    kw = {"bound": bound} if bound is not None else {}
    scfg = SmoothingConfig(sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=batch, predict=predict,
                           max_hours=max_hours, target_radius=radius, **kw) if smooth else None
    bcfg = BoundsConfig(method=certifier if not smooth else "ibp", eps=eps)
    return smooth, scfg, bcfg


def _settings(base: dict, certifier, inputs, max_inputs, smooth, scfg, bcfg) -> dict:
    import dataclasses

    # batch size and the time limit are left out: certificates do not depend on them
    return {**base, "certifier": certifier, "inputs": inputs, "max_inputs": max_inputs,
            "smoothing": {k: v for k, v in dataclasses.asdict(scfg).items()
                          if k not in ("batch_size", "max_hours")} if smooth else None,
            "bounds": dataclasses.asdict(bcfg) if not smooth else None}


def _budget(job: EvalJob, n_sets: int, predict: bool, warn) -> dict:
    import warnings

    from .budget import require_budget
    from .stats import budget

    scfg = job.cfg
    require_budget(job.model, job.data.shape, scfg, n_sets * len(job.data.x_test),
                   names={"n": "--n", "max_hours": "--max-hours"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flags = budget(scfg.n, scfg.alpha, scfg.sigma, scfg.n if predict else None, scfg.radii)
    for w in caught:
        warn(str(w.message))
    return flags


def lab_job(model_dir, *, certifier: str, n0: int, n: int, alpha: float, sigma: float | None, radius: float,
            batch: int, eps: float, inputs: str, max_inputs: int | None, predict: bool, max_hours: float,
            device: str = "cpu", autocast: str = "off", bound: str | None = None, warn: Callable = print) -> EvalJob:
    """The job of a model folder written by ``certify train`` or a run (its dataset, split seed and trigger come
    from train.json); its run settings are those `certify eval` has always recorded, so earlier run folders resume."""
    from trustlab.runtime import DataError, from_dict

    from .config import ExperimentConfig, TriggerConfig
    from .data import prepare_data
    from .experiment import EVAL_META, model_sigma
    from .store import load_model_dir

    model, meta = load_model_dir(model_dir)
    missing = [k for k in EVAL_META if k not in meta]
    if missing:
        raise DataError(f"{str(Path(model_dir) / 'train.json')!r} does not record {', '.join(missing)}",
                        hint="pass a model folder written by `trustlab certify train` or a run")
    sigma = model_sigma(meta) if sigma is None else sigma
    smooth, scfg, bcfg = _configs(certifier, sigma=sigma, n0=n0, n=n, alpha=alpha, batch=batch, predict=predict,
                                  max_hours=max_hours, radius=radius, eps=eps, bound=bound)
    trigger = from_dict(TriggerConfig, meta["trigger"], "train.json trigger")
    cfg = ExperimentConfig(name="eval", seeds=(meta["seed"],), data=meta["data"], test_frac=meta["test_frac"],
                           trigger=trigger, max_test=max_inputs or meta.get("max_test"))
    _no_autocast_for_bounds(autocast, smooth, certifier)
    base = {"model_dir": str(model_dir)}
    if device != "cpu":
        base["device"] = device.split(":")[0]
    if autocast != "off":
        base["autocast"] = autocast
    settings = _settings(base, certifier, inputs, max_inputs, smooth, scfg, bcfg)
    data = prepare_data(cfg, meta["seed"])
    job = EvalJob(with_autocast(model.to(device), autocast, device), data, meta["seed"], settings, certifier,
                  scfg if smooth else bcfg, inputs, {}, sigma if smooth else None)
    if smooth:
        attacked_at = meta.get("attack_sigma")
        if attacked_at not in (None, 0.0, sigma):
            warn(f"attack B trained this model against sigma {attacked_at}; certifying at --sigma {sigma}")
        job.flags = _budget(job, 2 if inputs == "both" else 1, predict, warn)
    return job


def _no_autocast_for_bounds(autocast: str, smooth: bool, certifier: str) -> None:
    if autocast != "off" and not smooth:
        raise ConfigError(f"--autocast {autocast} applies to smoothing only; {certifier} bounds run in float64",
                          hint="drop --autocast, or use --certifier smoothing")


def user_job(spec: str, *, data: str | None, checkpoint: str | None, normalize: str | None,
             num_classes: int | None, autocast: str, seed: int, certifier: str, n0: int, n: int, alpha: float,
             sigma: float | None, radius: float, batch: int, eps: float, inputs: str, max_inputs: int | None,
             predict: bool, max_hours: float, device: str = "cpu", bound: str | None = None,
             warn: Callable = print) -> EvalJob:
    """The job of a user model (``load_user_model``) on the test split of dataset ``data`` (registry name,
    npz:FILE, idx:DIR; split seeded by ``seed``), certified at ``sigma`` (required: the lab cannot know it)."""
    import torch

    from .config import SMOOTHING_CERTIFIERS, ExperimentConfig
    from .data import prepare_data

    parse_spec(spec)
    smooth = certifier in SMOOTHING_CERTIFIERS
    if data is None:
        raise ConfigError(f"model {spec!r} is not a lab model folder, so --data must name its test inputs",
                          hint="e.g. --data npz:cifar10.npz (x_train, y_train, x_test, y_test) or --data digits")
    if smooth and sigma is None:
        raise ConfigError(f"--sigma is required for a user model ({spec!r}): the noise level it was trained for",
                          hint="e.g. --sigma 0.25 (Cohen et al.'s CIFAR-10 models: 0.12, 0.25, 0.5, 1.0)")
    _no_autocast_for_bounds(autocast, smooth, certifier)
    norm = parse_normalize(normalize)
    smooth, scfg, bcfg = _configs(certifier, sigma=sigma if smooth else 0.25, n0=n0, n=n, alpha=alpha, batch=batch,
                                  predict=predict, max_hours=max_hours, radius=radius, eps=eps, bound=bound)
    d = prepare_data(ExperimentConfig(name="eval", seeds=(seed,), data=data, max_test=max_inputs), seed)
    check_channels(norm, d.shape)
    model = load_user_model(spec, checkpoint, norm, num_classes=num_classes).to(device)
    model = with_autocast(model, autocast, device)
    with torch.inference_mode():
        try:
            out = model(torch.as_tensor(d.x_test[:1], device=device))
        except RuntimeError as exc:
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or ["error"]
            first = (lines[-1] if "TorchScript interpreter" in lines[0] else lines[0])[:200]
            raise ModelError(f"model {spec!r} fails on one input of shape {list(d.shape)} from {data!r}: {first}",
                             hint="check the model's input shape and channels against --data") from None
    if out.ndim != 2 or out.shape[1] < 2:
        raise ModelError(f"model {spec!r} returned shape {tuple(out.shape)} for one input; expected (1, K) logits",
                         hint="the model must map a batch to (B, K) logits")
    K = int(out.shape[1])
    if num_classes is not None and K != num_classes:
        raise ModelError(f"model {spec!r} returns {K} logits but --num-classes is {num_classes}",
                         hint="fix --num-classes or the model")
    if d.K > K:
        raise ModelError(f"{data!r} has {d.K} classes but model {spec!r} returns only {K} logits",
                         hint="certify it on data whose labels lie in [0, K)")
    d.K = K
    base = {"model": spec, "checkpoint": None if checkpoint is None else str(checkpoint), "normalize": normalize,
            "autocast": autocast, "data": data, "seed": seed}
    if device != "cpu":
        base["device"] = device.split(":")[0]
    settings = _settings(base, certifier, inputs, max_inputs, smooth, scfg, bcfg)
    job = EvalJob(model, d, seed, settings, certifier, scfg if smooth else bcfg, inputs, {}, sigma if smooth else None)
    if smooth:
        job.flags = _budget(job, 2 if inputs == "both" else 1, predict, warn)
    return job


# --- the eval verb across ranks -------------------------------------------------------------------------------------
def run_eval(job: EvalJob, out: str | Path, *, ranks=None, resume: bool = True):
    """Certify ``job`` (``EvalJob``) into the run folder ``out``: rank 0 opens the folder (config.yaml,
    resume checks, ``--no-resume`` clearing) before any rank writes, the ranks share each input set, and rank 0 alone
    writes results.json (``ranks``: ``distributed.Ranks``, default one process). Returns ``experiment.EvalResult``
    on every rank (the same on all)."""
    import warnings

    from trustlab.runtime import RunDir, derive_seed

    from .distributed import Ranks, agree, certify_sharded, step
    from .experiment import SCHEMA, EvalResult

    ranks = Ranks() if ranks is None else ranks
    run = step(ranks, lambda: RunDir.open(out, "certify", "eval", job.settings, seed=job.seed, resume=resume),
               only_main=True)
    out = Path(out)
    data = job.data
    sets = [(w, xs) for w, xs in (("clean", data.x_test), ("triggered", data.x_trig)) if job.inputs in ("both", w)]
    summ = {}
    for which, xs in sets:
        path = out / job.certifier / f"{which}.jsonl"
        if ranks.main:
            path.parent.mkdir(parents=True, exist_ok=True)
        agree(ranks)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the budget warnings were given once, by the job
            _, summ[f"{which}_inputs"], _ = certify_sharded(
                job.model, xs, data.y_test, job.certifier, job.cfg, seed=derive_seed(job.seed, "smoothing", which),
                K=data.K, records=path, ranks=ranks, resume=resume)
    params = {**job.flags, "sigma": job.sigma} if job.sigma is not None else job.flags
    if ranks.main:
        extra = {"world_size": ranks.world} if ranks.world > 1 else {}
        run.write_results({k: v["abstain_rate"] for k, v in summ.items()}, artifacts=[], schema=SCHEMA,
                          certifier=job.certifier, params=params, by_inputs=summ, **extra)
    agree(ranks)
    return EvalResult(out, job.certifier, summ, params)
