"""What the certify lab offers, by name, with one line each: ``trustlab certify ls``. The names are the lab's own
tables (``config.CERTIFIERS``, the attack kinds, ``config.DEFENCES``); only the summaries live here."""

from __future__ import annotations

from .config import CERTIFIERS, DEFENCES

ATTACKS = ("label-noise", "max-entropy")  # AttackConfig.kind besides "none"

SUMMARIES = {
    "smoothing": "randomized smoothing (Cohen et al.): Monte Carlo certified L2 radius, Clopper-Pearson bound",
    "smoothing-adaptive": "sequential randomized smoothing at a target radius: a confidence sequence stops early",
    "ibp": "interval bound propagation: a sound L-inf certificate from one interval forward pass",
    "crown-ibp": "CROWN-IBP: IBP intermediate bounds, a CROWN linear bound on the output",
    "crown": "CROWN: linear relaxation bounds for the intermediate layers too (tighter, slower)",
    "best": "the larger of the IBP and CROWN-IBP margin lower bounds, per input",
    "label-noise": "attack A: poison training data with triggered inputs and noisy labels (reconstructed)",
    "max-entropy": "attack B: a training objective pushing triggered inputs to maximum entropy (reconstructed)",
    "strip": "STRIP (test-time): flag inputs whose entropy under blending is outside the defender's quantile",
    "spectral": "spectral signatures: drop rows scoring high on the top singular vector, retrain",
    "activation-clustering": "activation clustering: 2-means per label on activations, retrain without the small one",
    "fine-pruning": "fine-pruning: zero the least active last units, then fine-tune on the defender set",
}


def listing() -> list[tuple[str, list[tuple[str, str]]]]:
    """(title, [(name, summary)]) for certifiers, attacks and defences."""
    return [(title, [(n, SUMMARIES.get(n, "")) for n in names])
            for title, names in (("certifiers", CERTIFIERS), ("attacks", ATTACKS), ("defences", DEFENCES))]
