"""OML 1.0 model fingerprinting (Perinucleus fingerprints, Nasery et al. arXiv 2502.07760).

An owner plants secret (key, response) pairs in an LLM before release and later proves ownership of a suspect
model with a binomial p-value. Verbs: ``generate_fingerprints`` (keys.py), ``embed`` (train.py), ``verify``
(verify.py), ``run_robustness`` (robustness.py), ``assign`` / ``identify_host`` (collusion.py).
Nothing heavy is imported here.
"""

SCHEMA = "trustlab.fingerprint/1"
STRATEGIES = ("perinucleus", "english", "random_word", "english_random")
CAVEAT = ("A host that controls decoding can suppress memorised answers: decoding-time suppression attacks "
          "(arXiv 2509.26598) reach 94-100 % attack success at < 10 % utility loss on memorisation fingerprints, "
          "Perinucleus included, so a 'not owned' verdict does not prove the model is not derived from ours.")
