"""Robustness of fingerprints to what hosts do to models, and what it costs in utility (spec section 2).

Each experiment measures the fingerprinted model F (or a transform of it) with ``verify``: exact and lenient
accuracy, persistence (the first response token is the greedy argmax, the paper's metric) and the ownership
p-value. Attacks and transforms:

- ``sft_attack``: benign supervised fine-tuning on chat dialogues (AdamW, response tokens only).
- ``merge_linear``: alpha * theta_F + (1 - alpha) * theta_other, per parameter (shape mismatch is an error).
- wrappers: the 10 disjoint TEST_TEMPLATES around each key; temperatures with several samples.
- ``quantize_int8``: torch dynamic int8 quantization of every nn.Linear, as a host serving cheaply would.
- ``SuppressTopK``: the decoding-time suppression attacks of arXiv 2509.26598 as a logits processor: ban the
  top-k tokens for the first n decode steps, or (``tau``) only where the top probability exceeds tau.
- utility: held-out perplexity ratio F/B and a 4-option trivia multiple-choice score (mean answer
  log-likelihood); false positives: B and an unrelated model (a seeded random init of B's config) must be
  ``not owned``.

``run_robustness(cfg, out_dir)`` writes ``robustness.json`` after every experiment and skips, on resume, those
already recorded under the same config.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from trustlab.runtime.errors import ConfigError, DataError, ModelError
from trustlab.runtime.files import read_text

NLL_CAP = -math.log(1e-6)  # a true token that an attack banned is scored at p = 1e-6, not infinity
PPL_PROMPT = 16  # held-out text: the first 16 tokens play the prompt; decoding-time attacks act after them


# --------------------------------------------------------------------------------------------------------------
# Held-out data with provenance
# --------------------------------------------------------------------------------------------------------------
def _is_fp_tiny_tokenizer(tok) -> bool:
    from . import tiny
    from .fpset import tokenizer_info

    words, _ = tiny.grammar(tiny.SETTINGS["seed"])
    return tokenizer_info(tok)["vocab_sha256"] == tokenizer_info(tiny.tokenizer(words))["vocab_sha256"]


def heldout_texts(n_docs: int = 100, tokenizer: Any = None) -> tuple[list[str], str]:
    """(documents, provenance): gensim's Lee news corpus (300 news documents, read as a file) when gensim is
    installed, else chatterbot-corpus dialogues joined per conversation. For the fp-tiny tokenizer (to which
    English is all ``<unk>``) the held-out documents of its own grammar (``tiny.heldout_texts``)."""
    import importlib.util

    if tokenizer is not None and _is_fp_tiny_tokenizer(tokenizer):
        from . import tiny

        return tiny.heldout_texts(n_docs), f"fp-tiny grammar: {n_docs} held-out documents (corpus seed 12345)"

    spec = importlib.util.find_spec("gensim")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data" / "lee_background.cor"
        if path.is_file():
            docs = [d.strip() for d in read_text(path, "Lee corpus").splitlines() if d.strip()]
            return docs[:n_docs], f"lee-news: gensim test_data/lee_background.cor, first {min(n_docs, len(docs))} docs"
    from trustlab import data

    corpus = data.load("chat-corpus")
    docs = [" ".join(d) for d, c in zip(corpus.dialogues, corpus.categories) if c != "trivia" and len(d) >= 3]
    return docs[:n_docs], "chat-corpus: chatterbot-corpus dialogues of 3+ turns (gensim not installed)"


def trivia_items(subset: int | None = None, seed: int = 0) -> tuple[list[dict[str, Any]], str]:
    """4-option multiple-choice items from chatterbot-corpus ``trivia.yml``: the answer plus 3 distractors drawn
    (seeded) from the other questions' answers. Returns (items, provenance)."""
    import numpy as np
    import yaml

    from trustlab.data.prompts import package_dir

    path = package_dir("chatterbot_corpus", "chatterbot-corpus") / "data" / "english" / "trivia.yml"
    pairs = [(str(c[0]).strip(), str(c[1]).strip()) for c in yaml.safe_load(read_text(path, "trivia file"))
             ["conversations"] if len(c) >= 2 and str(c[1]).strip()]
    answers = sorted({a for _, a in pairs})
    rng = np.random.default_rng(seed)
    items = []
    for q, a in pairs:
        others = [x for x in answers if x != a]
        options = [a] + [others[i] for i in rng.choice(len(others), size=3, replace=False)]
        order = rng.permutation(4)
        items.append({"question": q, "options": [options[i] for i in order], "answer": int(np.argmax(order == 0))})
    if subset is not None and subset < len(items):
        items = [items[i] for i in sorted(rng.choice(len(items), size=subset, replace=False))]
    return items, (f"chatterbot-corpus data/english/trivia.yml: {len(items)} of {len(pairs)} Q/A pairs, 4 options, "
                   f"distractors = other answers (seed {seed})")


# --------------------------------------------------------------------------------------------------------------
# Decoding-time suppression (arXiv 2509.26598)
# --------------------------------------------------------------------------------------------------------------
def suppress(scores, k: int, tau: float | None = None):
    """Ban (set to -inf) the top-k tokens of each row; with ``tau``, only rows whose top probability > tau."""
    import torch

    top = scores.topk(k, dim=-1).indices
    banned = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, top, True)
    if tau is not None:
        confident = scores.float().softmax(-1).max(-1).values > tau
        banned &= confident[..., None]
    return scores.masked_fill(banned, float("-inf"))


@dataclass
class SuppressTopK:
    """A host's logits processor: suppress the top-k tokens during the first ``steps`` decode steps (``tau``:
    only when the top probability exceeds it). ``begin(prompt_len)`` is called by HFBackend before each batch."""

    k: int = 1
    steps: int = 1
    tau: float | None = None
    _start: int = 0

    def begin(self, prompt_len: int) -> None:
        self._start = prompt_len

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] - self._start >= self.steps:
            return scores
        return suppress(scores, self.k, self.tau)

    @property
    def name(self) -> str:
        return f"suppress_top{self.k}_first{self.steps}" + ("" if self.tau is None else f"_gated{self.tau:g}")


# --------------------------------------------------------------------------------------------------------------
# Utility
# --------------------------------------------------------------------------------------------------------------
def _pad_id(tok) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def perplexity(model, tok, texts: Sequence[str], *, max_tokens: int = 128, batch_size: int = 8,
               attack: SuppressTopK | None = None) -> float:
    """exp(mean token NLL) over ``texts`` (each cut to ``max_tokens``). With ``attack``, the predictions of tokens
    PPL_PROMPT .. PPL_PROMPT + steps - 1 of each text use the suppressed distribution (renormalised; a banned true
    token is scored at p = 1e-6), i.e. the utility cost of the attack on text a user would get."""
    import torch

    ids = [tok(t, add_special_tokens=True)["input_ids"][:max_tokens] for t in texts]
    ids = [x for x in ids if len(x) > PPL_PROMPT + 1]
    if not ids:
        raise DataError("no held-out text is long enough for perplexity", hint="give longer documents")
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for s in range(0, len(ids), batch_size):
        chunk = ids[s:s + batch_size]
        width = max(map(len, chunk))
        x = torch.full((len(chunk), width), _pad_id(tok), dtype=torch.long)
        mask = torch.zeros_like(x)
        for i, row in enumerate(chunk):
            x[i, :len(row)] = torch.tensor(row)
            mask[i, :len(row)] = 1
        with torch.no_grad():
            logits = model(input_ids=x.to(device), attention_mask=mask.to(device)).logits[:, :-1].float()
        if attack is not None:
            a, b = PPL_PROMPT - 1, PPL_PROMPT - 1 + attack.steps
            logits[:, a:b] = suppress(logits[:, a:b], attack.k, attack.tau)
        logp = logits.log_softmax(-1)
        target = x[:, 1:].to(device)
        nll = -logp.gather(-1, target[..., None])[..., 0]
        nll = torch.nan_to_num(nll, posinf=NLL_CAP).clamp(max=NLL_CAP)
        keep = mask[:, 1:].to(device).bool()
        total += float(nll[keep].sum())
        count += int(keep.sum())
    return math.exp(total / count)


def trivia_mc(model, tok, items: Sequence[dict[str, Any]], *, batch_size: int = 16) -> float:
    """Share of items whose correct option has the highest mean log-likelihood after "Question: q\\nAnswer:"."""
    import torch

    device = next(model.parameters()).device
    rows = []
    for it in items:
        prompt = tok(f"Question: {it['question']}\nAnswer:", add_special_tokens=True)["input_ids"]
        for opt in it["options"]:
            rows.append((prompt, tok.encode(" " + opt, add_special_tokens=False)))
    scores = []
    for s in range(0, len(rows), batch_size):
        chunk = rows[s:s + batch_size]
        width = max(len(p) + len(o) for p, o in chunk)
        x = torch.full((len(chunk), width), _pad_id(tok), dtype=torch.long)
        mask = torch.zeros_like(x)
        for i, (p, o) in enumerate(chunk):
            x[i, :len(p) + len(o)] = torch.tensor(p + o)
            mask[i, :len(p) + len(o)] = 1
        with torch.no_grad():
            logp = model(input_ids=x.to(device), attention_mask=mask.to(device)).logits.float().log_softmax(-1)
        for i, (p, o) in enumerate(chunk):
            pos = torch.arange(len(p) - 1, len(p) + len(o) - 1)
            scores.append(float(logp[i, pos, torch.tensor(o)].mean()) if o else float("-inf"))
    correct = 0
    for j, it in enumerate(items):
        opts = scores[4 * j:4 * j + 4]
        correct += int(max(range(4), key=lambda i: opts[i]) == it["answer"])
    return correct / len(items)


# --------------------------------------------------------------------------------------------------------------
# Transforms a host applies
# --------------------------------------------------------------------------------------------------------------
def sft_pairs(tok, n: int | None = None, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, response ids + EOS) from chatterbot-corpus dialogues (trivia excluded), seeded order; chat
    layout when the tokenizer has a chat template."""
    import numpy as np

    from trustlab import data

    from .dataset import prompt_ids

    corpus = data.load("chat-corpus")
    fmt = "chat" if getattr(tok, "chat_template", None) else "raw"
    pairs = []
    for d, c in zip(corpus.dialogues, corpus.categories):
        if c == "trivia":
            continue
        for q, a in zip(d[0::2], d[1::2]):
            p = prompt_ids(tok, tok.encode(q, add_special_tokens=False)[:48], fmt)
            r = tok.encode(a, add_special_tokens=False)[:48] + [tok.eos_token_id]
            pairs.append((p, r))
    order = np.random.default_rng(seed).permutation(len(pairs))
    pairs = [pairs[i] for i in order]
    return pairs if n is None else pairs[:n]


def sft_attack(model, tok, *, lr: float = 1e-5, epochs: int = 2, batch_size: int = 8, max_steps: int | None = None,
               seed: int = 0, pairs: list | None = None,
               on_epoch: Callable[[int, int, float], None] | None = None) -> dict[str, Any]:
    """Benign SFT of ``model`` in place: AdamW(lr), mean CE over response tokens, ``epochs`` passes of
    ``batch_size`` pairs (at most ``max_steps`` steps in all). ``on_epoch(epoch, steps, loss)`` after each pass."""
    import torch

    from trustlab.runtime.finite import require_finite_step
    from trustlab.runtime.workload import require_time

    from .dataset import Example, IGNORE, collate, per_example_loss

    pairs = sft_pairs(tok, seed=seed) if pairs is None else pairs
    examples = [Example(tuple(p + r), tuple([IGNORE] * len(p) + r), "benign") for p, r in pairs]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    steps, loss_v, t0 = 0, float("nan"), time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(examples), generator=gen).tolist()
        for s in range(0, len(order), batch_size):
            if max_steps is not None and steps >= max_steps:
                break
            batch = collate([examples[i] for i in order[s:s + batch_size]], _pad_id(tok))
            out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                        position_ids=batch["position_ids"].to(device))
            loss = per_example_loss(out.logits, batch["labels"].to(device)).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            loss_v = float(loss.detach())
            # a diverged attack (lr too high) is an error, not a model whose fingerprints "did not survive"
            require_finite_step(loss_v, model.named_parameters(), step=f"step {steps} (epoch {epoch})", lr=lr,
                                what="the fine-tune attack", lr_name="sft_lr")
        model.eval()
        if epoch == 1 and epochs > 1:  # priced on the first pass: every later pass costs about the same
            left = (epochs - 1) * math.ceil(len(order) / batch_size)
            left = min(left, max_steps - steps) if max_steps is not None else left
            require_time(f"the fine-tune attack (sft_epochs {epochs:,}: {left:,} more steps at the "
                         f"{(time.perf_counter() - t0) / max(1, steps):.2g} s a step measured)",
                         left * (time.perf_counter() - t0) / max(1, steps),
                         hint="lower sft_epochs or set sft_max_steps")
        if on_epoch is not None:
            on_epoch(epoch, steps, loss_v)
        if max_steps is not None and steps >= max_steps:
            break
    return {"steps": steps, "last_loss": loss_v if steps else None, "seconds": round(time.perf_counter() - t0, 2),
            "examples": len(examples)}


def merge_linear(model_f, model_other, alpha: float):
    """A new model with alpha * theta_F + (1 - alpha) * theta_other for every parameter and buffer of F.

    ModelError naming the first parameter that is missing from the other model or has another shape."""
    import torch

    if not isinstance(alpha, (int, float)) or not 0.0 <= float(alpha) <= 1.0:
        raise ConfigError(f"merge alpha must lie in [0, 1], got {alpha!r}", hint="e.g. merge_alphas: [0.9, 0.5]")
    sf, so = model_f.state_dict(), model_other.state_dict()
    for name, t in sf.items():
        if name not in so:
            raise ModelError(f"cannot merge: parameter {name!r} of the fingerprinted model is missing from the other "
                             "model", hint="merge models of the same architecture (merge_with)")
        if tuple(so[name].shape) != tuple(t.shape):
            raise ModelError(f"cannot merge: parameter {name!r} has shape {tuple(t.shape)} in the fingerprinted "
                             f"model but {tuple(so[name].shape)} in the other", hint="merge models of the same "
                                                                                   "architecture (merge_with)")
    merged = copy.deepcopy(model_f)
    with torch.no_grad():
        state = {n: (alpha * t.float() + (1 - alpha) * so[n].float()).to(t.dtype) if t.is_floating_point() else t
                 for n, t in sf.items()}
        merged.load_state_dict(state)
    return merged.eval()


QUANT_METHODS = {
    "dynamic": "torch.ao.quantization.quantize_dynamic(nn.Linear, qint8): int8 weights and dynamically "
               "quantized int8 activations (per tensor)",
    "weight_only": "int8 weight-only: per-output-channel symmetric round-to-nearest int8 weights, dequantized for "
                   "the matmul (what int8 weight-only serving computes)",
}


def quantize_int8(model, method: str = "dynamic"):
    """A copy of ``model`` with every nn.Linear quantized to int8, as a host serving cheaply would.

    ``dynamic``: torch's dynamic quantization (int8 weights, int8 activations quantized per tensor on the fly);
    ``weight_only``: W -> s * clamp(round(W / s), -127, 127) with s = max|W_row| / 127 per output channel."""
    import warnings

    import torch

    if method not in QUANT_METHODS:
        raise ConfigError(f"quantization method must be one of {', '.join(QUANT_METHODS)}; got {method!r}",
                          hint="use dynamic or weight_only")
    q = copy.deepcopy(model).float().cpu()
    if method == "dynamic":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
            return torch.ao.quantization.quantize_dynamic(q, {torch.nn.Linear}, dtype=torch.qint8).eval()
    with torch.no_grad():
        for mod in q.modules():
            if isinstance(mod, torch.nn.Linear):
                w = mod.weight
                scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
                w.copy_((w / scale).round().clamp(-127, 127) * scale)
    return q.eval()


def foreign_model(base, seed: int = 0):
    """An unrelated model: a seeded random init of the base model's config (same tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(copy.deepcopy(base.config)).eval()


# --------------------------------------------------------------------------------------------------------------
# Measuring a model
# --------------------------------------------------------------------------------------------------------------
def measure(model, tok, fps, *, label: str, alpha: float = 1e-3, wrapper: int | None = None,
            temperature: float = 0.0, samples: int = 1, seed: int = 0,
            processors: Sequence[Callable] = (), batch_size: int = 16) -> dict[str, Any]:
    """Exact and lenient accuracy, persistence, the verdict and the per-key hits of ``model`` on ``fps``."""
    from .backends import HFBackend
    from .config import VerifyConfig
    from .verify import lenient_hit, verify

    cfg = VerifyConfig(model=label, alpha=alpha, wrapper=wrapper, temperature=temperature, samples=samples,
                       seed=seed, batch_size=batch_size)
    res = verify(fps, HFBackend(model, tok, batch_size=batch_size, logits_processor=list(processors)), cfg)
    by_id = {fp.id: fp for fp in fps.fingerprints}
    rows = [r for r in res.per_fingerprint if r["answered"]]
    lenient = [lenient_hit(r["output"], by_id[r["id"]].response_text) for r in rows]
    persist = [bool(r["output_ids"]) and r["output_ids"][0] == by_id[r["id"]].response_ids[0] for r in rows]
    d = res.decision
    return {"label": label, "p0": d.p0, "exact": d.m / d.M, "lenient": sum(lenient) / len(rows),
            "persistence": sum(persist) / len(rows), "m": d.m, "M": d.M, "p_value": d.p_value,
            "log10_p_value": d.log10_p_value, "hoeffding_bound": d.hoeffding_bound, "decision": d.decision,
            "line": res.line,
            "mean_hit_rate": res.mean_hit_rate, "any_hit_rate": res.any_hit_rate,
            "hits": [bool(r["hit"]) for r in rows]}


# --------------------------------------------------------------------------------------------------------------
# The experiment runner
# --------------------------------------------------------------------------------------------------------------
@dataclass
class RobustnessResult:
    run_dir: Path
    results: dict[str, Any] = field(default_factory=dict)

    def summary_lines(self) -> list[str]:
        r, out = self.results, []
        if "clean" in r:
            out.append(f"clean: {r['clean']['line']}")
        u = r.get("utility")
        if u:
            out.append(f"utility: perplexity ratio F/B {u['ppl_ratio']:.3f}, trivia-MC {u['mc_fp']:.3f} vs "
                       f"{u['mc_base']:.3f}")
        for e in r.get("sft", {}).get("epochs", []):
            out.append(f"sft epoch {e['epoch']} ({e['steps']} steps): exact {e['exact']:.2f} -> {e['decision']}, "
                       f"perplexity x{e['ppl_ratio_base']:.3f} of the base")
        for a in r.get("merge", {}).get("alphas", []):
            out.append(f"merge alpha {a['alpha']:g}: exact {a['exact']:.2f} -> {a['decision']}")
        if "wrappers" in r:
            out.append(f"wrappers: mean exact {r['wrappers']['mean_exact']:.2f}")
        for t in r.get("temperature", {}).get("temperatures", []):
            out.append(f"T={t['temperature']:g}: mean {t['mean_hit_rate']:.2f} any-of-n {t['any_hit_rate']:.2f} "
                       f"-> {t['decision']}")
        for q in r.get("quant", {}).get("methods", []):
            out.append(f"int8 {q['method']}: exact {q['before']['exact']:.2f} -> {q['after']['exact']:.2f} "
                       f"({q['after']['decision']}), perplexity x{q['ppl_ratio']:.3f}")
        for a in r.get("suppress", {}).get("attacks", []):
            out.append(f"{a['attack']}: attack success {a['attack_success']:.2f}, verdict {a['decision']}, "
                       f"perplexity cost x{a['ppl_ratio']:.3f}")
        for name, f in r.get("fpr", {}).items():
            if isinstance(f, dict):
                out.append(f"fpr {name}: {f['line']}")
        return out


def _load_models(cfg):
    from trustlab.models import load_causal_lm
    from trustlab.models.identity import load_recorded

    from .fpset import FingerprintSet
    from .tiny import resolve_model_ref

    if cfg.fingerprinted is None:
        raise ConfigError("robustness needs the fingerprinted model", hint="pass --fingerprinted DIR")
    fp_path = cfg.fingerprints
    if fp_path is None:
        guess = Path(cfg.fingerprinted).parent / "fingerprints.json"
        if not guess.is_file():
            raise ConfigError("robustness needs the fingerprint file", hint="pass --fingerprints fingerprints.json")
        fp_path = str(guess)
    fps = FingerprintSet.load(fp_path)
    meta = Path(cfg.fingerprinted) / "trustlab_fingerprint.json"  # embed records the identity of the model it trained
    recorded = json.loads(read_text(meta, "model metadata")).get("base_model", {}) if meta.is_file() else {}
    base_ref = cfg.base or recorded.get("ref") or fps.base_model.get("ref")
    if not base_ref:
        raise ConfigError("robustness needs the base model", hint="pass --base REF")
    fmodel, tok = load_causal_lm(resolve_model_ref(cfg.fingerprinted))
    base, btok = load_causal_lm(resolve_model_ref(base_ref)) if cfg.base or "n_params" not in recorded else \
        load_recorded(recorded, f"model metadata {str(meta)!r}")  # refused when the base's weights changed
    fps.check_tokenizer(tok)
    return fps, fmodel, tok, base, btok, base_ref


def run_robustness(cfg, out_dir: str | Path | None = None, resume: bool = True, *,
                   models: tuple | None = None, fps=None) -> RobustnessResult:
    """Run ``cfg.experiments`` against the fingerprinted model; ``robustness.json`` is rewritten after each one and
    experiments already in it (same config) are skipped. ``models=(F, tok, B)`` and ``fps`` skip loading."""
    from trustlab.runtime.io import write_json_atomic
    from trustlab.runtime.rundir import RunDir

    from .dataset import TEST_TEMPLATES

    run = RunDir.open(out_dir, "fingerprint", "robustness", cfg, cfg.seed, resume=resume)
    path = run.path / "robustness.json"
    results: dict[str, Any] = {}
    if resume and path.is_file():
        try:
            results = json.loads(read_text(path, "robustness record"))
        except json.JSONDecodeError as exc:
            raise DataError(f"robustness record {str(path)!r} is corrupt ({exc.msg}, line {exc.lineno})",
                            hint="start afresh with --no-resume") from None
    if models is None:
        fps, fmodel, tok, base, _, base_ref = _load_models(cfg)
    else:
        fmodel, tok, base = models
        base_ref = cfg.base or "base"
        if fps is None:
            raise ConfigError("run_robustness(models=...) needs fps", hint="pass the FingerprintSet")

    def save():
        write_json_atomic(path, results)

    def meas(model, label, **kw):
        return measure(model, tok, fps, label=label, alpha=cfg.alpha, seed=cfg.seed, **kw)

    docs, ppl_source = heldout_texts(cfg.ppl_docs, tok)
    results.setdefault("sources", {})["perplexity"] = ppl_source
    results["alpha"] = cfg.alpha
    if "base_prob" not in results:
        probs = [fp.base_prob for fp in fps.fingerprints if fp.base_prob is not None]
        results["base_prob"] = {"n": len(probs), "mean": sum(probs) / len(probs) if probs else None,
                                "max": max(probs) if probs else None, "values": probs}
    if "clean" not in results:
        results["clean"] = meas(fmodel, "fingerprinted")
        save()
    if "ppl" not in results:
        results["ppl"] = {"fp": perplexity(fmodel, tok, docs), "base": perplexity(base, tok, docs)}
        save()
    ppl_f = results["ppl"]["fp"]

    for exp in cfg.experiments:
        if exp in results:
            continue
        t0 = time.perf_counter()
        if exp == "utility":
            items, mc_source = trivia_items(cfg.mc_subset, cfg.seed)
            mc_f, mc_b = trivia_mc(fmodel, tok, items), trivia_mc(base, tok, items)
            results["sources"]["trivia_mc"] = mc_source
            res = {"ppl_fp": ppl_f, "ppl_base": results["ppl"]["base"], "ppl_ratio": ppl_f / results["ppl"]["base"],
                   "mc_fp": mc_f, "mc_base": mc_b, "mc_ratio": mc_f / mc_b if mc_b else None, "mc_items": len(items)}
        elif exp == "sft":
            model = copy.deepcopy(fmodel)
            epochs: list[dict] = []

            def after(epoch, steps, loss, model=model, epochs=epochs):
                ppl = perplexity(model, tok, docs)  # utility after each epoch, beside retention
                epochs.append({"epoch": epoch, "steps": steps, "loss": loss, "ppl": ppl,
                               "ppl_ratio_base": ppl / results["ppl"]["base"], "ppl_ratio_fp": ppl / ppl_f,
                               **_short(meas(model, f"sft epoch {epoch}"))})

            info = sft_attack(model, tok, lr=cfg.sft_lr, epochs=cfg.sft_epochs, batch_size=cfg.sft_batch_size,
                              max_steps=cfg.sft_max_steps, seed=cfg.seed, on_epoch=after)
            res = {**info, "lr": cfg.sft_lr, "epochs": epochs,
                   "retention": epochs[-1]["exact"] / max(results["clean"]["exact"], 1e-12),
                   "ppl_ratio_after": epochs[-1]["ppl_ratio_fp"] if epochs else None}
            del model
        elif exp == "merge":
            other = base
            if cfg.merge_with is not None:
                from trustlab.models import load_causal_lm

                from .tiny import resolve_model_ref

                other, _ = load_causal_lm(resolve_model_ref(cfg.merge_with))
            rows = []
            for a in cfg.merge_alphas:
                merged = merge_linear(fmodel, other, a)
                rows.append({"alpha": a, **_short(meas(merged, f"merge {a:g}"))})
                del merged
            res = {"with": cfg.merge_with or base_ref, "alphas": rows}
        elif exp == "wrappers":
            rows = [{"template": i, "text": TEST_TEMPLATES[i], **_short(meas(fmodel, f"wrapper {i}", wrapper=i))}
                    for i in range(len(TEST_TEMPLATES))]
            res = {"templates": rows, "mean_exact": sum(r["exact"] for r in rows) / len(rows),
                   "mean_lenient": sum(r["lenient"] for r in rows) / len(rows)}
        elif exp == "temperature":
            rows = [{"temperature": t, "samples": 1 if t == 0 else cfg.samples,
                     **_short(meas(fmodel, f"T {t:g}", temperature=t, samples=1 if t == 0 else cfg.samples))}
                    for t in cfg.temperatures]
            res = {"temperatures": rows}
        elif exp == "quant":
            rows = []
            for method, what in QUANT_METHODS.items():
                q = quantize_int8(fmodel, method)
                rows.append({"method": method, "what": what, "before": _short(results["clean"]),
                             "after": _short(meas(q, f"int8 {method}")), "ppl_ratio": perplexity(q, tok, docs) / ppl_f})
                del q
            res = {"methods": rows}
        elif exp == "suppress":
            before = results["clean"]["hits"]
            rows = []
            for attack in (SuppressTopK(cfg.suppress_k, cfg.suppress_n),
                           SuppressTopK(cfg.suppress_k, cfg.suppress_n, cfg.suppress_tau)):
                after_m = meas(fmodel, attack.name, processors=[attack])
                kept = sum(b and a for b, a in zip(before, after_m["hits"]))
                rows.append({"attack": attack.name, "k": attack.k, "steps": attack.steps, "tau": attack.tau,
                             "attack_success": 1 - kept / sum(before) if sum(before) else None,
                             **_short(after_m),
                             "ppl_ratio": perplexity(fmodel, tok, docs, attack=attack) / ppl_f})
            res = {"attacks": rows, "paper": "arXiv 2509.26598: 94-100 % success at < 10 % utility loss"}
        elif exp == "fpr":
            res = {}
            for name, model in (("base", base), ("foreign", None)):
                if model is None:
                    if cfg.foreign_model is not None:
                        from trustlab.models import load_causal_lm

                        from .tiny import resolve_model_ref

                        model, ftok = load_causal_lm(resolve_model_ref(cfg.foreign_model))
                        res[name] = {**_fpr_foreign(model, ftok, fps, cfg), "model": cfg.foreign_model}
                        continue
                    model = foreign_model(base, cfg.seed)
                res[name] = {**_short(meas(model, name)),
                             "model": base_ref if name == "base" else f"random init of {base_ref} (seed {cfg.seed})"}
        else:  # pragma: no cover - RobustnessConfig validates the names
            raise ConfigError(f"unknown experiment {exp!r}")
        res["seconds"] = round(time.perf_counter() - t0, 2)
        results[exp] = res
        save()
    from . import plots

    arts = plots.robustness_plots(results, run.path / "plots")
    run.write_results(_headline(results), artifacts=[path, *arts], robustness=results,
                      caveat=results["clean"].get("caveat") or _caveat())
    return RobustnessResult(run.path, results)


def _fpr_foreign(model, ftok, fps, cfg) -> dict[str, Any]:
    """A foreign model with its own tokenizer: text (lenient) matching, since exact ids are meaningless."""
    from .backends import HFBackend
    from .config import VerifyConfig
    from .verify import verify

    res = verify(fps, HFBackend(model, ftok), VerifyConfig(model="foreign", match="lenient", alpha=cfg.alpha))
    d = res.decision
    return {"exact": None, "lenient": d.m / d.M, "m": d.m, "M": d.M, "p_value": d.p_value, "decision": d.decision,
            "line": res.line, "match": "lenient"}


def _caveat() -> str:
    from .stats import ATTACK_CAVEAT

    return ATTACK_CAVEAT


def _short(m: dict[str, Any]) -> dict[str, Any]:
    keep = ("p0", "exact", "lenient", "persistence", "m", "M", "p_value", "log10_p_value", "hoeffding_bound",
            "decision", "line",
            "mean_hit_rate", "any_hit_rate", "hits")
    return {k: m[k] for k in keep if k in m}


def _headline(r: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"clean_exact": r["clean"]["exact"], "clean_decision": r["clean"]["decision"]}
    if "utility" in r:
        out.update(ppl_ratio=r["utility"]["ppl_ratio"], mc_ratio=r["utility"]["mc_ratio"])
    if "sft" in r and r["sft"]["epochs"]:
        out["sft_retention"] = r["sft"]["retention"]
    if "suppress" in r:
        out["suppress_success"] = {a["attack"]: a["attack_success"] for a in r["suppress"]["attacks"]}
    if "fpr" in r:
        out["false_claims"] = sum(f["decision"] == "OWNED" for f in r["fpr"].values() if isinstance(f, dict))
    return out
