"""Availability attacks on certifiers (Lorenz, Kwiatkowska, Fritz, arXiv:2108.11299).

Certifiers (randomized smoothing, IBP, CROWN-IBP, CROWN) are checked against reference semantics; the two attacks
are *reconstructed from the paper's abstract and threat model* (full text unavailable) and carry descriptive names.
Nothing heavy is imported here.
"""

ABSTAIN = -1
RECONSTRUCTED = ("Attacks A and B are reconstructed from the paper's abstract and threat model "
                 "(arXiv:2108.11299); the full text was unavailable, so names and settings are ours.")
