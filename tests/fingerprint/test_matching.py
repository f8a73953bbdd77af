"""Matching rules and their per-key null counts: the largest number of candidates one output can match."""

import random

import pytest

from trustlab.fingerprint.matching import _witnesses, exact_text_hit, joint_matches, lenient_hit, text_hit


def test_exact_text_counts_the_leading_space_pair():
    # " the cat" hits both " the" and "the": the null of this key is 2/k, not 1/k
    assert exact_text_hit(" the cat", " the") and exact_text_hit(" the cat", "the")
    assert joint_matches([" the", "the", " dog"], "exact") == 2
    assert joint_matches([" the", " a", " dog"], "exact") == 1
    assert joint_matches([" the", " a", " dog"], "token") == 1


def test_lenient_counts_prefix_chains():
    assert lenient_hit("Interesting idea", "In") and lenient_hit("And then", "a")
    assert joint_matches([" In", " Inter", " Interest", " dog"], "lenient") == 3
    assert joint_matches([" The", "the", " THE"], "lenient") == 3  # indistinguishable once normalised
    # the exact rule keeps word boundaries: "the" and "their" never hit one output together
    assert joint_matches([" the", " their", "the"], "exact") == 2


def test_relaxed_rule_for_multi_token_responses():
    # a response " the" + "ir ..." is hit by " their ...": its first token's text then matches without a boundary
    assert not exact_text_hit(" their", " the") and exact_text_hit(" their", " the", whole_word=False)
    assert joint_matches([" the", " their", "the"], "exact", whole_word=False) == 3


@pytest.mark.parametrize("rule,whole", [("exact", True), ("exact", False), ("lenient", True)])
def test_joint_matches_is_the_maximum_over_random_outputs(rule, whole):
    """The witness construction never undercounts: no random output beats it, and some output attains it."""
    rng = random.Random(0)
    alphabet = ["a", "b", "A", " ", "\n", ".", "ab"]
    for _ in range(120):
        cands = list({"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 3))) for _ in range(4)})
        count = joint_matches(cands, rule, whole)
        seen = 0
        for _ in range(100):
            out = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
            seen = max(seen, sum(text_hit(rule, out, c, whole) for c in cands))
            assert seen <= count, (cands, out)
        # the count is attained (by one of the witnesses it was computed on)
        assert any(sum(text_hit(rule, w, c, whole) for c in cands) == count for w in _witnesses(cands, rule))
