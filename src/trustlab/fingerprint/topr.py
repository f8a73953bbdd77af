"""A top-r ownership verifier for endpoints that report token log-probabilities.

A key is a hit when its response's first token is among the ``r`` most probable tokens the suspect reports at the
first response position, rather than the one token it emits. Suppression that only changes the emitted token
(``SuppressTopK``, the ``suppression`` family) leaves a hit wherever the reported distribution still ranks the
response within the top r.

Null hypothesis (H0): the suspect never saw the fingerprints, so the set T of its r top tokens for key i does not
depend on which of the key's k perinucleus candidates C_i the owner's secret chose (uniformly, by HMAC) as the
response. Then P(hit_i) = |T cap C_i| / k <= min(r, k) / k =: p0_i, with equality when T holds r candidates, so
p0_i = r/k is the exact worst case per key; keys are chosen independently, so the number of hits is stochastically
below a Poisson-binomial(p0_1 .. p0_M) and the p-value is its exact upper tail. A key with r >= k has p0_i = 1 (its
top-r always holds the response) and is no evidence: it is dropped with a note. Only perinucleus fingerprints record
their candidates, so only they have this null; other strategies are refused.

``reported``: ``"raw"`` scores the model's own distribution (a server reporting log-probabilities computed before
its logits processors), ``"processed"`` the distribution after the host's processors (a host that also filters what
it reports; a banned token is absent from it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Sequence

from trustlab.runtime.errors import ConfigError


def poisson_binomial_tail(m: int, p: Sequence[float]) -> float:
    """P(X >= m) for X a sum of independent Bernoulli(p_i) (exact, by the O(M^2) recursion over keys)."""
    import numpy as np

    if m <= 0:
        return 1.0
    dist = np.zeros(len(p) + 1)
    dist[0] = 1.0
    for i, q in enumerate(p):
        dist[1:i + 2] = dist[1:i + 2] * (1 - q) + dist[:i + 1] * q
        dist[0] *= 1 - q
    return float(min(1.0, dist[m:].sum()))


def key_null(fp, r: int) -> float:
    """p0_i = min(r, k) / k for a perinucleus key with k candidates (module docstring)."""
    k = len(fp.candidates)
    return min(r, k) / k


@dataclass(frozen=True)
class TopRResult:
    r: int
    reported: str
    hits: tuple[bool, ...]
    ranks: tuple[int, ...]  # the response's rank reported (1 = top, ties count against it; 0: absent, i.e. banned)
    p0: tuple[float, ...]  # per evidential key
    m: int
    M: int
    dropped: int
    p_value: float
    alpha: float

    @property
    def decision(self) -> str:
        return "OWNED" if self.M and self.p_value <= self.alpha else "not owned"

    @property
    def line(self) -> str:
        note = f", {self.dropped} keys dropped (r >= k: no evidence)" if self.dropped else ""
        return (f"top-{self.r} ({self.reported}) {self.decision}: {self.m}/{self.M} hits, p = {self.p_value:.3g} "
                f"(alpha {self.alpha:g}){note}")

    def to_dict(self) -> dict[str, Any]:
        return {"r": self.r, "reported": self.reported, "m": self.m, "M": self.M, "hit_rate": self.m / self.M
                if self.M else None, "p_value": self.p_value, "decision": self.decision, "dropped": self.dropped,
                "mean_p0": sum(self.p0) / len(self.p0) if self.p0 else None, "line": self.line,
                "ranks": list(self.ranks)}


def first_position_logits(model, tok, fps, processors: Sequence[Any] = ()) -> list:
    """Next-token logits at each key's first response position (the verify prompt layout), after ``processors``."""
    import torch

    from .verify import local_prompt

    device = next(model.parameters()).device
    out = []
    for fp in fps.fingerprints:
        ids = local_prompt(tok, fp, fps.prompt_format, None)
        x = torch.tensor([ids], device=device)
        with torch.no_grad():
            logits = model(input_ids=x).logits[:, -1].float()
        for proc in processors:
            if hasattr(proc, "begin"):
                proc.begin(len(ids))
            logits = proc(x, logits)
        out.append(logits[0])
    return out


def topr_verify(fps, model, tok, r: int, *, alpha: float = 1e-3, processors: Sequence[Any] = (),
                reported: Literal["raw", "processed"] = "processed", logits: list | None = None) -> TopRResult:
    """Top-r verdict of a local model (HF logits) under the host's ``processors`` (see module docstring)."""
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ConfigError(f"top-r needs an integer r >= 1, got {r!r}", hint="e.g. r=2 (below nucleus_k)")
    if reported not in ("raw", "processed"):
        raise ConfigError(f"reported must be raw or processed, got {reported!r}", hint="use processed")
    if any(fp.candidates is None for fp in fps.fingerprints):
        raise ConfigError(f"top-r verification needs the perinucleus candidates of every key; strategy "
                          f"{fps.strategy!r} records none", hint="use plain verify for this fingerprint set")
    fps.check_tokenizer(tok)
    if logits is None:
        logits = first_position_logits(model, tok, fps, processors if reported == "processed" else ())
    hits, ranks, p0 = [], [], []
    dropped = m = 0
    for fp, row in zip(fps.fingerprints, logits):
        y = fp.response_ids[0]
        finite = row > float("-inf")
        rank = int((row >= row[y]).sum()) if bool(finite[y]) else 0  # ties rank against the response
        ranks.append(rank)
        q = key_null(fp, r)
        if q >= 1.0:
            dropped += 1
            continue
        hit = 0 < rank <= r
        hits.append(hit)
        p0.append(q)
        m += int(hit)
    p = poisson_binomial_tail(m, p0) if p0 else 1.0
    return TopRResult(r=r, reported=reported, hits=tuple(hits), ranks=tuple(ranks), p0=tuple(p0), m=m, M=len(p0),
                      dropped=dropped, p_value=p, alpha=alpha)
