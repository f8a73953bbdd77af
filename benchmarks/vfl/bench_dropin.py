"""The drop-in's cost: a training step of a user's split model wrapped by ``make_hashed`` (hash layer + consistency
loss) over the same model trained plainly with cross-entropy, in this invocation (digits halves, batch 64, 1 thread).
Prints one JSON line with the ratio and both models' test accuracy after the same number of epochs."""

from __future__ import annotations

import json
import sys
import time


def run(hashed: bool, epochs: int) -> tuple[float, float]:
    """(median seconds per step, test accuracy) for the plain or the hashed split model."""
    import numpy as np
    import torch
    import torch.nn as nn
    from sklearn.datasets import load_digits

    from trustlab.vfl import HashConfig, make_hashed

    X, y = load_digits(return_X_y=True)
    X, y = torch.tensor(X / 16, dtype=torch.float32).view(-1, 8, 8), torch.tensor(y)
    blocks = [X[:, :, :4].flatten(1), X[:, :, 4:].flatten(1)]
    torch.manual_seed(0)
    bottoms = [nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16)) for _ in range(2)]
    top = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 10))
    if hashed:
        hv = make_hashed(bottoms, top, HashConfig(n_classes=10, code_len=16))
        model, loss_fn = hv.model, lambda out, yb: hv.loss(out[0], out[1], yb)
        forward = model
    else:
        model = nn.ModuleList([*bottoms, top])
        forward = lambda xs: (top(torch.cat([b(x) for b, x in zip(bottoms, xs)], 1)), None)  # noqa: E731
        loss_fn = lambda out, yb: nn.functional.cross_entropy(out[0], yb)  # noqa: E731
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    times = []
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(1400).split(64):
            t0 = time.perf_counter()
            loss = loss_fn(forward([b[idx] for b in blocks]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
    model.eval()
    with torch.no_grad():
        acc = (forward([b[1400:] for b in blocks])[0].argmax(1) == y[1400:]).float().mean().item()
    return float(np.median(times[len(times) // 10:])), acc


def main(epochs: int = 20) -> dict:
    from trustlab.runtime import configure_threads

    configure_threads(1)
    plain, hashed = run(False, epochs), run(True, epochs)
    out = {"bench": "vfl.dropin", "dataset": "digits", "epochs": epochs, "plain_step_ms": 1e3 * plain[0],
           "hashed_step_ms": 1e3 * hashed[0], "ratio_hashed_vs_plain": hashed[0] / plain[0],
           "plain_test_acc": plain[1], "hashed_test_acc": hashed[1]}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
