"""Reading a model for the deterministic certifiers: an ``nn.Sequential`` -> ``BoundNet``, a flat list of ops
(linear, conv, flatten, elementwise affine, relu) that each know their forward, interval and backward-substitution
step. BatchNorm folds its eval statistics, AvgPool becomes a conv, ``normalize_module`` an affine op; any other layer
is an ``UnsupportedLayerError`` (exit 2) naming it. The bounds themselves live in ``trustlab.certify.bounds``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trustlab.runtime import ModelError


SUPPORTED = ("Linear, Conv2d (groups 1, dilation 1, zero padding), ReLU, Flatten, BatchNorm1d/2d (folded, eval "
             "statistics), AvgPool2d, AdaptiveAvgPool2d (input size a multiple of the output), Dropout (identity), "
             "Identity, normalize_module, nested nn.Sequential")


class UnsupportedLayerError(ModelError):
    """A layer the bound propagation cannot handle (exit 2): names the layer and lists the supported ones."""

    def __init__(self, index: int, kind: str, name: str | None = None):
        where = f"layer {index}" + (f" ({name!r})" if name else "")
        super().__init__(f"{where}: {kind} is not supported by the deterministic certifiers; supported: {SUPPORTED}",
                         hint="certify it with --certifier smoothing (any module), or rewrite the model as an "
                              "nn.Sequential of the supported layers")
        self.index, self.kind, self.name = index, kind, name


def normalize_module(mean, std):
    """An ``nn.Module`` computing (x - mean) / std per channel; certifiers fold it as an affine layer."""
    import torch
    import torch.nn as nn

    class _Normalize(nn.Module):
        def __init__(self, mean, std):
            super().__init__()
            self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1))
            self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1))

        def forward(self, x):
            return (x - self.mean) / self.std

    return _Normalize(mean, std)


# --- ops ----------------------------------------------------------------------------------------------------------
@dataclass
class _Op:
    kind: str  # linear | conv | flatten | affine | relu
    in_shape: tuple
    out_shape: tuple
    w: Any = None
    b: Any = None
    stride: Any = None
    padding: Any = None
    out_pad: Any = None

    # forward on points
    def fwd(self, x):
        import torch.nn.functional as F

        if self.kind == "linear":
            return F.linear(x, self.w, self.b)
        if self.kind == "conv":
            return F.conv2d(x, self.w, self.b, self.stride, self.padding)
        if self.kind == "flatten":
            return x.reshape(x.shape[0], -1)
        if self.kind == "affine":
            return x * self.w + self.b
        return x.clamp_min(0)

    # interval (centre, radius)
    def ibp(self, mu, r):
        import torch.nn.functional as F

        if self.kind == "linear":
            return F.linear(mu, self.w, self.b), F.linear(r, self.w.abs())
        if self.kind == "conv":
            return F.conv2d(mu, self.w, self.b, self.stride, self.padding), F.conv2d(r, self.w.abs(), None,
                                                                                      self.stride, self.padding)
        if self.kind == "flatten":
            return mu.reshape(mu.shape[0], -1), r.reshape(r.shape[0], -1)
        if self.kind == "affine":
            return mu * self.w + self.b, r * self.w.abs()
        lo, hi = (mu - r).clamp_min(0), (mu + r).clamp_min(0)
        return (hi + lo) / 2, (hi - lo) / 2

    # backward substitution of a linear function lam . out  ->  lam' . in + const
    def back(self, lam):
        """lam: [B, M, *out_shape] -> (lam' [B, M, *in_shape], const [B, M])."""
        import torch.nn.functional as F

        B, M = lam.shape[:2]
        if self.kind == "linear":
            return lam @ self.w, lam @ self.b
        if self.kind == "conv":
            flat = lam.reshape(B * M, *self.out_shape)
            prev = F.conv_transpose2d(flat, self.w, None, self.stride, self.padding, self.out_pad)
            const = (lam.sum((-1, -2)) * self.b).sum(-1)
            return prev.reshape(B, M, *self.in_shape), const
        if self.kind == "flatten":
            return lam.reshape(B, M, *self.in_shape), lam.new_zeros(B, M)
        if self.kind == "affine":
            const = (lam * self.b).reshape(B, M, -1).sum(-1)
            return lam * self.w, const
        raise AssertionError("relu handled by the caller")


class BoundNet:
    """A Sequential net as a list of ops (Linear, Conv2d, ReLU, Flatten, elementwise affine for BatchNorm/Normalize).

    Built without ``dtype`` it references the module's live parameters (for IBP training); with ``dtype`` it holds
    detached copies (certify in float64)."""

    def __init__(self, ops: list[_Op], in_shape: tuple, K: int):
        self.ops, self.in_shape, self.K = ops, tuple(in_shape), K

    def __repr__(self) -> str:
        return f"BoundNet({' -> '.join(op.kind for op in self.ops)}; in {list(self.in_shape)}, K {self.K})"

    @classmethod
    def from_module(cls, model, shape, dtype=None) -> "BoundNet":
        """The ops of an ``nn.Sequential`` (nested ones flattened) for inputs of ``shape`` (C, H, W or d). Shapes are
        probed in the module's own dtype; BatchNorm folds its eval statistics; Dropout/Identity vanish. Any other
        layer (MaxPool, residual blocks, a custom forward) is an UnsupportedLayerError naming it."""
        import torch
        import torch.nn as nn

        from .torchutil import eval_mode, model_device, model_dtype

        if not isinstance(model, nn.Sequential):
            raise UnsupportedLayerError(0, f"a {type(model).__name__} with its own forward (only nn.Sequential "
                                           f"layers can be read)")
        mods = _flatten_sequential(model)
        dev, probe_dtype = model_device(model), model_dtype(model)
        cast = (lambda t: t.detach().to(dtype)) if dtype is not None else (lambda t: t)
        ops: list[_Op] = []
        cur = tuple(shape)
        for i, (name, m) in enumerate(mods):
            if isinstance(m, (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d)):
                continue
            if not isinstance(m, _READABLE) and type(m).__name__ != "_Normalize":
                raise UnsupportedLayerError(i, type(m).__name__, name)
            try:
                with eval_mode(m), torch.no_grad():
                    out = tuple(m(torch.zeros(1, *cur, device=dev, dtype=probe_dtype)).shape[1:])
            except RuntimeError as exc:
                from trustlab.runtime import ModelError

                raise ModelError(f"layer {i} ({name!r}, {type(m).__name__}) does not accept inputs of shape "
                                 f"{list(cur)}: {str(exc).splitlines()[0][:160]}",
                                 hint="check the input shape passed to BoundNet.from_module") from None
            ops += _ops_of(i, name, m, cur, out, cast, dev)
            cur = out
        if len(cur) != 1:
            raise UnsupportedLayerError(len(mods), f"an output of shape {list(cur)} (not (B, K) logits)")
        return cls(ops, shape, cur[0])

    @property
    def dtype(self):
        return next(op.w.dtype for op in self.ops if op.w is not None)

    def forward(self, x):
        for op in self.ops:
            x = op.fwd(x)
        return x

    def input_box(self, x, eps: float, clip=(0.0, 1.0)):
        lo = x - eps if clip is None else (x - eps).clamp_min(clip[0])
        hi = x + eps if clip is None else (x + eps).clamp_max(clip[1])
        return lo, hi


def _flatten_sequential(model, prefix: str = "") -> list:
    """[(dotted name, layer)] of a Sequential, nested Sequentials expanded in order."""
    import torch.nn as nn

    out = []
    for name, m in model.named_children():
        full = f"{prefix}{name}"
        out += _flatten_sequential(m, full + ".") if isinstance(m, nn.Sequential) else [(full, m)]
    return out


def _readable():
    import torch.nn as nn

    return (nn.Linear, nn.Conv2d, nn.ReLU, nn.Flatten, nn.BatchNorm1d, nn.BatchNorm2d, nn.AvgPool2d,
            nn.AdaptiveAvgPool2d)


class _Readable(type):
    def __instancecheck__(cls, obj):
        return isinstance(obj, _readable())


class _READABLE(metaclass=_Readable):
    """isinstance(m, _READABLE): a layer ``_ops_of`` can translate (torch imported lazily)."""


def _pool_conv(C: int, k: tuple, dev):
    """AvgPool as a conv: weight [C, C, kh, kw] with 1/(kh*kw) on the channel diagonal."""
    import torch

    w = torch.zeros(C, C, *k, device=dev)
    w[torch.arange(C), torch.arange(C)] = 1.0 / (k[0] * k[1])
    return w


def _ops_of(i: int, name: str, m, cur: tuple, out: tuple, cast, dev) -> list:
    import torch
    import torch.nn as nn
    from torch.nn.modules.utils import _pair

    def conv_op(w, b, s, p, k):
        op_pad = tuple(cur[1 + d] - ((out[1 + d] - 1) * s[d] - 2 * p[d] + k[d]) for d in range(2))
        return _Op("conv", cur, out, cast(w), cast(b), s, p, op_pad)

    if isinstance(m, nn.Linear):
        b = m.bias if m.bias is not None else torch.zeros(m.out_features, device=dev, dtype=m.weight.dtype)
        return [_Op("linear", cur, out, cast(m.weight), cast(b))]
    if isinstance(m, nn.Conv2d):
        if m.groups != 1 or m.dilation not in ((1, 1), 1) or m.padding_mode != "zeros" or isinstance(m.padding, str):
            raise UnsupportedLayerError(i, f"Conv2d(groups={m.groups}, dilation={m.dilation}, padding={m.padding!r}, "
                                           f"padding_mode={m.padding_mode})", name)
        b = m.bias if m.bias is not None else torch.zeros(m.out_channels, device=dev, dtype=m.weight.dtype)
        return [conv_op(m.weight, b, m.stride, m.padding, m.kernel_size)]
    if isinstance(m, nn.ReLU):
        return [_Op("relu", cur, out)]
    if isinstance(m, nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise UnsupportedLayerError(i, f"Flatten(start_dim={m.start_dim}, end_dim={m.end_dim})", name)
        return [_Op("flatten", cur, out)] if len(cur) > 1 else []
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        if m.running_var is None:
            raise UnsupportedLayerError(i, f"{type(m).__name__}(track_running_stats=False)", name)
        s = m.weight / torch.sqrt(m.running_var + m.eps) if m.affine else 1.0 / torch.sqrt(m.running_var + m.eps)
        t = (m.bias if m.affine else 0.0) - m.running_mean * s
        view = (-1, 1, 1) if isinstance(m, nn.BatchNorm2d) else (-1,)
        return [_Op("affine", cur, out, cast(s.reshape(view)), cast(t.reshape(view)))]
    if isinstance(m, nn.AvgPool2d):
        k, s, p = _pair(m.kernel_size), _pair(m.stride or m.kernel_size), _pair(m.padding)
        if m.ceil_mode or (any(p) and not m.count_include_pad) or m.divisor_override is not None:
            raise UnsupportedLayerError(i, f"AvgPool2d(ceil_mode={m.ceil_mode}, count_include_pad="
                                           f"{m.count_include_pad}, divisor_override={m.divisor_override})", name)
        return [conv_op(_pool_conv(cur[0], k, dev), torch.zeros(cur[0], device=dev), s, p, k)]
    if isinstance(m, nn.AdaptiveAvgPool2d):
        if cur[1] % out[1] or cur[2] % out[2]:
            raise UnsupportedLayerError(i, f"AdaptiveAvgPool2d from {list(cur[1:])} to {list(out[1:])} (sizes not "
                                           f"multiples)", name)
        k = (cur[1] // out[1], cur[2] // out[2])
        return [conv_op(_pool_conv(cur[0], k, dev), torch.zeros(cur[0], device=dev), k, (0, 0), k)]
    # normalize_module
    return [_Op("affine", cur, out, cast(1.0 / m.std), cast(-m.mean / m.std))]
