"""Frozen dataclass configs of the fingerprint lab (spec §3); YAML files mirror them field for field.

- ``GenerateConfig``: which model, how many fingerprints, key length, response strategy and its knobs.
- ``EmbedConfig``: fine-tuning the fingerprints in (``lr``/``lambda_wa``/``max_epochs`` of ``None`` take the
  model's preset, see ``train.resolve_preset``), with ``LoraSettings`` nested under ``lora``.
- ``VerifyConfig``: a local ``model`` or an ``endpoint`` + ``served_model``; matching and the ownership test.
- ``RobustnessConfig``: which experiments to run against a fingerprinted model and their settings.

Every ``__post_init__`` calls ``runtime.validate.check_types`` first, then checks ranges, so a config built in a
notebook fails exactly like one read from YAML (``runtime.config.load_config``), naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from trustlab.runtime.errors import ConfigError
from trustlab.runtime.validate import check_types, require_range

from .experiments import EXPERIMENTS  # the registry of robustness experiments (built-ins and entry points)

Strategy = Literal["perinucleus", "english", "random_word", "english_random"]


@dataclass(frozen=True)
class GenerateConfig:
    """Fingerprint generation. ``seed_words``: a file of one word per line (default: tokenizer words)."""

    model: str = "smollm2-135m-instruct"
    key_model: Optional[str] = None  # generator LM for keys (default: the target model)
    strategy: Strategy = "perinucleus"
    num_fingerprints: int = 32
    key_length: int = 16
    response_length: int = 1
    key_temperature: float = 0.5
    nucleus_t: float = 0.8
    nucleus_k: int = 3
    alnum_filter: bool = True
    prompt_format: Literal["raw", "chat"] = "raw"
    seed_words: Optional[str] = None
    null_p: Optional[float] = None  # only for strategy "english" (heuristic; default 1/3 with a warning)
    max_rank: int = 1000  # perinucleus: ranks scanned after the boundary
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self):
        check_types(self)
        require_range("num_fingerprints", self.num_fingerprints, 1)
        require_range("key_length", self.key_length, 8)
        require_range("response_length", self.response_length, 1)
        require_range("key_temperature", self.key_temperature, 0.0, None, lo_open=True)
        require_range("nucleus_t", self.nucleus_t, 0.0, 1.0, lo_open=True, hi_open=True)
        require_range("nucleus_k", self.nucleus_k, 1)
        require_range("max_rank", self.max_rank, 1)
        require_range("batch_size", self.batch_size, 1)
        if self.null_p is not None:
            require_range("null_p", self.null_p, 0.0, 1.0, lo_open=True, hi_open=True)
        if self.strategy == "english_random" and self.response_length != 1:
            raise ConfigError(f"strategy english_random takes response_length 1, got {self.response_length}",
                              hint="set response_length: 1, or use strategy perinucleus for longer responses")


@dataclass(frozen=True)
class LoraSettings:
    """peft LoRA; ``enabled: false`` is a full fine-tune. Adapters are merged on save unless ``adapter_only``."""

    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: str = "all-linear"  # "all-linear" or comma-separated module names, e.g. "q_proj,v_proj"
    adapter_only: bool = False

    def __post_init__(self):
        check_types(self, "lora")
        require_range("lora.r", self.r, 1)
        require_range("lora.alpha", self.alpha, 1)
        require_range("lora.dropout", self.dropout, 0.0, 1.0, hi_open=True)


@dataclass(frozen=True)
class EmbedConfig:
    """Embedding by fine-tuning. ``lr``, ``lambda_wa`` and ``max_epochs`` of None take the model's preset.
    ``model`` is what the CLI loads (default ``smollm2-135m-instruct``); ``embed(model, ...)`` trains the object it is
    given, whose identity decides the preset and is recorded (a ``model`` naming another one is only warned about)."""

    model: Optional[str] = None
    fingerprints: Optional[str] = None  # path of fingerprints.json (CLI); the API takes a FingerprintSet
    out_dir: Optional[str] = None
    lr: Optional[float] = None
    lambda_wa: Optional[float] = None
    wa_mode: Literal["per_step", "final"] = "per_step"
    beta_dm: float = 0.25
    benign_source: str = "chat-corpus"  # registry name, or jsonl:FILE with {"prompt", "response"?}
    benign_response_length: int = 8
    max_epochs: Optional[int] = None
    early_stop_loss: float = 0.005
    stop_after_full_match: int = 0
    micro_batch_size: int = 8
    weight_decay: float = 1e-4
    augment_prompts: bool = False
    append_eos: bool = False
    lora: LoraSettings = field(default_factory=LoraSettings)
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # float16: no loss scaler here
    save_every: int = 5
    write_metadata: bool = True
    seed: int = 0

    def __post_init__(self):
        check_types(self)
        if self.lr is not None:
            require_range("lr", self.lr, 0.0, None, lo_open=True)
        if self.lambda_wa is not None:
            require_range("lambda_wa", self.lambda_wa, 0.0, 1.0, hi_open=True)
        require_range("beta_dm", self.beta_dm, 0.0, 1.0, hi_open=True)
        require_range("benign_response_length", self.benign_response_length, 1)
        if self.max_epochs is not None:
            require_range("max_epochs", self.max_epochs, 1)
        require_range("early_stop_loss", self.early_stop_loss, 0.0)
        require_range("stop_after_full_match", self.stop_after_full_match, 0)
        require_range("micro_batch_size", self.micro_batch_size, 1)
        require_range("weight_decay", self.weight_decay, 0.0)
        require_range("save_every", self.save_every, 0)


@dataclass(frozen=True)
class VerifyConfig:
    """Ownership verification of a local ``model`` or an OpenAI-compatible ``endpoint`` (+ ``served_model``)."""

    fingerprints: Optional[str] = None
    model: Optional[str] = None
    endpoint: Optional[str] = None
    served_model: Optional[str] = None
    api: Literal["completions", "chat"] = "completions"
    api_key_env: str = "OPENAI_API_KEY"
    match: Literal["exact", "lenient"] = "exact"
    num_queries: Optional[int] = None
    alpha: float = 1e-3
    null_p: Optional[float] = None  # None: the proven p0; may only raise it (marked): verify.null_override
    wrapper: Optional[int] = None  # index into dataset.TEST_TEMPLATES
    temperature: float = 0.0
    samples: int = 1
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self):
        check_types(self)
        require_range("alpha", self.alpha, 0.0, 1.0, lo_open=True, hi_open=True)
        require_range("temperature", self.temperature, 0.0)
        require_range("samples", self.samples, 1)
        require_range("batch_size", self.batch_size, 1)
        if self.num_queries is not None:
            require_range("num_queries", self.num_queries, 1)
        if self.null_p is not None:
            require_range("null_p", self.null_p, 0.0, 1.0, lo_open=True, hi_open=True)
        if self.wrapper is not None:
            require_range("wrapper", self.wrapper, 0, 9)
        if self.model is not None and self.endpoint is not None:
            raise ConfigError("give either model or endpoint, not both",
                              hint="verify a local model with --model, or a server with --endpoint + --served-model")
        if self.endpoint is not None and not self.served_model:
            raise ConfigError(f"endpoint {self.endpoint!r} needs served_model",
                              hint="pass --served-model NAME (the model name the server exposes)")


@dataclass(frozen=True)
class RobustnessConfig:
    """Robustness and utility experiments against ``fingerprinted`` (an HF folder) with ``base`` as reference."""

    fingerprinted: Optional[str] = None
    base: Optional[str] = None
    fingerprints: Optional[str] = None
    experiments: tuple[str, ...] = ("sft", "merge", "wrappers", "temperature", "quant", "suppress", "utility", "fpr")
    sft_lr: float = 1e-5
    sft_epochs: int = 2
    sft_batch_size: int = 8
    sft_max_steps: Optional[int] = None
    merge_alphas: tuple[float, ...] = (0.9, 0.8, 0.7, 0.5, 0.2, 0.1)
    merge_with: Optional[str] = None  # default: the base model
    temperatures: tuple[float, ...] = (0.0, 0.7, 1.0)
    samples: int = 5
    suppress_k: int = 1
    suppress_n: int = 1
    suppress_tau: float = 0.9
    lookahead_width: int = 4  # suppress_family: the look-ahead's candidates and tokens per candidate
    lookahead_depth: int = 3
    detect_tau: float = 0.5  # suppress_family: detect-then-suppress confidence gate
    detect_margin: float = 2.302585  # ... and its log-ratio gate against the base model (ln 10)
    filter_quantiles: tuple[float, ...] = (0.5, 0.9)  # suppress_family: perplexity-filter thresholds
    topr_ranks: tuple[int, ...] = (1, 2)
    demote_tops: tuple[int, ...] = (1, 2)  # topr: Demote(s, delta) for s in these, delta in demote_deltas and inf
    demote_deltas: tuple[float, ...] = (2.0, 5.0, 10.0)
    ppl_docs: int = 100
    mc_subset: Optional[int] = None
    foreign_model: Optional[str] = None  # default: a seeded random init of the base config
    alpha: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        check_types(self)
        for i, name in enumerate(self.experiments):
            if name not in EXPERIMENTS:
                raise ConfigError(f"experiments[{i}] must be one of {', '.join(EXPERIMENTS)}; got {name!r}",
                                  hint=f"choose from {', '.join(EXPERIMENTS)}")
        require_range("sft_lr", self.sft_lr, 0.0, None, lo_open=True)
        require_range("sft_epochs", self.sft_epochs, 1)
        require_range("sft_batch_size", self.sft_batch_size, 1)
        if self.sft_max_steps is not None:
            require_range("sft_max_steps", self.sft_max_steps, 1)
        for i, a in enumerate(self.merge_alphas):
            require_range(f"merge_alphas[{i}]", a, 0.0, 1.0)
        for i, t in enumerate(self.temperatures):
            require_range(f"temperatures[{i}]", t, 0.0)
        require_range("samples", self.samples, 1)
        require_range("suppress_k", self.suppress_k, 1)
        require_range("suppress_n", self.suppress_n, 1)
        require_range("suppress_tau", self.suppress_tau, 0.0, 1.0, lo_open=True, hi_open=True)
        require_range("lookahead_width", self.lookahead_width, 2)
        require_range("lookahead_depth", self.lookahead_depth, 2)
        require_range("detect_tau", self.detect_tau, 0.0, 1.0, hi_open=True)
        require_range("detect_margin", self.detect_margin, 0.0)
        for i, q in enumerate(self.filter_quantiles):
            require_range(f"filter_quantiles[{i}]", q, 0.0, 1.0, lo_open=True, hi_open=True)
        for i, r in enumerate(self.topr_ranks):
            require_range(f"topr_ranks[{i}]", r, 1)
        for i, s in enumerate(self.demote_tops):
            require_range(f"demote_tops[{i}]", s, 1)
        for i, d in enumerate(self.demote_deltas):
            require_range(f"demote_deltas[{i}]", d, 0.0, None, lo_open=True)
        require_range("ppl_docs", self.ppl_docs, 1)
        if self.mc_subset is not None:
            require_range("mc_subset", self.mc_subset, 4)
        require_range("alpha", self.alpha, 0.0, 1.0, lo_open=True, hi_open=True)
