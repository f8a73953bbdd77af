import numpy as np
import pytest
import torch
import torch.nn as nn

from trustlab.certify import ABSTAIN
from trustlab.certify.config import SmoothingConfig
from trustlab.certify.smoothing import SmoothedClassifier, certify_inputs
from trustlab.certify.stats import CertifyWarning, max_radius
from trustlab.runtime import ModelError


class Const(nn.Module):
    def forward(self, x):
        out = torch.zeros(len(x), 3)
        out[:, 1] = 1.0
        return out


class Sign(nn.Module):
    """Class 0 if x[0] < 0 else class 1."""

    def forward(self, x):
        v = x.reshape(len(x), -1)[:, :1]
        return torch.cat([-v, v], 1)


def test_constant_model_certifies_at_max_radius():
    cert = SmoothedClassifier(Const(), 3, 0.5).certify(np.zeros((1, 2, 2), np.float32), 100, 1000, 0.001)
    assert cert.pred == 1 and cert.n_a == 1000
    assert cert.radius == pytest.approx(max_radius(1000, 0.001, 0.5), abs=1e-9)


def test_sign_model_abstains_on_the_boundary():
    sc = SmoothedClassifier(Sign(), 2, 0.25)
    assert sc.certify(np.zeros((1, 1, 1), np.float32), 100, 1000, 0.001).pred == ABSTAIN
    assert sc.certify(np.full((1, 1, 1), 2.0, np.float32), 100, 1000, 0.001).pred == 1


def test_predict_with_n_10_abstains_and_warns():
    with pytest.warns(CertifyWarning):
        assert SmoothedClassifier(Const(), 3, 0.25).predict(np.zeros((1, 2, 2), np.float32), 10, 0.001) == ABSTAIN
    assert SmoothedClassifier(Const(), 3, 0.25).predict(np.zeros((1, 2, 2), np.float32), 11, 0.001) == 1


@pytest.fixture(scope="module")
def net_and_x():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    x = np.random.default_rng(0).random((12, 1, 4, 4)).astype(np.float32)
    return m, x


def test_same_seed_identical_across_batch_shard_and_resume(net_and_x, tmp_path):
    m, x = net_and_x
    base = certify_inputs(m, x, SmoothingConfig(n=700, n0=50, batch_size=1000, predict=True), seed=3, K=4)
    abst = [r["pred"] == ABSTAIN for r in base]
    assert 0 < sum(abst) < len(base)  # a mix of decisions, so the comparison means something
    for b in (1, 7):
        assert certify_inputs(m, x, SmoothingConfig(n=700, n0=50, batch_size=b, predict=True), seed=3, K=4) == base
    shards = [certify_inputs(m, x, SmoothingConfig(n=700, n0=50, predict=True), seed=3, K=4, shard=(r, 3))
              for r in range(3)]
    assert sorted(sum(shards, []), key=lambda r: r["idx"]) == base
    # an interrupted run: the stamp line, 5 finished records and a truncated 6th line, then resume
    path = tmp_path / "rs.jsonl"
    certify_inputs(m, x, SmoothingConfig(n=700, n0=50, predict=True), seed=3, K=4, records=path)
    text = path.read_text().splitlines(keepends=True)
    path.write_text("".join(text[:6]) + text[6][:17])
    resumed = certify_inputs(m, x, SmoothingConfig(n=700, n0=50, predict=True), seed=3, K=4, records=path)
    assert resumed == base
    assert len(path.read_text().splitlines()) == 1 + len(x)
    other = certify_inputs(m, x, SmoothingConfig(n=700, n0=50, predict=True), seed=4, K=4)
    assert other != base


def test_bad_logits_raise_model_error_with_idx(net_and_x):
    _, x = net_and_x

    class Bad(nn.Module):
        def forward(self, z):
            out = torch.zeros(len(z), 4)
            out[:, 0] = float("nan")
            return out

    with pytest.raises(ModelError, match="idx 0"):
        certify_inputs(Bad(), x[:2], SmoothingConfig(n=20, n0=10), seed=0, K=4)
    with pytest.raises(ModelError, match=r"expected \("):
        certify_inputs(Const(), x[:2], SmoothingConfig(n=20, n0=10), seed=0, K=4)


def test_train_mode_is_restored(net_and_x):
    m, x = net_and_x
    m.train()
    certify_inputs(m, x[:1], SmoothingConfig(n=20, n0=10), seed=0, K=4)
    assert m.training


class Recorder(nn.Module):
    """Constant class 0; remembers every batch it sees."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        return torch.zeros(len(x), 2)


def test_smoothed_classifier_gives_each_input_its_own_deterministic_noise():
    """Issue 7: without an idx every input used stream 0, i.e. the same noise."""
    from trustlab.certify.budget import forward_rate

    x1, x2 = np.zeros((1, 2, 2), np.float32), np.full((1, 2, 2), 0.5, np.float32)
    forward_rate(Recorder(), (1, 2, 2), 1000)  # the budget probe is measured once per architecture, not here
    noise = []
    for x in (x1, x2, x1):
        rec = Recorder()
        SmoothedClassifier(rec, 2, 0.25).certify(x, 10, 20, 0.001)
        noise.append(torch.cat(rec.seen) - torch.as_tensor(x))
    assert not torch.allclose(noise[0], noise[1])
    assert torch.equal(noise[0], noise[2])
    # an explicit idx still names the stream, as certify_inputs does
    a, b = Recorder(), Recorder()
    SmoothedClassifier(a, 2, 0.25).certify(x1, 10, 20, 0.001, idx=3)
    SmoothedClassifier(b, 2, 0.25).certify(x2, 10, 20, 0.001, idx=3)
    assert torch.allclose(torch.cat(a.seen) - torch.as_tensor(x1), torch.cat(b.seen) - torch.as_tensor(x2), atol=1e-6)


@pytest.mark.parametrize("call,name", [
    (lambda: SmoothedClassifier(Const(), 3, -0.25), "sigma"),
    (lambda: SmoothedClassifier(Const(), 3, 0.0), "sigma"),
    (lambda: SmoothedClassifier(Const(), 3, float("nan")), "sigma"),
    (lambda: SmoothedClassifier(Const(), 1, 0.25), "K"),
    (lambda: SmoothedClassifier(Const(), 3, 0.25).certify(np.zeros((1, 2, 2)), 0, 100, 0.001), "n0"),
    (lambda: SmoothedClassifier(Const(), 3, 0.25).certify(np.zeros((1, 2, 2)), 10, 0, 0.001), "n"),
    (lambda: SmoothedClassifier(Const(), 3, 0.25).certify(np.zeros((1, 2, 2)), 10, 100, 0.0), "alpha"),
    (lambda: SmoothedClassifier(Const(), 3, 0.25).certify(np.zeros((1, 2, 2)), 10, 100, 1.0), "alpha"),
    (lambda: SmoothedClassifier(Const(), 3, 0.25).certify(np.zeros((1, 2, 2)), 10, 100, float("nan")), "alpha"),
    (lambda: SmoothedClassifier(Const(), 3, 0.25).predict(np.zeros((1, 2, 2)), 0, 0.001), "n"),
])
def test_smoothed_classifier_refuses_bad_parameters(call, name):
    from trustlab.runtime import ConfigError

    with pytest.raises(ConfigError, match=rf"^{name} must") as exc:
        call()
    assert exc.value.hint


def test_smoothed_classifier_refuses_nan_inputs():
    from trustlab.runtime import DataError

    with pytest.raises(DataError, match="NaN"):
        SmoothedClassifier(Const(), 3, 0.25).certify(np.full((1, 2, 2), np.nan, np.float32), 10, 100, 0.001)


def test_absurd_budget_is_refused_up_front_with_the_estimate(net_and_x):
    """Issue 7: N = 10^12 used to run for years (and build a list of 2e9 noise blocks) with no word."""
    import time

    from trustlab.runtime import ConfigError

    m, x = net_and_x
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"would take about .*(years|days)") as exc:
        certify_inputs(m, x, SmoothingConfig(n=10**12, n0=100), seed=0, K=4)
    assert time.perf_counter() - t0 < 30
    assert "smoothing.n" in exc.value.hint and "smoothing.max_hours" in exc.value.hint
    # a budget within the limit runs; the limit is a setting
    assert len(certify_inputs(m, x[:2], SmoothingConfig(n=50, n0=10), seed=0, K=4)) == 2
    with pytest.raises(ConfigError, match="limit is 1e-06 h"):
        certify_inputs(m, x, SmoothingConfig(n=10**6, n0=10, max_hours=1e-6), seed=0, K=4)
    with pytest.raises(ConfigError, match="would take about") as exc:
        SmoothedClassifier(m, 4, 0.25).certify(x[0], 100, 10**13, 0.001)
    assert "lower n" in exc.value.hint
    with pytest.raises(ConfigError, match="would take about"):
        SmoothedClassifier(m, 4, 0.25).predict(x[0], 10**13, 0.001)


def _stream_counts(m, x, i, draws, role, sigma, K, seed):
    """Counts from the documented noise stream, built by hand: block b of NOISE_BLOCK rows drawn by torch.randn from
    a generator seeded with block_seed(seed, i, role, b), then argmax f(x + sigma * z) over all rows at once."""
    from trustlab.certify.smoothing import NOISE_BLOCK, block_seed

    sizes = [NOISE_BLOCK] * (draws // NOISE_BLOCK) + ([draws % NOISE_BLOCK] if draws % NOISE_BLOCK else [])
    z = torch.cat([torch.randn((s, *x.shape), generator=torch.Generator().manual_seed(block_seed(seed, i, role, b)))
                   for b, s in enumerate(sizes)])
    with torch.no_grad():
        pred = m(torch.as_tensor(x) + z * sigma).argmax(1)
    return np.bincount(pred.numpy(), minlength=K)


@pytest.mark.parametrize("draws,batch", [(2300, 1000), (2300, 7), (2300, 4096), (150, 1000), (150, 64)])
def test_counts_follow_the_documented_stream_for_any_batch(net_and_x, draws, batch):
    """count_classes = the hand-built stream whatever the packing: blocks crossing forwards (batch 7, 1000), several
    blocks and inputs per forward (4096; 150 < batch), inputs split across forwards (150 at 64)."""
    from trustlab.certify.smoothing import count_classes

    m, x = net_and_x
    idx = [5, 0, 11, 3]
    got = count_classes(m, x[:4], idx, draws, "estimate", sigma=0.5, K=4, run_seed=9, batch=batch)
    want = np.stack([_stream_counts(m, x[j], i, draws, "estimate", 0.5, 4, 9) for j, i in enumerate(idx)])
    assert (got == want).all()
    assert (got.sum(1) == draws).all()
    # two streams counted in one pass (CERTIFY's selection + estimation) = each stream alone
    from trustlab.certify.smoothing import count_streams

    sel, est = count_streams(m, x[:4], idx, (("select", 130), ("estimate", draws)), sigma=0.5, K=4, run_seed=9,
                             batch=batch)
    assert (est == want).all()
    assert (sel == np.stack([_stream_counts(m, x[j], i, 130, "select", 0.5, 4, 9) for j, i in enumerate(idx)])).all()


def test_non_finite_logits_name_the_input_inside_a_packed_forward():
    class NanOn(nn.Module):  # NaN logits only for the input whose first pixel is 0.5
        def forward(self, z):
            out = torch.zeros(len(z), 2)
            out[(z.reshape(len(z), -1)[:, 1] - 0.5).abs() < 1e-6] = float("nan")
            return out

    from trustlab.certify.smoothing import count_classes

    x = np.zeros((3, 1, 1, 2), np.float32)
    x[2, 0, 0, 1] = 0.5
    with pytest.raises(ModelError, match="idx 42"):
        count_classes(NanOn(), x, [40, 41, 42], 20, "select", sigma=1e-9, K=2, run_seed=0, batch=1000)


def test_ties_go_to_the_lowest_class_and_only_nan_or_plus_inf_logits_are_refused():
    class Fixed(nn.Module):  # the same logits for every row: classes 1 and 3 tie at the top, class 0 is -inf
        def __init__(self, top):
            super().__init__()
            self.top = top

        def forward(self, z):
            return torch.tensor([float("-inf"), self.top, 0.0, self.top]).expand(len(z), 4).clone()

    from trustlab.certify.smoothing import count_classes

    x = np.zeros((2, 1, 1, 2), np.float32)
    counts = count_classes(Fixed(2.0), x, [0, 1], 1500, "predict", sigma=0.5, K=4, run_seed=0, batch=512)
    assert (counts[:, 1] == 1500).all() and counts.sum() == 3000  # first maximum, as argmax
    for bad in (float("inf"), float("nan")):
        with pytest.raises(ModelError, match="non-finite logits.*idx 7"):
            count_classes(Fixed(bad), x[:1], [7], 100, "predict", sigma=0.5, K=4, run_seed=0, batch=512)


def test_default_bound_is_clopper_pearson_and_records_say_so(net_and_x):
    from trustlab.certify.stats import cp_lower

    m, x = net_and_x
    assert SmoothingConfig().bound == "clopper-pearson"
    recs = certify_inputs(m, x, SmoothingConfig(n=700, n0=50), seed=3, K=4)
    assert all(r["bound"] == "clopper-pearson" for r in recs)
    assert all(r["p_lower"] == pytest.approx(cp_lower(r["n_a"], 700, 0.001), abs=1e-12) for r in recs)


def test_randomized_cp_is_deterministic_never_weaker_and_stamped(net_and_x, tmp_path):
    from trustlab.runtime import ConfigError

    m, x = net_and_x
    cfg = SmoothingConfig(n=700, n0=50, bound="randomized-cp")
    base = certify_inputs(m, x, cfg, seed=3, K=4)
    cp = certify_inputs(m, x, SmoothingConfig(n=700, n0=50), seed=3, K=4)
    assert all(r["bound"] == "randomized-cp" for r in base)
    assert [r["n_a"] for r in base] == [r["n_a"] for r in cp]  # same draws, only the bound differs
    assert all(r["p_lower"] >= c["p_lower"] - 1e-12 for r, c in zip(base, cp))
    assert sum(r["p_lower"] > c["p_lower"] + 1e-6 for r, c in zip(base, cp)) >= len(x) // 2
    assert all(np.isfinite(r["radius"]) for r in base)
    for b in (1, 7):
        assert certify_inputs(m, x, SmoothingConfig(n=700, n0=50, batch_size=b, bound="randomized-cp"), seed=3,
                              K=4) == base
    assert certify_inputs(m, x[::-1].copy(), cfg, seed=3, K=4, idx=np.arange(len(x))[::-1]) == base
    shards = [certify_inputs(m, x, cfg, seed=3, K=4, shard=(r, 2)) for r in range(2)]
    assert sorted(sum(shards, []), key=lambda r: r["idx"]) == base
    path = tmp_path / "rcp.jsonl"
    certify_inputs(m, x, cfg, seed=3, K=4, records=path)
    text = path.read_text().splitlines(keepends=True)
    path.write_text("".join(text[:4]))
    assert certify_inputs(m, x, cfg, seed=3, K=4, records=path) == base
    # a resume under the other bound is refused, or discarded on request
    with pytest.raises(ConfigError):
        certify_inputs(m, x, SmoothingConfig(n=700, n0=50), seed=3, K=4, records=path)
    assert certify_inputs(m, x, SmoothingConfig(n=700, n0=50), seed=3, K=4, records=path, on_stale="discard") == cp
    with pytest.raises(ConfigError, match="smoothing.bound"):
        SmoothingConfig(bound="wilson")


def test_counts_follow_the_stream_for_rows_smaller_than_torchs_vector_width():
    """Rows of 3 values: torch draws them on its scalar path (which caches a second normal); re-seeding one
    generator per block must give what a fresh generator per block gives."""
    from trustlab.certify.smoothing import count_classes

    torch.manual_seed(1)
    m = nn.Sequential(nn.Flatten(), nn.Linear(3, 3))
    x = np.random.default_rng(1).random((3, 1, 1, 3)).astype(np.float32)
    for draws, batch in ((7, 5), (1003, 5), (1003, 1000)):
        got = count_classes(m, x, [0, 1, 2], draws, "predict", sigma=1.0, K=3, run_seed=2, batch=batch)
        want = np.stack([_stream_counts(m, x[i], i, draws, "predict", 1.0, 3, 2) for i in range(3)])
        assert (got == want).all()
