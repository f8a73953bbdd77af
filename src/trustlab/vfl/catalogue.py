"""What the VFL lab offers, by name, with one line each: ``trustlab vfl ls``. The names are the lab's own tables
(``config.DEFENCES``, ``evaluate.ATTACKS``, repeated here so listing imports no numpy); only the summaries live here."""

from __future__ import annotations

from .config import DEFENCES

ATTACKS = ("whitebox", "inverse", "label", "decode", "detect")  # = evaluate.ATTACKS (a test checks they agree)

SUMMARIES = {
    "none": "raw party embeddings f_i(x) (the vanilla VFL baseline)",
    "hash": "HashVFL: Sign(BN(f_i(x))), binary codes on the wire",
    "gaussian": "clip each embedding to an L2 norm, add Gaussian noise",
    "laplace": "clip each embedding to an L2 norm, add Laplace noise",
    "gsparse": "gradient sparsification at the label party (small |G| zeroed, error feedback)",
    "hash_laplace": "hash codes plus Laplace(0, 2/eps) per bit",
    "whitebox": "white-box inversion (He et al. 2019): optimise x' to match the message, knowing the party's weights",
    "inverse": "black-box inverse network m -> x learned on auxiliary pairs",
    "label": "passive label leakage: a feature party fits labels from its own messages (Fu et al. 2022)",
    "decode": "decode hash messages to the nearest class code, reconstruct the class mean",
    "detect": "abnormal-input detection by Hamming distance to the predicted class code (hash defences)",
}


def listing() -> list[tuple[str, list[tuple[str, str]]]]:
    """(title, [(name, summary)]) for defences and attacks."""
    return [(title, [(n, SUMMARIES.get(n, "")) for n in names])
            for title, names in (("defences", DEFENCES), ("attacks", ATTACKS))]
