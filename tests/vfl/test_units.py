"""Unit tests: hash layer, class codes, packing, defences, metrics, schedule, partition, alignment."""

import math

import numpy as np
import pytest
import torch

from trustlab.runtime import ConfigError, DataError
from trustlab.vfl import codes as C
from trustlab.vfl.config import load_config, with_
from trustlab.vfl.defences import Defence, clip_rows, laplace, noise_generator, sparsify
from trustlab.vfl.metrics import dcs, detection_auroc, psnr, recon_ap, recon_metrics, ssim, ssim_win, bit_balance
from trustlab.vfl.models import HashHead, sign_ste
from trustlab.vfl.schedule import lr_at


def test_sign_zero_is_plus_one_and_identity_ste():
    v = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], requires_grad=True)
    h = sign_ste(v, "identity")
    assert h.tolist() == [-1, -1, 1, 1, 1]
    h.backward(torch.arange(5.0))
    assert v.grad.tolist() == [0, 1, 2, 3, 4]


def test_clipped_ste_zeroes_large_inputs():
    v = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.5], requires_grad=True)
    sign_ste(v, "clipped").backward(torch.ones(5))
    assert v.grad.tolist() == [0, 1, 1, 1, 0]


def test_hash_head_bn_is_affine_and_balances_bits():
    head = HashHead(16)
    assert head.bn.affine and head.bn.weight.requires_grad
    g = torch.Generator().manual_seed(0)
    v = torch.randn(512, 16, generator=g) + 3.0  # all positive before BN
    h = head.train()(v)
    assert set(h.unique().tolist()) <= {-1.0, 1.0}
    assert abs(h.mean().item()) < 0.1


def test_bernoulli_codes_distinct_and_minimum_L():
    codes = C.class_codes(10, 4, "bernoulli", seed=3)
    assert codes.shape == (10, 4) and len(np.unique(codes, axis=0)) == 10
    assert set(np.unique(codes)) == {-1, 1}
    with pytest.raises(ConfigError, match="at least 4"):
        C.class_codes(10, 3, "bernoulli")


def test_hadamard_codes_balanced_orthogonal():
    codes = C.class_codes(10, 16, "hadamard", seed=1).astype(int)
    assert (codes.sum(1) == 0).all()  # balanced
    gram = codes @ codes.T
    assert (gram[~np.eye(10, dtype=bool)] == 0).all() and (np.diag(gram) == 16).all()
    assert C.min_hamming(codes) == 8
    with pytest.raises(ConfigError, match="power of 2"):
        C.class_codes(10, 12, "hadamard")
    with pytest.raises(ConfigError, match=">= 10"):
        C.class_codes(10, 8, "hadamard")
    with pytest.warns(UserWarning):
        C.class_codes(4, 4, "hadamard")


def test_hamming_equals_L_times_one_minus_cos_over_two():
    rng = np.random.default_rng(0)
    a, b = np.where(rng.random((50, 16)) < .5, 1, -1), np.where(rng.random((50, 16)) < .5, 1, -1)
    cos = (a * b).sum(1) / 16
    d = C.hamming_packed(C.pack_bits(a), C.pack_bits(b))
    assert np.array_equal(d, (a != b).sum(1))
    assert np.allclose(C.hamming_from_cos(cos, 16), d)


@pytest.mark.parametrize("L", [4, 12, 16])
def test_pack_unpack_roundtrip(L):
    rng = np.random.default_rng(L)
    h = np.where(rng.random((7, L)) < .5, 1.0, -1.0).astype(np.float32)
    b = C.pack_bits(h)
    assert b.shape == (7, (L + 7) // 8) and b.dtype == np.uint8
    assert np.array_equal(C.unpack_bits(b, L), h)
    if L % 8:
        bad = b.copy()
        bad[0, -1] |= 1  # a padding bit
        with pytest.raises(ValueError, match="padding"):
            C.unpack_bits(bad, L)


@pytest.mark.parametrize("L", [4, 12, 16])
def test_wire_payload_of_a_step_reply_and_its_roundtrip(L):
    """What a party actually puts on the wire for a batch: the payload of the encoded step reply is
    n*ceil(L/8) bytes for hash (32x less than float32 when 8 | L) and A decodes exactly Sign(BN(f(x)))."""
    from types import SimpleNamespace

    from trustlab.vfl import protocol as P
    from trustlab.vfl.party import FeatureParty

    n = 64
    v = torch.randn(n, L, generator=torch.Generator().manual_seed(L))
    v[0, 0] = 0.0  # Sign(0) = +1 must survive packing
    sizes = {}
    for kind in ("hash", "none"):
        wire = FeatureParty._wire(SimpleNamespace(defence=Defence(kind, L, 0)), sign_ste(v) if kind == "hash" else v)
        head = {"type": "step", "party": 0, "epoch": 0, "step": 1}
        data = P.encode(head, {"msg": wire})
        sizes[kind] = len(data) - 4 - int.from_bytes(data[:4], "little")  # bytes after the JSON header
        got = P.validate_message(P.decode(data, 0)[1], 0, Defence(kind, L, 0).wire, L, n)
        want = torch.where(v >= 0, 1.0, -1.0) if kind == "hash" else v
        assert np.array_equal(got, want.numpy())
    assert sizes["hash"] == n * math.ceil(L / 8) and sizes["none"] == 4 * L * n
    if L % 8 == 0:
        assert sizes["none"] == 32 * sizes["hash"]


def test_clip_laplace_gsparse_and_seeded_noise():
    v = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    assert torch.allclose(clip_rows(v, 1.0), torch.tensor([[0.6, 0.8], [0.3, 0.4]]))
    x = laplace((200000,), 0.5, torch.Generator().manual_seed(0))
    assert abs(x.abs().mean().item() - 0.5) < 0.01  # E|Laplace(0,b)| = b
    a = noise_generator(0, 1, "train", 2, 3)
    b = noise_generator(0, 1, "train", 2, 3)
    assert torch.equal(torch.randn(5, generator=a), torch.randn(5, generator=b))
    g = torch.randn(100, 16, generator=torch.Generator().manual_seed(1))
    kept = sparsify(g, 0.99)
    assert (kept != 0).sum().item() == 16  # top 1% of 1600 entries
    d = Defence("gsparse", 16, 0, sparsity=0.99)
    out = d.grad(g, 0)
    assert torch.allclose(out + d.residual[0], g)  # nothing is lost: the zeroed part is carried over
    out2 = d.grad(g, 0)
    assert torch.allclose(out2 + d.residual[0], g + (g - out))


def test_metrics_known_values():
    assert psnr(0.01) == pytest.approx(20.0)
    x = np.random.default_rng(0).random((4, 32))
    assert ssim(x, x, (1, 8, 4)) == pytest.approx(1.0)
    assert ssim_win((1, 8, 4)) == 3 and ssim_win((1, 28, 28)) == 7 and ssim_win((1, 2, 8)) is None
    m = recon_metrics(x, x + 0.1, (1, 8, 4))
    assert m["mse"] == pytest.approx(0.01) and m["psnr"] == pytest.approx(20.0)
    assert dcs(0.0, 0.9, 0.9) == 1.0
    assert dcs(1.0, 0.9, 0.9, 0.5) == pytest.approx(1 / (1 + math.sqrt(0.5)))
    assert dcs(0.6, 0.8, 0.9, 0.5) == pytest.approx(1 / (1 + math.sqrt(0.5 * 0.36 + 0.5 * 0.01)))
    assert recon_ap(0.02, 0.04) == 0.5 and recon_ap(0.08, 0.04) == 0.0
    det = detection_auroc(np.array([0, 1, 2.0]), np.array([3, 4, 5.0]), np.array([0, 1, 2.0]))
    assert det["auroc"] == 1.0 and det["tpr"] == 1.0


def test_tabular_metrics_score_onehot_groups():
    x = np.array([[0.5, 1, 0, 0], [-1.0, 0, 0, 1]])
    xr = np.array([[0.0, 0.9, 0.1, 0], [-1.0, 0.6, 0, 0.4]])
    m = recon_metrics(x, xr, None, ((1, 2, 3),))
    assert m["mse"] == pytest.approx(0.125) and m["onehot_acc"] == 0.5


def test_bit_balance():
    h = np.array([[1, 1], [1, -1], [1, 1], [1, -1]])
    codes = np.array([[1, 1], [1, -1]])
    b = bit_balance(h, codes, np.array([0, 1, 1, 1]))
    assert b["max_abs_mu"] == 1.0 and b["mean_abs_mu"] == 0.5
    assert b["frac_equal_oy"] == 0.75 and b["unique_codes"] == 2


def test_lr_schedule_is_pure():
    assert lr_at(0, 0.01, (45,), 0.1) == 0.01
    assert lr_at(45, 0.01, (45,), 0.1) == pytest.approx(0.001)
    assert lr_at(25, 1e-3, (10, 20), 0.1) == pytest.approx(1e-5)


def test_bad_configs():
    for sec, vals, msg in [("train", {"batch_size": 1}, "batch_size"), ("defence", {"noise_scale": -1}, "noise_scale"),
                           ("defence", {"sparsity": 1.0}, "sparsity"), ("defence", {"epsilon": 0}, "epsilon"),
                           ("data", {"ratios": (0.5, 0.6)}, "sum to 1"), ("defence", {"kind": "dp"}, "defence.kind")]:
        with pytest.raises(ConfigError, match=msg):
            load_config(None, {sec: vals})


def test_unknown_yaml_key(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match="epochz"):
        load_config(p)
