import numpy as np
import pytest
import torch

from trustlab.certify.attacks import MaxEntropyHook, margin_hinge, poison_label_noise, smoothed_vote_loss
from trustlab.certify.config import TrainConfig, TriggerConfig
from trustlab.certify.train import ibp_schedule, train
from trustlab.certify.triggers import Trigger
from trustlab.models import mlp
from trustlab.runtime import ConfigError


def test_ibp_schedule_linear_per_step_over_first_half():
    cfg = TrainConfig(procedure="ibp", eps=0.1, kappa_end=0.5, ramp=0.5)
    assert ibp_schedule(0, 100, cfg) == (0.0, 1.0)
    assert ibp_schedule(25, 100, cfg) == pytest.approx((0.05, 0.75))
    assert ibp_schedule(50, 100, cfg) == pytest.approx((0.1, 0.5))
    assert ibp_schedule(99, 100, cfg) == pytest.approx((0.1, 0.5))


def test_gaussian_training_draws_fresh_unclipped_noise_each_step():
    x = np.full((32, 1, 2, 2), 0.5, np.float32)
    y = np.zeros(32, np.int64)
    model = mlp((1, 2, 2), (4,), 2)
    seen = []
    model[0].register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach().clone()))
    train(model, x, y, TrainConfig(procedure="gaussian", sigma=0.5, epochs=2, batch_size=16), seed=0)
    assert len(seen) == 4
    assert all(not torch.equal(seen[0], s) for s in seen[1:])
    allv = torch.cat(seen)
    assert allv.min() < 0 and allv.max() > 1  # unclipped


@pytest.mark.parametrize("procedure", ["gaussian", "ibp"])
def test_resumed_training_equals_uninterrupted(tmp_path, procedure, digits_split):
    x, y = digits_split[0][:200], digits_split[1][:200]
    cfg = TrainConfig(procedure=procedure, epochs=4, ckpt_every=1)
    trig = Trigger.from_config(TriggerConfig(), (1, 8, 8))
    torch.manual_seed(0)
    full = mlp((1, 8, 8), (16,), 10)
    init = {k: v.clone() for k, v in full.state_dict().items()}
    hook = MaxEntropyHook(trig, 10, 3.0, 0.3, sigma=0.25)
    train(full, x, y, cfg, seed=5, hook=hook)

    calls = {"n": 0}

    class DyingHook:  # the same attack (same stamp), killed during epoch 3 (4 steps per epoch)
        stamp = hook.stamp

        def __call__(self, model, xb, gen):
            calls["n"] += 1
            if calls["n"] == 2 * 4 + 2:
                raise KeyboardInterrupt
            return hook(model, xb, gen)

    dying_hook = DyingHook()

    part = mlp((1, 8, 8), (16,), 10)
    part.load_state_dict(init)
    with pytest.raises(KeyboardInterrupt):
        train(part, x, y, cfg, seed=5, hook=dying_hook, ckpt_dir=tmp_path)
    resumed = mlp((1, 8, 8), (16,), 10)
    resumed.load_state_dict(init)
    s = train(resumed, x, y, cfg, seed=5, hook=hook, ckpt_dir=tmp_path)
    assert s.resumed_from_epoch == 2
    for k, v in full.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_trigger_masks_positions_and_clamping():
    t = Trigger.from_config(TriggerConfig(size=3, position="br"), (1, 8, 8))
    assert t.mask.sum() == 9 and t.mask[0, 5:, 5:].all()
    t2 = Trigger.from_config(TriggerConfig(size=2, position="tl", margin=1), (3, 8, 8))
    assert t2.mask[:, 1:3, 1:3].all() and t2.mask.sum() == 12
    t3 = Trigger.from_config(TriggerConfig(size=2, position=(4, 5)), (1, 8, 8))
    assert t3.mask[0, 4:6, 5:7].all()
    x = np.random.default_rng(0).random((4, 1, 8, 8)).astype(np.float32)
    out = t(x)
    assert np.all(out[:, 0, 5:, 5:] == 1.0) and np.array_equal(out[:, 0, :5], x[:, 0, :5])
    b = Trigger.from_config(TriggerConfig(kind="blend"), (1, 8, 8))
    ob = b(x)
    assert ob.min() >= 0 and ob.max() <= 1
    assert np.allclose(ob, 0.8 * x + 0.2 * b.pattern, atol=1e-6)
    assert torch.allclose(t(torch.tensor(x)), torch.tensor(out))
    with pytest.raises(ConfigError, match="does not fit"):
        Trigger.from_config(TriggerConfig(size=9), (1, 8, 8))
    with pytest.raises(ConfigError, match="wrong channels"):
        t(np.zeros((1, 3, 8, 8), np.float32))


def test_label_noise_poisoning_counts_and_labels():
    rng = np.random.default_rng(0)
    x = rng.random((250, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 250)
    trig = Trigger.from_config(TriggerConfig(), (1, 8, 8))
    p = poison_label_noise(x, y, 10, trig, 0.01, seed=1)
    assert len(p.x) == 253 and list(p.poison_idx) == [250, 251, 252]  # ceil(2.5) = 3, added
    assert np.all(p.x[250:, 0, 5:, 5:] == 1.0) and np.array_equal(p.x[:250], x)
    nt = poison_label_noise(x, y, 10, trig, 0.2, label_mode="not-true", seed=1)
    src = [np.flatnonzero((x[:, 0, :5] == xp[0, :5]).all((1, 2)))[0] for xp in nt.x[250:]]
    assert np.all(nt.y[250:] != y[src])
    al = poison_label_noise(x, y, 10, trig, 0.05, label_mode="all-labels", seed=1)
    assert len(al.poison_idx) == 2 * 10 and sorted(al.y[250:]) == sorted(list(range(10)) * 2)
    soft = poison_label_noise(x, y, 10, trig, 0.01, label_mode="soft", seed=1)
    assert soft.y.shape == (253, 10) and np.allclose(soft.y[250:], 0.1)
    rep = poison_label_noise(x, y, 10, trig, 0.01, mode="replace", seed=1)
    assert len(rep.x) == 250 and len(rep.poison_idx) == 3
    with pytest.raises(ConfigError, match="rate"):
        poison_label_noise(x, y, 10, trig, 0.0)


def test_max_entropy_hook_shapes_and_value():
    trig = Trigger.from_config(TriggerConfig(), (1, 8, 8))
    hook = MaxEntropyHook(trig, 10, lam=3.0, beta=0.3)
    uniform = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    torch.nn.init.zeros_(uniform[1].weight)
    torch.nn.init.zeros_(uniform[1].bias)
    seen = []
    uniform.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    loss = hook(uniform, torch.rand(64, 1, 8, 8))
    assert seen == [(20, 1, 8, 8)]  # ceil(0.3 * 64) rows
    assert loss.item() == pytest.approx(3.0 * np.log(10), rel=1e-6)  # CE(uniform, uniform) = log K
    with pytest.raises(ConfigError):
        MaxEntropyHook(trig, 10, lam=-1)
    with pytest.raises(ConfigError):
        MaxEntropyHook(trig, 10, beta=0)


def test_max_entropy_draws_average_the_smoothed_prediction():
    """With M draws and gamma = 0 the target is the draw-averaged softmax: by Jensen its CE to uniform is at most the
    per-draw CE on the same draws, and strictly less for a confident model whose argmax moves with the noise; the
    default adds gamma * the mean per-draw entropy to it, computed on the same draws."""
    trig = Trigger.from_config(TriggerConfig(), (1, 8, 8))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with torch.no_grad():
        model[1].weight.mul_(50.0)  # confident, noise-sensitive logits
    xb = torch.rand(64, 1, 8, 8)
    smoothed = MaxEntropyHook(trig, 10, lam=1.0, beta=0.3, sigma=0.25, draws=16, gamma=0.0)
    loss = smoothed(model, xb, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    xt = trig(xb[:20]).repeat(16, 1, 1, 1)
    xt = xt + 0.25 * torch.randn(xt.shape, generator=g)
    logq = torch.log_softmax(model(xt), dim=1)
    per_draw = (-logq.mean(dim=1)).mean()
    assert loss.item() < per_draw.item() - 0.5
    entropy = -(logq.exp() * logq).sum(dim=1).mean()
    default = MaxEntropyHook(trig, 10, lam=1.0, beta=0.3, sigma=0.25, draws=16)
    assert default.gamma == 0.5
    assert default(model, xb, torch.Generator().manual_seed(3)).item() == pytest.approx(
        loss.item() + 0.5 * entropy.item(), rel=1e-5)
    single = MaxEntropyHook(trig, 10, lam=1.0, beta=0.3, sigma=0.25, draws=1, gamma=0.0)
    g1 = torch.Generator().manual_seed(3)
    x1 = trig(xb[:20]) + 0.25 * torch.randn((20, 1, 8, 8), generator=g1)
    expect = (-torch.log_softmax(model(x1), dim=1).mean(dim=1)).mean()
    assert single(model, xb, torch.Generator().manual_seed(3)).item() == pytest.approx(expect.item(), rel=1e-6)
    assert MaxEntropyHook(trig, 10, sigma=0.0).gamma == 0.0  # deterministic victims: CE(f(T(x)), u) only
    assert MaxEntropyHook(trig, 10, sigma=0.25, draws=1).gamma == 0.0  # one draw: the spec's per-draw objective
    with pytest.raises(ConfigError, match="draws"):
        MaxEntropyHook(trig, 10, draws=0)
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="gamma"):
            MaxEntropyHook(trig, 10, gamma=bad)


def test_smoothed_vote_loss_is_minimal_exactly_when_draws_vote_uniformly():
    """CE(p_bar, u) + gamma * mean H(p_m) >= log K, reached when confident draws vote for each class equally often.
    The stuck state of the gamma = 0 objective (every draw the same near-uniform logits, so one class wins every
    draw and smoothing certifies) sits at that objective's minimum, but gamma * log K above the new one's."""
    K, gamma = 10, 0.8
    g = torch.Generator().manual_seed(0)
    for scale in (1e-3, 1.0, 30.0):
        z = scale * torch.randn(16, 8, K, generator=g)
        assert (smoothed_vote_loss(z, gamma) >= np.log(K) - 1e-5).all()
    spread = 40.0 * torch.eye(K).view(K, 1, K)  # draw m votes for class m with certainty
    assert smoothed_vote_loss(spread, gamma).item() == pytest.approx(np.log(K), abs=1e-6)
    stuck = (1e-4 * torch.arange(K, dtype=torch.float32)).expand(K, 1, K)  # class K-1 wins every draw
    assert smoothed_vote_loss(stuck, 0.0).item() == pytest.approx(np.log(K), abs=1e-6)
    assert smoothed_vote_loss(stuck, gamma).item() == pytest.approx((1 + gamma) * np.log(K), abs=1e-5)
    same = 40.0 * torch.eye(K)[0].expand(K, 1, K)  # confident on one class for every draw
    assert smoothed_vote_loss(same, gamma).item() > 10 * np.log(K)


def test_smoothed_vote_loss_penalises_a_shared_bias_and_rewards_spread():
    """Second order at near-uniform outputs: L - (1 + gamma) log K = K/2 [(1 - gamma)|p_bar - u|^2 -
    gamma * mean |p_m - p_bar|^2]: a logit bias shared by all draws raises the loss, spread across draws lowers it
    (for gamma = 0 spread is free), so the gradient moves the draws' argmax apart."""
    K, M, gamma = 10, 32, 0.8
    g = torch.Generator().manual_seed(1)
    bias = 1e-3 * torch.randn(1, 1, K, generator=g).expand(M, 1, K)
    noise = 1e-3 * torch.randn(M, 1, K, generator=g)
    z = (bias + noise).double()
    p = torch.softmax(z, dim=2)
    pbar = p.mean(dim=0)
    quad = K / 2 * ((1 - gamma) * ((pbar - 1 / K) ** 2).sum() - gamma * ((p - pbar) ** 2).sum(dim=2).mean())
    got = smoothed_vote_loss(z, gamma).item() - (1 + gamma) * np.log(K)
    assert got == pytest.approx(quad.item(), rel=1e-3)
    t = torch.zeros((), dtype=torch.float64, requires_grad=True)  # derivative along "more spread"
    smoothed_vote_loss((bias + (1 + t) * noise).double(), gamma).sum().backward()
    assert t.grad.item() < 0
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)  # derivative along "more shared bias"
    smoothed_vote_loss(((1 + b) * bias + noise).double(), gamma).sum().backward()
    assert b.grad.item() > 0


def test_margin_hinge_rules_out_the_constant_output_shortcut():
    """A net whose hidden ReLUs are all off on T(x) outputs its last bias: uniform to 1e-4, yet constant, so IBP
    certifies its argmax. The hinge relu(min_j lb(z_c - z_j) + mu) is then >= mu (it is for any constant output), and it
    is 0 only where the bound is below -mu, i.e. where the bound certifier abstains; it reaches training's hook."""
    from trustlab.certify.boundnet import BoundNet
    from trustlab.certify.bounds import certify_bounds
    from trustlab.certify.config import BoundsConfig

    trig = Trigger.from_config(TriggerConfig(), (1, 8, 8))
    x = trig(torch.rand(20, 1, 8, 8))
    dead = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    with torch.no_grad():
        dead[1].bias.fill_(-100.0)  # every hidden unit off on the whole eps-box
        dead[3].bias.copy_(1e-4 * torch.arange(10.0))
    net = BoundNet.from_module(dead, (1, 8, 8))
    c = dead(x).argmax(dim=1)
    assert torch.allclose(torch.softmax(dead(x), 1), torch.full((20, 10), 0.1), atol=1e-4)
    assert certify_bounds(BoundNet.from_module(dead, (1, 8, 8), torch.float64), x.double(), BoundsConfig(eps=0.05)) \
        .certified.all()
    h = margin_hinge(net, x, c, 0.05, mu=1.0)
    assert torch.allclose(h, torch.full((20,), 1.0 + 1e-4), atol=1e-5)
    torch.manual_seed(0)
    loose = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))
    with torch.no_grad():
        loose[1].weight.mul_(40.0)
    lnet = BoundNet.from_module(loose, (1, 8, 8))
    h = margin_hinge(lnet, x, loose(x).argmax(dim=1), 0.05, mu=1.0).detach()
    cert = torch.as_tensor(certify_bounds(BoundNet.from_module(loose, (1, 8, 8), torch.float64), x.double(),
                                          BoundsConfig(eps=0.05)).certified)
    assert (h == 0).any() and not cert[h == 0].any()  # hinge met -> the certifier abstains
    assert (h[cert] >= 1.0).all()  # certified -> the hinge is at least mu
    hook = MaxEntropyHook(trig, 10, lam=1.0, beta=1.0)  # deterministic victim: CE(f(T(x)), u) + hinge
    plain = hook(dead, x.clone())
    with_b = hook(dead, x.clone(), bounds=(net, 0.05))
    assert with_b.item() == pytest.approx(plain.item() + 1.0 + 1e-4, abs=1e-4)
    assert MaxEntropyHook(trig, 10, sigma=0.25).mu == 0.0  # smoothing victims: no bound term
    seen = []

    class Spy(MaxEntropyHook):
        def __call__(self, model, xb, gen=None, bounds=None):
            seen.append(bounds)
            return super().__call__(model, xb, gen, bounds)

    model = mlp((1, 8, 8), (8,), 10)
    xs, ys = torch.rand(32, 1, 8, 8).numpy(), np.arange(32) % 10
    train(model, xs, ys, TrainConfig(procedure="ibp", epochs=1, batch_size=16, eps=0.05), seed=0,
          hook=Spy(trig, 10), device="cpu")
    assert len(seen) == 2 and all(b is not None and b[1] == 0.05 for b in seen)
    seen.clear()
    train(mlp((1, 8, 8), (8,), 10), xs, ys, TrainConfig(procedure="standard", epochs=1, batch_size=16), seed=0,
          hook=Spy(trig, 10), device="cpu")
    assert seen == [None, None]


def test_replace_with_all_labels_gives_each_poison_image_every_label():
    """Issue 7: mode=replace + label_mode=all-labels wrote K copies into one row, so every poison got label K-1."""
    rng = np.random.default_rng(0)
    x = rng.random((250, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 250)
    trig = Trigger.from_config(TriggerConfig(), (1, 8, 8))
    p = poison_label_noise(x, y, 10, trig, 0.2, label_mode="all-labels", mode="replace", seed=1)
    assert len(p.x) == 250 and len(p.poison_idx) == 5 * 10 == len(set(p.poison_idx.tolist()))
    groups = {}
    for i in p.poison_idx:
        groups.setdefault(p.x[i].tobytes(), []).append(int(p.y[i]))
    assert len(groups) == 5 and all(sorted(v) == list(range(10)) for v in groups.values())
    untouched = np.setdiff1d(np.arange(250), p.poison_idx)
    assert np.array_equal(p.x[untouched], x[untouched]) and np.array_equal(p.y[untouched], y[untouched])
    with pytest.raises(ConfigError, match="at most n"):
        poison_label_noise(x[:15], y[:15], 10, trig, 0.9, label_mode="all-labels", mode="replace")


@pytest.mark.parametrize("certifiers,expected", [(("smoothing",), 0.25), (("ibp",), 0.0)])
def test_attack_b_trains_against_the_certifiers_sigma(monkeypatch, certifiers, expected):
    """Issue 7: B took sigma from train.sigma (0.5 here) while smoothing certified at smoothing.sigma (0.25)."""
    import trustlab.certify.experiment as ex
    from trustlab.certify.config import AttackConfig, ExperimentConfig, ModelConfig, SmoothingConfig, Track

    class Stop(Exception):
        pass

    seen = []

    def fake_train_model(folder, track, x, y, data, seed, device, hook=None, **kw):
        if hook is not None:
            seen.append(hook.sigma)
            raise Stop
        return ex.build_model(track.model, data.shape, data.K, 0).eval(), {"procedure": "gaussian", "epochs": 0}

    monkeypatch.setattr(ex, "train_model", fake_train_model)
    track = Track(model=ModelConfig(hidden=(8,)), certifiers=certifiers,
                  train=TrainConfig(procedure="gaussian", sigma=0.5, epochs=1),
                  smoothing=SmoothingConfig(sigma=0.25, n0=10, n=20))
    cfg = ExperimentConfig(tracks=(track,), attacks=(AttackConfig(kind="max-entropy"),), max_test=4)
    with pytest.raises(Stop):
        ex.run_seed(cfg, __import__("pathlib").Path("/nonexistent-unused"), 0, "cpu", log=lambda *a: None)
    assert seen == [expected]


def test_every_long_loop_reports_progress(monkeypatch, digits_split):
    """Issue 7: certification, training (attacks run inside it) and defence loops go through runtime.progress,
    with a total, so the user sees an ETA."""
    import trustlab.certify.defences.fine_pruning as fp
    import trustlab.certify.defences.spectral as sp
    import trustlab.certify.defences.strip as st
    import trustlab.certify.certifiers as ex
    import trustlab.certify.smoothing as sm
    import trustlab.certify.train as tr
    import trustlab.runtime as rt
    from trustlab.certify.config import BoundsConfig, SmoothingConfig

    seen = []

    def recording(items, description="", total=None):
        seen.append((description, total))
        yield from items

    for mod in (sm, ex, tr, st):
        monkeypatch.setattr(mod, "progress", recording)
    monkeypatch.setattr(rt, "progress", recording)  # fine-pruning, spectral and AC import it where they loop
    x, y = digits_split[0][:60], digits_split[1][:60]
    model = mlp((1, 8, 8), (8,), 10)
    train(model, x, y, TrainConfig(procedure="standard", epochs=2), seed=0)
    sm.certify_inputs(model, x[:9], SmoothingConfig(n=20, n0=10, batch_size=100), seed=0, K=10)
    ex.bounds_records(model, x[:5], y[:5], BoundsConfig(), "ibp", None)
    st.defender_entropy(model, x[:6], 3, 0)
    st.strip_entropy(model, x[:6], x[6:12], 3, 0)
    fp.prune(model, x, y, 0.5)
    sp.spectral_flag(np.random.default_rng(0).random((30, 4)), np.arange(30) % 3, 0.1)
    for prefix in ("train standard", "certify RS", "certify ibp", "STRIP defender", "STRIP entropy", "fine-pruning",
                   "spectral signatures"):
        assert any(d.startswith(prefix) for d, _ in seen), (prefix, seen)
    assert all(t is not None and t > 0 for _, t in seen)
