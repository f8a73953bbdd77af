import re

import numpy as np
import pytest
import torch
import torch.nn as nn

from trustlab.certify.boundnet import BoundNet, UnsupportedLayerError, normalize_module
from trustlab.certify.bounds import certify_bounds, ibp_logit_bounds, margin_lower_bound
from trustlab.certify.config import BoundsConfig
from trustlab.models import mlp, small_cnn

METHODS = ("ibp", "crown-ibp", "crown", "best")


def _margins(out, target):
    m = out.gather(1, target[:, None]) - out
    return m.masked_fill(nn.functional.one_hot(target, out.shape[1]).bool(), float("inf"))


def _sampled_min(net, x, eps, target, n=1000):
    lo, hi = net.input_box(x, eps)
    g = torch.Generator().manual_seed(0)
    best = torch.full((len(x), net.K), float("inf"), dtype=x.dtype)
    for _ in range(n // 100):
        u = torch.rand((100, *x.shape), generator=g, dtype=x.dtype)
        u[:10] = (u[:10] > 0.5).to(x.dtype)  # some box corners
        z = (lo + (hi - lo) * u).reshape(-1, *x.shape[1:])
        m = _margins(net.forward(z), target.repeat(100)).reshape(100, len(x), -1)
        best = torch.minimum(best, m.min(0).values)
    return best


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_all_methods_sound_against_sampled_perturbations(kind):
    torch.manual_seed(1)
    model = mlp((1, 6, 6), (20, 20), 5) if kind == "mlp" else small_cnn((1, 6, 6), 5, channels=(4, 6), hidden=12)
    net = BoundNet.from_module(model, (1, 6, 6), dtype=torch.float64)
    x = torch.rand(6, 1, 6, 6, dtype=torch.float64)
    target = net.forward(x).argmax(1)
    sampled = _sampled_min(net, x, 0.05, target)
    for method in METHODS:
        lb = margin_lower_bound(net, x, 0.05, target, method)
        assert (lb <= sampled + 1e-12).all(), method
        assert torch.isfinite(lb).sum() == len(x) * 4


def test_ibp_centre_radius_equals_lower_upper_form_and_folding_is_tighter():
    torch.manual_seed(2)
    model = mlp((1, 3, 3), (7, 7), 4)
    net = BoundNet.from_module(model, (1, 3, 3), dtype=torch.float64)
    x = torch.rand(5, 1, 3, 3, dtype=torch.float64)
    eps = 0.1
    lo, hi = (x - eps).clamp(0, 1).reshape(5, -1), (x + eps).clamp(0, 1).reshape(5, -1)
    lins = [m for m in model if isinstance(m, nn.Linear)]
    for i, lin in enumerate(lins):  # textbook W+ l + W- u interval arithmetic
        W, b = lin.weight.double().detach(), lin.bias.double().detach()
        Wp, Wn = W.clamp_min(0), W.clamp_max(0)
        lo, hi = lo @ Wp.T + hi @ Wn.T + b, hi @ Wp.T + lo @ Wn.T + b
        if i < len(lins) - 1:
            h_lo, h_hi = lo.clamp_min(0), hi.clamp_min(0)
            lo, hi = h_lo, h_hi
    l, u = ibp_logit_bounds(net, *net.input_box(x, eps))
    assert torch.allclose(l, lo, atol=1e-9) and torch.allclose(u, hi, atol=1e-9)
    target = net.forward(x).argmax(1)
    folded = margin_lower_bound(net, x, eps, target, "ibp")
    diff = l.gather(1, target[:, None]) - u
    mask = torch.isfinite(folded)
    assert (folded[mask] >= diff[mask] - 1e-12).all()
    assert (folded[mask] > diff[mask] + 1e-9).any()


def test_crown_exact_when_all_relus_are_stable():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        model[1].weight.uniform_(-0.1, 0.1)
        model[1].bias.fill_(5.0)  # every hidden unit active on the whole box
    net = BoundNet.from_module(model, (1, 2, 2), dtype=torch.float64)
    x = torch.rand(4, 1, 2, 2, dtype=torch.float64)
    target = net.forward(x).argmax(1)
    eps = 0.2
    lo, hi = net.input_box(x, eps)
    W = model[3].weight.double().detach() @ model[1].weight.double().detach()
    for b in range(len(x)):
        A = W[target[b]] - W  # margins are affine: A x + const
        const = net.forward(x[b:b + 1]) - (x[b].reshape(-1) @ W.T)
        c = const[0, target[b]] - const[0]
        mid, rad = ((hi[b] + lo[b]) / 2).reshape(-1), ((hi[b] - lo[b]) / 2).reshape(-1)
        exact = A @ mid - A.abs() @ rad + c
        for method in ("crown", "crown-ibp"):
            lb = margin_lower_bound(net, x[b:b + 1], eps, target[b:b + 1], method)[0]
            keep = torch.isfinite(lb)
            assert torch.allclose(lb[keep], exact[keep], atol=1e-9)


def _milp_min_margin(model, x, eps, c, j):
    """Exact min of z_c - z_j over the clipped box by a big-M MILP (scipy.optimize.milp)."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    lins = [m for m in model if isinstance(m, nn.Linear)]
    x = x.reshape(-1).double()
    lo, hi = (x - eps).clamp(0, 1).numpy(), (x + eps).clamp(0, 1).numpy()
    var_lo, var_hi, integ = list(lo), list(hi), [0] * len(lo)
    rows, rlo, rhi = [], [], []
    prev = list(range(len(lo)))
    plo, phi = lo, hi
    for lin in lins[:-1]:
        W, b = lin.weight.double().detach().numpy(), lin.bias.double().detach().numpy()
        zl = np.clip(W, 0, None) @ plo + np.clip(W, None, 0) @ phi + b
        zu = np.clip(W, 0, None) @ phi + np.clip(W, None, 0) @ plo + b
        cur = []
        for k in range(len(b)):
            n = len(var_lo)
            a_i, d_i = n, n + 1
            var_lo += [0.0, 0.0]
            var_hi += [max(zu[k], 0.0), 1.0]
            integ += [0, 1]

            def row(coefs):
                r = {}
                for i, v in coefs:
                    r[i] = r.get(i, 0.0) + v
                return r
            zcoef = [(p, W[k, q]) for q, p in enumerate(prev)]
            # a >= z  ->  a - Wx >= b
            rows.append(row([(a_i, 1.0)] + [(p, -v) for p, v in zcoef])); rlo.append(b[k]); rhi.append(np.inf)
            # a <= z - l(1-d)  ->  a - Wx - l d <= b - l
            rows.append(row([(a_i, 1.0)] + [(p, -v) for p, v in zcoef] + [(d_i, -zl[k])]))
            rlo.append(-np.inf); rhi.append(b[k] - zl[k])
            # a <= u d
            rows.append(row([(a_i, 1.0), (d_i, -max(zu[k], 0.0))])); rlo.append(-np.inf); rhi.append(0.0)
            cur.append(a_i)
        prev = cur
        plo, phi = np.clip(zl, 0, None), np.clip(zu, 0, None)
    W, b = lins[-1].weight.double().detach().numpy(), lins[-1].bias.double().detach().numpy()
    nv = len(var_lo)
    obj = np.zeros(nv)
    obj[prev] = W[c] - W[j]
    A = np.zeros((len(rows), nv))
    for r, coefs in enumerate(rows):
        for i, v in coefs.items():
            A[r, i] = v
    res = milp(obj, constraints=LinearConstraint(A, rlo, rhi), integrality=np.array(integ),
               bounds=Bounds(np.array(var_lo), np.array(var_hi)))
    assert res.success
    return res.fun + b[c] - b[j]


def test_all_methods_below_exact_milp_minimum_and_eps0_is_the_margin():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    net = BoundNet.from_module(model, (1, 2, 2), dtype=torch.float64)
    x = torch.rand(3, 1, 2, 2, dtype=torch.float64)
    target = net.forward(x).argmax(1)
    sampled = _sampled_min(net, x, 0.15, target, n=2000)
    for b in range(len(x)):
        for j in range(3):
            if j == target[b]:
                continue
            exact = _milp_min_margin(model, x[b], 0.15, int(target[b]), j)
            assert exact <= sampled[b, j] + 1e-7
            for method in METHODS:
                assert margin_lower_bound(net, x[b:b + 1], 0.15, target[b:b + 1], method)[0, j] <= exact + 1e-7
    out = net.forward(x)
    for method in METHODS:
        lb = margin_lower_bound(net, x, 0.0, target, method)
        keep = torch.isfinite(lb)
        assert torch.allclose(lb[keep], _margins(out, target)[keep], atol=1e-10)


def test_conv_equals_dense():
    torch.manual_seed(5)
    cnn = small_cnn((1, 6, 6), 4, channels=(3, 4), hidden=8)
    net = BoundNet.from_module(cnn, (1, 6, 6), dtype=torch.float64)
    # the same net with every conv written out as a dense matrix
    layers, shape = [nn.Flatten()], (1, 6, 6)
    for m in cnn:
        if isinstance(m, nn.Conv2d):
            n_in = int(np.prod(shape))
            basis = torch.eye(n_in).reshape(n_in, *shape)
            with torch.no_grad():
                cols = nn.functional.conv2d(basis, m.weight, None, m.stride, m.padding)
            shape = tuple(cols.shape[1:])
            dense = nn.Linear(n_in, cols[0].numel())
            with torch.no_grad():
                dense.weight.copy_(cols.reshape(n_in, -1).T)
                dense.bias.copy_(m.bias.repeat_interleave(shape[1] * shape[2]))
            layers.append(dense)
        elif isinstance(m, nn.Flatten):
            continue
        else:
            layers.append(m)
    dense_net = BoundNet.from_module(nn.Sequential(*layers), (1, 6, 6), dtype=torch.float64)
    x = torch.rand(3, 1, 6, 6, dtype=torch.float64)
    assert torch.allclose(net.forward(x), dense_net.forward(x), atol=1e-9)
    target = net.forward(x).argmax(1)
    for method in METHODS:
        a = margin_lower_bound(net, x, 0.03, target, method)
        b = margin_lower_bound(dense_net, x, 0.03, target, method)
        keep = torch.isfinite(a)
        assert torch.allclose(a[keep], b[keep], atol=1e-8), method


def test_batchnorm_and_normalize_are_folded():
    torch.manual_seed(6)
    model = nn.Sequential(normalize_module([0.3], [0.2]), nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                          nn.Flatten(), nn.Linear(48, 10), nn.BatchNorm1d(10), nn.ReLU(), nn.Dropout(0.5),
                          nn.Identity(), nn.Linear(10, 3))
    for bn in (model[2], model[6]):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        nn.init.uniform_(bn.weight, 0.5, 1.5)
    model.eval()
    net = BoundNet.from_module(model, (1, 4, 4), dtype=torch.float64)
    x = torch.rand(4, 1, 4, 4, dtype=torch.float64)
    assert torch.allclose(net.forward(x), model.double()(x), atol=1e-9)
    target = net.forward(x).argmax(1)
    sampled = _sampled_min(net, x, 0.02, target)
    for method in METHODS:
        assert (margin_lower_bound(net, x, 0.02, target, method) <= sampled + 1e-12).all()


def test_unsupported_layer_and_certify_bounds():
    with pytest.raises(UnsupportedLayerError, match=r"layer 2 \('2'\): Tanh is not supported.*supported: Linear, "
                                                    r"Conv2d.*ReLU") as exc:
        BoundNet.from_module(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 2)), (1, 2, 2))
    assert "--certifier smoothing" in exc.value.hint and "nn.Sequential" in exc.value.hint

    class Custom(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(UnsupportedLayerError):
        BoundNet.from_module(Custom(), (1, 2, 2))
    torch.manual_seed(7)
    model = mlp((1, 3, 3), (8,), 3)
    net = BoundNet.from_module(model, (1, 3, 3), dtype=torch.float64)
    x = np.random.default_rng(0).random((5, 1, 3, 3))
    c0 = certify_bounds(net, x, BoundsConfig(eps=0.0))
    assert c0.certified.all()  # eps = 0: the predicted class always has a positive margin (no exact ties)
    c1 = certify_bounds(net, x, BoundsConfig(eps=1.0))
    assert not c1.certified.any() and (c1.pred == c0.pred).all()


def _vision_net(dtype=torch.float32):
    """A residual-free torchvision-style net: nested Sequential blocks, BatchNorm, pooling, Dropout, Flatten."""
    torch.manual_seed(3)
    block = lambda cin, cout: nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())  # noqa: E731
    net = nn.Sequential(
        nn.Sequential(block(1, 4), nn.AvgPool2d(2)),
        nn.Sequential(block(4, 6), nn.AdaptiveAvgPool2d((2, 2))),
        nn.Flatten(), nn.Dropout(0.5), nn.Sequential(nn.Linear(24, 10), nn.BatchNorm1d(10), nn.ReLU()),
        nn.Linear(10, 3)).to(dtype)
    net.train()
    with torch.no_grad():  # non-trivial running statistics, as after training
        for _ in range(3):
            net(torch.rand(16, 1, 8, 8, dtype=dtype))
    return net.eval()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torchvision_style_blocks_are_read_and_bounds_stay_sound(dtype):
    model = _vision_net(dtype)  # float64 modules are probed in float64 (they failed before)
    net = BoundNet.from_module(model, (1, 8, 8), dtype=torch.float64)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        ref = model.double()(x)
    assert torch.allclose(net.forward(x), ref, atol=1e-9)  # pools, folded BN and identity Dropout are exact
    target = ref.argmax(1)
    sampled = _sampled_min(net, x, 0.02, target)
    for method in METHODS:
        lb = margin_lower_bound(net, x, 0.02, target, method)
        assert (lb <= sampled + 1e-9).all(), method
        assert torch.allclose(margin_lower_bound(net, x, 0.0, target, method), _margins(ref, target))


@pytest.mark.parametrize("layer,named", [(nn.MaxPool2d(2), "MaxPool2d"), (nn.Conv2d(1, 2, 3, groups=1, dilation=2),
                                                                          "Conv2d(groups=1, dilation=(2, 2)")])
def test_unsupported_layers_are_named_with_their_path(layer, named):
    model = nn.Sequential(nn.Sequential(nn.Conv2d(1, 1, 1), layer), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(UnsupportedLayerError, match=rf"layer 1 \('0.1'\): {re.escape(named)}"):
        BoundNet.from_module(model, (1, 8, 8))


def test_crown_ibp_training_mixes_the_bounds_with_beta_ramped_to_zero():
    from trustlab.certify.bounds import crown_ibp_ce, crown_margin, ibp_margin, spec_matrix
    from trustlab.certify.config import TrainConfig
    from trustlab.certify.train import crown_ibp_beta, train

    cfg = TrainConfig(procedure="crown-ibp", ramp=0.5)
    assert [crown_ibp_beta(s, 100, cfg) for s in (0, 25, 50, 80)] == [1.0, 0.5, 0.0, 0.0]
    torch.manual_seed(0)
    model = mlp((1, 3, 3), (8,), 3)
    net = BoundNet.from_module(model, (1, 3, 3))
    x, y = torch.rand(7, 1, 3, 3), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    lo, hi = net.input_box(x, 0.05)
    C = spec_matrix(y, 3, x)
    mixed = 0.3 * crown_margin(net, lo, hi, C, "ibp") + 0.7 * ibp_margin(net, lo, hi, C)
    assert torch.allclose(crown_ibp_ce(net, x, y, 0.05, 0.3), nn.functional.cross_entropy(-mixed, y))
    assert torch.allclose(crown_ibp_ce(net, x, y, 0.05, 0.0),
                          nn.functional.cross_entropy(-ibp_margin(net, lo, hi, C), y))
    # the CROWN part is differentiated through (beta = 1 and beta = 0 give different gradients)
    grads = []
    for beta in (1.0, 0.0):
        model.zero_grad()
        crown_ibp_ce(net, x, y, 0.05, beta).backward()
        grads.append(model[-1].weight.grad.clone())
    assert not torch.allclose(grads[0], grads[1])
    # as a training procedure it lowers the robust loss it targets, compared with standard training from the same init
    g = torch.Generator().manual_seed(0)
    yt = torch.randint(0, 2, (200,), generator=g)
    xt = (0.35 + 0.3 * yt[:, None, None, None] + 0.1 * torch.randn(200, 1, 3, 3, generator=g)).clamp(0, 1)
    torch.manual_seed(1)
    plain, robust = mlp((1, 3, 3), (16,), 2), mlp((1, 3, 3), (16,), 2)
    robust.load_state_dict(plain.state_dict())
    train(plain, xt.numpy(), yt.numpy(), TrainConfig(procedure="standard", epochs=30, lr=3e-3), seed=0)
    train(robust, xt.numpy(), yt.numpy(), TrainConfig(procedure="crown-ibp", eps=0.12, epochs=30, lr=3e-3), seed=0)
    with torch.no_grad():
        loss = {n: float(crown_ibp_ce(BoundNet.from_module(m, (1, 3, 3)), xt, yt, 0.12, 0.0))
                for n, m in (("plain", plain), ("robust", robust))}
    acc = float((robust(xt).argmax(1) == yt).float().mean())
    assert loss["robust"] < loss["plain"] and acc >= 0.95, (loss, acc)


def test_lirpa_agrees_with_our_bounds_when_importable():
    from trustlab.certify.lirpa import LirpaUnavailable, import_lirpa, lirpa_margin_bounds

    try:
        import_lirpa()
    except LirpaUnavailable as exc:
        assert exc.exit_code == 3 and "pip install" in exc.hint
        with pytest.raises(LirpaUnavailable):  # the adapter itself errors the same way (exit 3), before any work
            lirpa_margin_bounds(mlp((1, 3, 3), (4,), 2), torch.zeros(1, 1, 3, 3), 0.1)
        pytest.skip(f"auto_LiRPA is not importable here: {exc.reason}")
    torch.manual_seed(0)
    model = mlp((1, 3, 3), (8, 8), 3).double()
    x = torch.rand(4, 1, 3, 3, dtype=torch.float64)
    net = BoundNet.from_module(model, (1, 3, 3), dtype=torch.float64)
    target = net.forward(x).argmax(1)
    for method in ("ibp", "crown-ibp", "crown"):
        ours = margin_lower_bound(net, x, 0.05, target, method)
        theirs = lirpa_margin_bounds(model, x, 0.05, method, target=target)
        fin = torch.isfinite(ours)
        assert torch.allclose(ours[fin], theirs[fin].to(ours.dtype), atol=1e-5), method
