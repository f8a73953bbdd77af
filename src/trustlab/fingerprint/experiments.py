"""The registry of fingerprint robustness experiments: name -> a function ``Bench -> record`` (``robustness.Bench``).

Built-ins are lazy ``"module:attr"`` targets, so validating a config or listing the names (``trustlab fingerprint
ls``) imports nothing heavy. A package adds an experiment through the entry-point group
``trustlab.fingerprint.experiments`` (``runtime.registry``)::

    [project.entry-points."trustlab.fingerprint.experiments"]
    my_attack = "my_pkg.attacks:run"      # def run(bench) -> dict (JSON-serialisable); its docstring is its summary

``RobustnessConfig.experiments`` accepts every name here; ``run_robustness`` runs them in the order given and records
each result under its name.
"""

from __future__ import annotations

from trustlab.runtime.registry import Registry

EXPERIMENTS = Registry("fingerprint.experiments", what="robustness experiment")

_R = "trustlab.fingerprint.robustness:"
_F = "trustlab.fingerprint.attack_family:"
for _name, _target, _summary in (
        ("sft", _R + "_sft", "benign supervised fine-tuning of F on chat dialogues; retention and perplexity after "
                             "each epoch"),
        ("merge", _R + "_merge", "alpha * F + (1 - alpha) * another model (B unless merge_with), per parameter, at "
                                 "each merge_alphas"),
        ("wrappers", _R + "_wrappers", "each key inside the 10 held-out prompt templates (TEST_TEMPLATES)"),
        ("temperature", _R + "_temperature", "sampling at each of temperatures (several samples per key above 0)"),
        ("quant", _R + "_quant", "torch dynamic int8 quantization of every nn.Linear (each QUANT_METHODS)"),
        ("suppress", _R + "_suppress", "decoding-time top-k suppression (arXiv 2509.26598), always and above a "
                                       "top-probability tau; attack success and perplexity cost"),
        ("utility", _R + "_utility", "held-out perplexity ratio F/B and 4-option trivia multiple choice"),
        ("fpr", _R + "_fpr", "false positives: B and an unrelated model (foreign_model, else a seeded random init "
                             "of B's config) must be not owned"),
        ("suppress_family", _F + "family_experiment", "the suppression and detection family of arXiv 2509.26598 "
                                                      "(neighbour, look-ahead, detect-then-suppress, perplexity "
                                                      "filter) beside top-1: attack success against perplexity and "
                                                      "trivia cost"),
        ("topr", _F + "topr_experiment", "the top-r logprob verifier against soft and hard top-s suppression; the "
                                         "cheapest attack that beats it and its utility cost")):
    EXPERIMENTS.register(_name, _target, _summary)
del _name, _target, _summary

BUILTIN = tuple(EXPERIMENTS.builtins())
