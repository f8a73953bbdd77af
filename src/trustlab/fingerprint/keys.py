"""Key generation and ``generate_fingerprints`` (spec §2 Keys, Response strategies).

Keys: the generator LM (default the target model) is asked "Generate a sentence starting with the word {w}"
through its chat template; a model without one is prompted with the seed word itself, which then opens the key.
Sampling at ``key_temperature`` with no top-k/top-p and ``max_new_tokens = key_length + 8``; the text is stripped
and cut to ``key_length`` target-tokenizer tokens. A key is rejected when empty, shorter than 8 tokens, ending in
whitespace, a duplicate, or when ``encode(decode(ids)) != ids``; perinucleus also rejects keys with fewer than k
candidates. At most 5·N keys are tried; then generation stops with the reject counts by reason.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Sequence

import numpy as np

from trustlab.runtime.errors import DataError
from trustlab.runtime.files import read_text
from trustlab.runtime.progress import task
from trustlab.runtime.workload import require_time

from .config import GenerateConfig
from trustlab.models.finetune import IGNORE, collate

from .dataset import Example, prompt_ids
from .fpset import Fingerprint, FingerprintSet, adds_bos, tokenizer_info
from .secret import commitment
from . import strategies as S

INSTRUCTION = "Generate a sentence starting with the word {w}"
MIN_KEY_TOKENS = 8


def seed_words(tokenizer: Any, path: str | None = None) -> list[str]:
    """Seed words from a file (one per line) or the tokenizer's word-initial entries of 4-10 lowercase letters."""
    if path:
        words = [w.strip() for w in read_text(path, what="seed word file").splitlines() if w.strip()]
        if not words:
            raise DataError(f"seed word file {path!r} holds no words", hint="write one word per line")
        return words
    _, pool = S.token_masks(tokenizer, alnum_filter=False)
    words = sorted({tokenizer.decode([i]).strip() for i in pool})
    if not words:
        raise DataError("the tokenizer has no word-initial entries of 4-10 lowercase letters to seed keys",
                        hint="pass seed_words: FILE with one word per line")
    return words


def _left_batch(prompts: Sequence[Sequence[int]], pad: int):
    return collate([Example(tuple(p), (IGNORE,) * len(p)) for p in prompts], pad, side="left")


def _pad_id(tok: Any) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def sample_key_texts(model: Any, tok: Any, words: Sequence[str], cfg: GenerateConfig, seed: int) -> list[str]:
    """One sampled sentence per seed word (see module doc)."""
    chat = bool(getattr(tok, "chat_template", None))
    prompts = []
    for w in words:
        if chat:
            text = tok.apply_chat_template([{"role": "user", "content": INSTRUCTION.format(w=w)}], tokenize=False,
                                           add_generation_prompt=True)
            prompts.append(tok.encode(text, add_special_tokens=False))
        else:
            prompts.append(([tok.bos_token_id] if adds_bos(tok) else []) + tok.encode(w, add_special_tokens=False))
    if not prompts:
        return []
    from trustlab.models.llm.local import Decoding, LocalLM

    # one batch seeded with ``seed``; the global RNG and the tokenizer are left alone
    outs = LocalLM(model, tok, batch_size=len(prompts)).generate(
        prompts, Decoding(max_new_tokens=cfg.key_length + 8, temperature=cfg.key_temperature), seed=seed)
    return [o[0].text if chat else f"{w} {o[0].text}" for w, o in zip(words, outs)]


def clean_key(tok: Any, text: str, key_length: int) -> tuple[list[int] | None, str]:
    """(ids, "") for an acceptable key, else (None, reason)."""
    text = text.strip()
    if not text:
        return None, "empty"
    ids = tok.encode(text, add_special_tokens=False)[:key_length]
    if len(ids) < MIN_KEY_TOKENS:
        return None, "too_short"
    if set(ids) & set(tok.all_special_ids):  # e.g. <unk>: it cannot decode back to the text
        return None, "not_reencodable"
    decoded = tok.decode(ids)
    if decoded != decoded.rstrip():
        return None, "trailing_whitespace"
    if tok.encode(decoded, add_special_tokens=False) != ids:
        return None, "not_reencodable"
    return ids, ""


def next_token_probs(model: Any, tok: Any, keys: Sequence[Sequence[int]], prompt_format: str,
                     batch_size: int = 16) -> np.ndarray:
    """The model's fp32 next-token distribution after each key in the training layout: [n, vocab]."""
    import torch

    rows = []
    for s in range(0, len(keys), batch_size):
        prompts = [prompt_ids(tok, k, prompt_format) for k in keys[s:s + batch_size]]
        b = _left_batch(prompts, _pad_id(tok))
        with torch.no_grad():
            logits = model(input_ids=b["input_ids"].to(model.device), attention_mask=b["attention_mask"].to(model.device),
                           position_ids=b["position_ids"].to(model.device)).logits[:, -1]
        rows.append(logits.float().softmax(-1).cpu().numpy())
    return np.concatenate(rows)[:, : len(tok)] if rows else np.zeros((0, len(tok)))


def greedy_continue(model: Any, tok: Any, prompt: Sequence[int], first: int, length: int) -> list[int]:
    """[first] + (length - 1) greedy tokens of ``model`` after prompt + first."""
    from trustlab.models.llm.local import Decoding, LocalLM

    if length <= 1:
        return [first]
    [[c]] = LocalLM(model, tok, batch_size=1).generate(
        [list(prompt) + [first]], Decoding(max_new_tokens=length - 1, min_new_tokens=length - 1))
    return [first] + list(c.token_ids)


def check_workload(cfg: GenerateConfig, model: Any, tok: Any, kmodel: Any, ktok: Any) -> None:
    """ConfigError (exit 2) before any sampling when a key plus its response does not fit the target model's
    context, a sampled key does not fit the key model's, or the keys' next-token distributions (kept until the
    responses are chosen) and one batch of logits would not fit in memory."""
    from trustlab.runtime.workload import model_context, require_context, require_memory

    query = len(prompt_ids(tok, [0] * cfg.key_length, cfg.prompt_format))
    require_context(f"a fingerprint of key_length {cfg.key_length:,} + response_length {cfg.response_length:,} "
                    f"({query:,} query tokens in the {cfg.prompt_format} layout)", query + cfg.response_length,
                    model_context(model, tok), cfg.model,
                    hint="lower key_length / response_length (--key-length, --response-length) to fit the context")
    instruction = len(ktok.encode(INSTRUCTION.format(w="word"), add_special_tokens=True)) + 16  # + chat markup
    require_context(f"sampling a key of key_length {cfg.key_length:,}", instruction + cfg.key_length + 8,
                    model_context(kmodel, ktok), cfg.key_model or cfg.model,
                    hint="lower key_length (--key-length) to fit the key model's context")
    need, vocab = cfg.num_fingerprints + 1, len(tok)
    rows = min(cfg.batch_size, 5 * need)
    nbytes = 4.0 * vocab * (need + rows * query) + 8.0 * 5 * need * cfg.key_length
    require_memory(f"generating {cfg.num_fingerprints:,} fingerprints (a {vocab:,}-token distribution kept per key, "
                   f"batches of {rows:,})", nbytes,
                   hint="ask for fewer fingerprints (-n / num_fingerprints) or a smaller batch_size")


def generate_fingerprints(cfg: GenerateConfig, secret: bytes, lm: tuple[Any, Any] | None = None,
                          key_lm: tuple[Any, Any] | None = None, model_ref: str | None = None) -> FingerprintSet:
    """N fingerprints for the target model ``lm`` = (model, tokenizer) (loaded from ``cfg.model`` when None).

    Keys come from ``key_lm`` (default: ``cfg.key_model``, else the target); responses follow ``cfg.strategy``,
    every secret choice keyed by ``secret`` through HMAC. Deterministic for a given (cfg, secret, model)."""
    from trustlab.runtime.seeding import derive_seed

    from .tiny import resolve_model_ref

    if lm is None:
        from trustlab.models import load_causal_lm

        lm = load_causal_lm(resolve_model_ref(cfg.model))
    if key_lm is None:
        if cfg.key_model is not None:
            from trustlab.models import load_causal_lm

            key_lm = load_causal_lm(resolve_model_ref(cfg.key_model))
        else:
            key_lm = lm
    model, tok = lm
    kmodel, ktok = key_lm
    check_workload(cfg, model, tok, kmodel, ktok)
    was = (model.training, kmodel.training)
    model.eval(), kmodel.eval()
    ok_mask, pool = S.token_masks(tok, cfg.alnum_filter)
    if cfg.strategy in ("english_random", "random_word") and not pool:
        raise DataError("the tokenizer has no whole-word tokens of 4-10 lowercase letters for the word pool V_w",
                        hint="use strategy perinucleus")
    p0, heuristic = S.null_p(cfg.strategy, cfg.nucleus_k, len(pool), cfg.response_length, cfg.null_p)
    if heuristic and cfg.null_p is None:
        import warnings

        warnings.warn("strategy english has no exact null hit rate: using null_p = 1/3 (heuristic); "
                      "verdicts on this set are marked heuristic", stacklevel=2)
    n, need = cfg.num_fingerprints, cfg.num_fingerprints + (1 if cfg.strategy == "english" else 0)
    words = seed_words(ktok, cfg.seed_words)
    rng = np.random.default_rng(derive_seed(cfg.seed, "seed-words"))
    rejects: Counter[str] = Counter()
    accepted: list[tuple[list[int], dict[str, Any]]] = []  # (key ids, response info)
    seen: set[tuple[int, ...]] = set()
    budget, tried, round_ = 5 * need, 0, 0
    t_start = time.perf_counter()
    with task(f"keys for {n} fingerprints", need) as bar:
        while len(accepted) < need and tried < budget:
            m = min(cfg.batch_size, budget - tried)
            if cfg.strategy == "random_word":
                texts = [tok.decode(S.random_words(secret, f"rwk|{tried + j}", pool, cfg.key_length)) for j in range(m)]
            else:
                batch_words = [str(w) for w in rng.choice(words, size=m)]
                texts = sample_key_texts(kmodel, ktok, batch_words, cfg, derive_seed(cfg.seed, "keys", round_))
            tried, round_ = tried + m, round_ + 1
            fresh = []
            for text in texts:
                ids, why = clean_key(tok, text, cfg.key_length)
                if ids is not None and tuple(ids) in seen:
                    ids, why = None, "duplicate"
                if ids is None:
                    rejects[why] += 1
                    continue
                seen.add(tuple(ids))
                fresh.append(ids)
            if not fresh:
                continue
            probs = next_token_probs(model, tok, fresh, cfg.prompt_format, cfg.batch_size)
            for ids, q in zip(fresh, probs):
                if len(accepted) >= need:
                    break
                key_text = tok.decode(ids)
                info: dict[str, Any] = {"q": q}
                if cfg.strategy == "perinucleus":
                    try:
                        c = S.perinucleus_candidates(q, cfg.nucleus_t, cfg.nucleus_k, ok_mask, cfg.max_rank)
                    except S.TooFewCandidates:
                        rejects["too_few_candidates"] += 1
                        continue
                    info.update(first=S.perinucleus_choice(secret, key_text, c), cands=c)
                elif cfg.strategy == "english_random":
                    info.update(first=S.english_random_choice(secret, key_text, pool))
                elif cfg.strategy == "random_word":
                    info.update(response=S.random_words(secret, "rw|" + key_text, pool, cfg.response_length))
                accepted.append((ids, info))
                bar.advance(1)
            if round_ == 1:  # priced on the first round: every later round costs about the same
                require_time(f"generating {n:,} fingerprints ({-(-need // m):,} rounds of {m} keys at "
                             f"{time.perf_counter() - t_start:.2g} s each)",
                             (time.perf_counter() - t_start) * -(-need // m),
                             hint="ask for fewer fingerprints (-n / num_fingerprints)")
    model.train(was[0]), kmodel.train(was[1])
    if len(accepted) < need:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(rejects.items())) or "none"
        raise DataError(f"key budget spent: {len(accepted)} of {need} keys accepted after {tried} tries "
                        f"(rejected: {reasons})",
                        hint="ask for fewer fingerprints, raise key_temperature, lower nucleus_k or nucleus_t, "
                             "or give seed_words")
    fps = []
    for i, (ids, info) in enumerate(accepted[:n]):
        prompt = prompt_ids(tok, ids, cfg.prompt_format)
        if cfg.strategy == "english":
            response = S.english_response(accepted[i + 1][0], cfg.response_length)
        elif cfg.strategy == "random_word":
            response = info["response"]
        else:
            response = greedy_continue(model, tok, prompt, info["first"], cfg.response_length)
        cands = info.get("cands")
        fps.append(Fingerprint(id=i, key_text=tok.decode(ids), key_ids=tuple(ids), response_text=tok.decode(response),
                               response_ids=tuple(response), base_prob=float(info["q"][response[0]]),
                               candidates=cands.tokens if cands else None,
                               boundary_rank=cands.boundary_rank if cands else None))
    params = {"key_length": cfg.key_length, "response_length": cfg.response_length,
              "key_temperature": cfg.key_temperature, "nucleus_t": cfg.nucleus_t, "nucleus_k": cfg.nucleus_k,
              "max_rank": cfg.max_rank, "alnum_filter": cfg.alnum_filter, "prompt_format": cfg.prompt_format,
              "add_special_tokens": adds_bos(tok), "pool_size": len(pool), "seed": cfg.seed,
              "keys_tried": tried, "rejected": dict(sorted(rejects.items()))}
    from trustlab.models.identity import check_request, model_identity

    identity = model_identity(model)  # the base is the object the keys were drawn on, never a config's name
    check_request(identity, model_ref or cfg.model, "generate config")
    return FingerprintSet.create(
        strategy=cfg.strategy, params=params, base_identity=identity,
        base_model={"ref": model_ref or cfg.model, "weights_sha256": identity.weights_sha256},
        key_model=cfg.key_model, tokenizer=tokenizer_info(tok), secret_commitment=commitment(secret),
        null_p=p0, null_p_heuristic=heuristic, fingerprints=fps)
