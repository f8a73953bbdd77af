"""SafeChain safety lab: reasoning-model safety evaluation with the thought and the answer judged apart,
thinking control (ZeroThink / LessThink / MoreThink), safe CoT dataset building and fine-tuning.

Nothing heavy is imported here. Entry points: ``trustlab.safety.pipeline`` (``generate``, ``judge``,
``metrics``, ``run_eval``), ``trustlab.safety.thinking`` (``generate_samples``, ``split_response``),
``trustlab.safety.backends.make_backend`` and ``trustlab.safety.cli`` (the ``trustlab safety`` sub-app).
"""

LAB = "safety"
RESULTS_SCHEMA = "trustlab.safety.results/1"
