"""The verbs on the user's own objects (issue 10): train / attack / certify / defend, the batch SmoothedClassifier,
smoothing-adaptive as a certifier, the trigger on the experiment config, and the smoothing properties."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from trustlab.runtime import ConfigError

DOCS = Path(__file__).resolve().parents[2] / "docs" / "certify.md"


def _blobs(n=300, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = (0.25 + 0.5 * y[:, None, None, None] + 0.1 * torch.randn(n, 1, 4, 4, generator=g)).clamp(0, 1)
    return x, y


def test_docs_example_runs():
    """The docs' notebook block: a user-defined nn.Module trained and certified with two imports."""
    text = DOCS.read_text()
    block = re.search(r"<!-- executed: tests/certify/test_api.py::test_docs_example_runs -->\n```python\n(.*?)```",
                      text, re.S).group(1)
    imports = [ln for ln in block.splitlines() if ln.startswith(("import ", "from "))]
    assert len(imports) == 2 and len(block.splitlines()) <= 25
    ns: dict = {}
    exec(compile(block, str(DOCS), "exec"), ns)
    res = ns["res"]
    assert type(ns["fit"].model).__name__ == "Net"  # the user's own class, not one of ours
    assert res.certifier == "smoothing" and len(res.records) == 50
    assert res.summary["clean_acc"] >= 0.95 and res.abstain_rate <= 0.1
    assert res.summary["certified_acc"]["0.25"] >= 0.8
    assert all(r["radius"] >= 0 for r in res.records)


def test_verbs_take_a_dataloader_and_return_results():
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from trustlab.certify.api import (AttackConfig, BoundsConfig, TrainConfig, TriggerConfig, attack, certify,
                                      train)

    x, y = _blobs()
    loader = DataLoader(TensorDataset(x, y), batch_size=50)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    a = attack(loader, AttackConfig(kind="label-noise", rate=0.05), TriggerConfig(size=2), seed=0)
    assert len(a.x) == 300 + 15 and list(a.poison_idx) == list(range(300, 315))
    assert np.all(a.x[a.poison_idx][:, 0, 2:, 2:] == 1.0)  # the 2x2 patch is stamped bottom-right
    fit = train(model, a.data, TrainConfig(procedure="ibp", eps=0.02, epochs=30, lr=3e-3), seed=0)
    assert fit.model is model and fit.procedure == "ibp" and fit.steps == 30 * 5
    assert set(fit.to_dict()) == {"procedure", "epochs", "steps", "secs", "loss", "resumed_from_epoch"}
    res = certify(model, loader, BoundsConfig(eps=0.02))  # labels come with the loader
    assert res.certifier == "ibp" and res.summary["n"] == 300 and [r["label"] for r in res.records] == y.tolist()
    assert certify(model, x, BoundsConfig(eps=0.02)).summary is None  # no labels, no accuracy
    ds = certify(model, TensorDataset(x, y), BoundsConfig(eps=0.02))  # a map-style Dataset works too
    assert [r["certified"] for r in ds.records] == [r["certified"] for r in res.records]
    from trustlab.runtime import DataError

    with pytest.raises(DataError, match="cannot read a dict"):
        certify(model, {"x": 1}, BoundsConfig())
    labelled = certify(model, x, BoundsConfig(eps=0.02), y=y, certifier="crown-ibp")
    assert labelled.certifier == "crown-ibp" and labelled.summary["clean_acc"] >= 0.9
    assert labelled.summary["abstain_rate"] == pytest.approx(labelled.abstain_rate)
    b = attack((x, y), AttackConfig(kind="max-entropy"), TriggerConfig(size=2), sigma=0.25)
    assert b.hook is not None and b.hook.sigma == 0.25 and len(b.x) == 300 and len(b.poison_idx) == 0
    with pytest.raises(ConfigError, match="does not take a BoundsConfig"):
        certify(model, x, BoundsConfig(), certifier="smoothing")


def test_defend_verb_fine_pruning_and_strip(digits_split):
    import torch

    from trustlab.certify.api import DefenceConfig, TrainConfig, defend, train
    from trustlab.models import mlp

    x, y = digits_split[0][:300], digits_split[1][:300]
    model = mlp((1, 8, 8), (32,), 10)
    train(model, (x, y), TrainConfig(epochs=8), seed=0)
    w0 = [p.detach().clone() for p in model.parameters()]
    res = defend("fine-pruning", model, DefenceConfig(fp_epochs=1, fp_max_drop=0.1), defender=(x[:80], y[:80]),
                 train_cfg=TrainConfig(epochs=8))
    assert res.applicable and res.model is not model and res.info["pruned_units"] >= 1
    assert all(torch.equal(a, b) for a, b in zip(w0, model.parameters()))  # the user's model is untouched
    strip = defend("strip", model, DefenceConfig(strip_n=5), defender=(x[:80], y[:80]))
    lo, hi = strip.info["both"]
    assert strip.applicable and lo <= hi
    na = defend("spectral", model, defender=(x[:80], y[:80]), attack_kind="max-entropy")
    assert not na.applicable
    with pytest.raises(ConfigError, match="train_data"):
        defend("spectral", model, defender=(x[:80], y[:80]))

    class Wrapped(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x)

    from trustlab.runtime import ModelError

    with pytest.raises(ModelError, match="fine-pruning.*Wrapped"):
        defend("fine-pruning", Wrapped(model), defender=(x[:80], y[:80]))
    assert defend("strip", Wrapped(model), DefenceConfig(strip_n=5), defender=(x[:80], y[:80])).applicable


def test_smoothed_classifier_batch_equals_one_by_one():
    import torch

    from trustlab.certify.smoothing import SmoothCerts, SmoothedClassifier

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x = np.random.default_rng(0).random((5, 1, 4, 4)).astype(np.float32)
    g = SmoothedClassifier(model, 3, 0.5)
    batch = g.certify_batch(x, n0=20, n=200, alpha=0.01, batch=64, gen=3)
    assert isinstance(batch, SmoothCerts) and len(batch) == 5
    for i in range(5):
        assert batch[i] == g.certify(x[i], 20, 200, 0.01, batch=7, gen=3)
    assert batch.abstain_rate == np.mean(batch.pred == -1)


def test_selection_and_estimation_noise_streams_are_independent():
    """CERTIFY must not reuse the n0 selection draws for estimation: the two roles get different, uncorrelated
    noise for the same input (and the same role the same noise across calls)."""
    import torch

    from trustlab.certify.smoothing import count_classes

    seen: dict = {}

    class Recorder(torch.nn.Module):
        role = None

        def forward(self, x):
            seen.setdefault(self.role, []).append(x.reshape(len(x), -1).clone())
            return torch.zeros(len(x), 2)

    rec = Recorder()
    x0 = np.zeros((1, 1, 4, 4), np.float32)  # x = 0: the forwards see the noise itself
    for role in ("select", "estimate", "select"):
        rec.role = role if role not in seen else role + "-again"
        count_classes(rec, x0, [7], 300, role, sigma=1.0, K=2, run_seed=11, batch=1000)
    sel, est = torch.cat(seen["select"]), torch.cat(seen["estimate"])
    assert torch.equal(sel, torch.cat(seen["select-again"]))  # deterministic per (seed, idx, role)
    assert not torch.equal(sel, est)
    r = np.corrcoef(sel.flatten().numpy(), est.flatten().numpy())[0, 1]
    assert abs(r) < 4 / np.sqrt(sel.numel())  # 4 standard errors of a zero correlation
    assert abs(float(sel.std()) - 1.0) < 0.05 and abs(float(est.std()) - 1.0) < 0.05


def test_smoothing_radius_never_exceeds_the_true_distance_for_a_linear_classifier():
    """f(x) = 1[w.x + b > 0]: under N(0, sigma^2 I), p_A = Phi(|w.x + b| / (sigma ||w||)), so g's true robust radius
    is the distance |w.x + b| / ||w|| to the hyperplane; CERTIFY's radius sigma * Phi^-1(p_lower) may never exceed it
    (probability <= alpha per input) and p_lower never exceeds p_A."""
    import torch
    from scipy.stats import norm

    from trustlab.certify.smoothing import certify_inputs
    from trustlab.certify.config import SmoothingConfig

    rng = np.random.default_rng(1)
    w, b = rng.normal(size=16), -0.3

    class Linear(torch.nn.Module):
        def forward(self, x):
            z = x.reshape(len(x), -1).double() @ torch.as_tensor(w) + b
            return torch.stack([-z, z], 1)

    x = rng.random((40, 1, 4, 4)).astype(np.float32)
    sigma = 0.5
    cfg = SmoothingConfig(sigma=sigma, n0=50, n=2000, alpha=0.001)
    recs = certify_inputs(Linear(), x, cfg, seed=0, K=2)
    z = x.reshape(40, -1).astype(np.float64) @ w + b
    dist = np.abs(z) / np.linalg.norm(w)
    p_a = norm.cdf(dist / sigma)
    certified = [r for r in recs if r["pred"] != -1]
    assert len(certified) >= 20
    for r in recs:
        i = r["idx"]
        assert r["radius"] <= dist[i] + 1e-9, (i, r, dist[i])
        assert r["p_lower"] <= p_a[i] + 1e-12
        if r["pred"] != -1:
            assert r["pred"] == int(z[i] > 0)
    # and not vacuous: the certificates reach a good share of the true distance where p_A is not at the budget cap
    close = [r["radius"] / dist[r["idx"]] for r in certified if p_a[r["idx"]] < 0.99]
    assert close and np.median(close) > 0.5


def test_smoothing_adaptive_is_a_certifier_of_experiments_and_eval(tmp_path, cli, model_dir):
    from trustlab.certify.config import CERTIFIERS, Track

    assert "smoothing-adaptive" in CERTIFIERS
    Track(certifiers=("smoothing-adaptive",))  # accepted by the experiment config
    out = tmp_path / "ad"
    res = cli("eval", model_dir, "--certifier", "smoothing-adaptive", "--radius", "0.1", "--n", "2000",
              "--max-inputs", "12", "--inputs", "clean", "--out", out)
    assert res.code == 0, res
    lines = [json.loads(s) for s in (out / "smoothing-adaptive" / "clean.jsonl").read_text().splitlines()]
    head, recs = lines[0], lines[1:]
    assert head["settings"]["certifier"] == "smoothing-adaptive" and head["settings"]["radius"] == 0.1
    assert len(recs) == 12
    for r in recs:
        assert {"samples", "stop", "p_lower", "p_upper", "n_used"} <= set(r)
        assert r["stop"] in ("certify", "abstain", "budget") and r["samples"] <= 100 + 2000
        assert (r["pred"] != -1) == (r["stop"] == "certify")
        if r["stop"] == "certify":
            assert r["radius"] > 0.1
    summ = json.loads((out / "results.json").read_text())["by_inputs"]["clean_inputs"]
    assert summ["cost"]["n"] == 12 and summ["cost"]["forwards_mean"] < 2100


def test_eval_sigma_defaults_to_the_models_training_sigma(tmp_path, cli):
    res = cli("train", "--epochs", "1", "--hidden", "8", "--sigma", "0.4", "--out", tmp_path / "m")
    assert res.code == 0, res
    out = tmp_path / "e"
    res = cli("eval", tmp_path / "m" / "model", "--n", "50", "--n0", "10", "--max-inputs", "4", "--inputs", "clean",
              "--out", out)
    assert res.code == 0, res
    head = json.loads((out / "smoothing" / "clean.jsonl").read_text().splitlines()[0])
    assert head["settings"]["sigma"] == 0.4
    assert json.loads((out / "results.json").read_text())["params"]["sigma"] == 0.4


def test_every_certify_option_has_help_text():
    import typer

    from trustlab.certify.cli import app

    cmd = typer.main.get_command(app)
    missing = [f"{name} {p.opts[0]}" for name, sub in cmd.commands.items() for p in sub.params
               if not getattr(p, "help", None) and p.param_type_name == "option"]
    args = [f"{name} {p.name}" for name, sub in cmd.commands.items() for p in sub.params
            if p.param_type_name == "argument" and not getattr(p, "help", None)]
    assert not missing and not args, (missing, args)


def test_old_yaml_with_a_trigger_per_attack_is_read_as_the_experiment_trigger(tmp_path):
    from trustlab.certify.config import TriggerConfig, load_config

    p = tmp_path / "old.yaml"
    p.write_text("attacks:\n  - {kind: label-noise, trigger: {size: 2, position: tl}}\n"
                 "  - {kind: max-entropy, trigger: {size: 2, position: tl}}\n")
    cfg = load_config(p)
    assert cfg.trigger == TriggerConfig(size=2, position="tl")
    assert [a.kind for a in cfg.attacks] == ["label-noise", "max-entropy"]


def test_experiment_and_sweep_take_smoothing_adaptive(tmp_path):
    """A track certified by smoothing and smoothing-adaptive side by side (paired noise), through a 2-cell sweep."""
    from trustlab.certify.config import (AttackConfig, ExperimentConfig, ModelConfig, SmoothingConfig, Track,
                                         TrainConfig)
    from trustlab.certify.sweep import run_sweep

    track = Track(name="rs", model=ModelConfig(hidden=(16,)), certifiers=("smoothing", "smoothing-adaptive"),
                  train=TrainConfig(procedure="gaussian", epochs=3),
                  smoothing=SmoothingConfig(n0=20, n=300, target_radius=0.1))
    cfg = ExperimentConfig(name="ad", tracks=(track,), attacks=(AttackConfig(kind="max-entropy"),), max_test=10)
    run = run_sweep(cfg, {"smoothing.sigma": [0.25, 0.5]}, tmp_path / "sw", log=lambda *a: None)
    cells = json.loads((run / "results.json").read_text())["cells"]
    assert [c["values"]["smoothing.sigma"] for c in cells] == [0.25, 0.5]
    for c in cells:
        cell = run / c["dir"]
        res = json.loads((cell / "results.json").read_text())["certifiers"]["rs"]
        sigma = c["values"]["smoothing.sigma"]
        assert res["smoothing-adaptive"]["params"]["sigma"] == sigma
        for m in ("clean", "max-entropy"):
            ad = res["smoothing-adaptive"]["by_model"][m]["triggered_inputs"]
            assert ad["n"] == 10 and ad["cost"]["forwards_max"] <= 20 + 300
            assert abs(sum(ad["cost"]["stops"].values()) - 1) < 1e-9
            head, *recs = (cell / "seed0" / "rs" / m / "smoothing-adaptive" / "triggered.jsonl").read_text().splitlines()
            assert json.loads(head)["settings"]["sigma"] == sigma
            for r in map(json.loads, recs):
                assert r["stop"] in ("certify", "abstain", "budget") and r["samples"] == 20 + r["n_used"]
        eff = res["smoothing-adaptive"]["attack_effect"]["max-entropy"]
        costs = [res["smoothing-adaptive"]["by_model"][m]["triggered_inputs"]["cost"] for m in ("clean", "max-entropy")]
        for k in ("mean", "p95"):  # the attack's compute inflation on triggered inputs, against the clean model's
            assert eff["cost_inflation"][k] == pytest.approx(costs[1][f"forwards_{k}"] / costs[0][f"forwards_{k}"])
        assert "cost_inflation" not in res["smoothing"]["attack_effect"]["max-entropy"]  # fixed N: nothing to inflate


def test_certify_modules_have_no_import_cycles():
    """Issue 10: experiment <-> plots and defences/__init__ <-> its submodules were cycles; every import inside the
    lab (top-level or inside a function) now points one way."""
    import ast

    root = Path(__file__).resolve().parents[2] / "src" / "trustlab" / "certify"
    mods = {}
    for f in root.rglob("*.py"):
        rel = f.relative_to(root).with_suffix("")
        mods[".".join(p for p in rel.parts if p != "__init__") or "certify"] = f
    graph: dict = {m: set() for m in mods}
    for name, f in mods.items():
        pkg = name.split(".")[:-1] if not f.name == "__init__.py" else name.split(".") if name != "certify" else []
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = pkg[:len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
                for alias in node.names:
                    full = f"{target}.{alias.name}" if target else alias.name
                    hit = full if full in mods else (target or "certify")
                    if hit in mods and hit != name:
                        graph[name].add(hit)
    seen, stack = set(), []

    def visit(m):
        if m in stack:
            raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(m):] + [m])}")
        if m in seen:
            return
        stack.append(m)
        for n in graph[m]:
            visit(n)
        stack.pop()
        seen.add(m)

    for m in graph:
        visit(m)
    assert "defences.base" in graph["defences.spectral"] and "experiment" not in graph["plots"]


def test_sweeps_reach_the_experiment_trigger_and_the_adaptive_radius():
    from trustlab.certify.config import ExperimentConfig
    from trustlab.certify.sweep import apply_grid_key

    c = apply_grid_key(ExperimentConfig(), "trigger.size", 2.0)  # --grid values parse as floats
    assert c.trigger.size == 2 and isinstance(c.trigger.size, int)
    assert apply_grid_key(c, "smoothing.target_radius", 0.5).tracks[0].smoothing.target_radius == 0.5
    with pytest.raises(ConfigError, match="'attack.trigger.size': the trigger moved"):
        apply_grid_key(c, "attack.trigger.size", 2)  # the trigger left the attacks


def test_attack_b_knobs_reach_the_hook_and_bad_values_are_refused():
    """gamma (per-draw entropy weight) and mu (IBP hinge margin) are config fields that reach MaxEntropyHook."""
    from trustlab.certify.api import attack
    from trustlab.certify.config import AttackConfig
    from trustlab.runtime import ConfigError

    x, y = np.zeros((20, 1, 8, 8), np.float32), np.arange(20) % 10
    rs = attack((x, y), AttackConfig(kind="max-entropy", gamma=0.5, draws=4), K=10, sigma=0.25).hook
    assert (rs.gamma, rs.draws, rs.mu) == (0.5, 4, 0.0)  # mu is moot under noise
    ibp = attack((x, y), AttackConfig(kind="max-entropy", mu=2.0), K=10, sigma=0.0).hook
    assert (ibp.mu, ibp.gamma) == (2.0, 0.0)
    for bad in ({"gamma": 1.0}, {"gamma": -0.1}, {"mu": -1.0}):
        with pytest.raises(ConfigError, match=f"attack.{next(iter(bad))}"):
            AttackConfig(kind="max-entropy", **bad)
