"""``fp-tiny``: a pretrained ~0.27M-parameter Llama over a synthetic grammar, the fingerprint lab's test model.

The registry's ``tiny-llama`` is a random init whose next-token distributions are near flat, so a nucleus means
nothing there (spec §5). This model is pretrained for 600 steps (batch 32, length 40, lr 3e-3) on sentences of a
small grammar with topic-dependent Zipf word choice, over a word-level tokenizer (about 360 words, BOS added,
pad = eos). It is built once and cached as a Hugging Face folder under ``$TRUSTLAB_CACHE/models/`` (lock, temp dir,
rename), so every later load is a local ``from_pretrained``. It is the registry's ``fp-tiny``:
``load_causal_lm("fp-tiny")`` builds (once) and loads it; ``cache_folder()`` names the cache folder without building it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .cache import cache_root

NAME = "fp-tiny"
SETTINGS = {"version": 1, "steps": 600, "batch": 32, "length": 40, "lr": 3e-3, "hidden": 96, "intermediate": 256,
            "layers": 2, "heads": 4, "kv_heads": 2, "topics": 6, "seed": 0}

_SYL = ["ka", "lo", "mi", "ten", "ras", "vu", "dor", "pel", "sin", "gar", "tho", "bel", "nu", "fer", "qui", "zan"]
_FUNCTION = ["the", "a", "of", "and", "with", "near", "under", "over", "to", "from", "is", "was", "very", "not",
             "then", "so", "but", "this", "that", "my", "your", "our", "their", "every", "some", "one", "two", "three"]


def _words(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    out = []
    while len(out) < n:
        w = "".join(rng.choice(_SYL, size=int(rng.integers(2, 4))))
        if 4 <= len(w) <= 10 and w not in taken:
            taken.add(w)
            out.append(w)
    return out


def grammar(seed: int = 0):
    """(vocabulary words, sentence sampler): nouns, verbs, adjectives; each topic has its own Zipf ranking."""
    rng = np.random.default_rng(seed)
    taken = set(_FUNCTION)
    nouns, verbs, adjs = _words(rng, 150, taken), _words(rng, 90, taken), _words(rng, 90, taken)
    topics = [{k: rng.permutation(len(v)) for k, v in (("n", nouns), ("v", verbs), ("a", adjs))}
              for _ in range(SETTINGS["topics"])]

    def zipf(r: np.random.Generator, pool: list[str], order: np.ndarray) -> str:
        w = 1.0 / np.arange(1, len(pool) + 1) ** 1.1
        return pool[order[r.choice(len(pool), p=w / w.sum())]]

    def sentence(r: np.random.Generator, topic: int) -> list[str]:
        t = topics[topic]
        det = lambda: str(r.choice(_FUNCTION[:2] + _FUNCTION[17:25]))  # noqa: E731
        np_ = lambda: [det()] + ([zipf(r, adjs, t["a"])] if r.random() < 0.5 else []) + [zipf(r, nouns, t["n"])]  # noqa: E731
        s = np_() + [zipf(r, verbs, t["v"])] + np_()
        if r.random() < 0.5:
            s += [str(r.choice(_FUNCTION[2:9]))] + np_()
        if r.random() < 0.3:
            s += [str(r.choice(["and", "but", "then", "so"]))] + [zipf(r, verbs, t["v"])] + np_()
        return s

    return _FUNCTION + nouns + verbs + adjs, sentence


def tokenizer(words: list[str]):
    """Word-level fast tokenizer: ``<s>`` BOS added to every text, ``</s>`` EOS = pad, ``<unk>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", *words])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    core.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="</s>",
                                   unk_token="<unk>")


def corpus(n_seqs: int, length: int, seed: int, tok, sentence) -> np.ndarray:
    """``n_seqs`` token sequences of ``length`` (BOS first), each from one topic."""
    r = np.random.default_rng(seed)
    out = np.zeros((n_seqs, length), dtype=np.int64)
    for i in range(n_seqs):
        topic = int(r.integers(SETTINGS["topics"]))
        words: list[str] = []
        while len(words) < length:
            words += sentence(r, topic)
        out[i] = tok.encode(" ".join(words), add_special_tokens=True)[:length]
    return out


def build(folder: Path) -> Path:
    """Pretrain and save the model (about a minute on one CPU thread)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    s = SETTINGS
    words, sentence = grammar(s["seed"])
    tok = tokenizer(words)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=s["hidden"], intermediate_size=s["intermediate"],
                      num_hidden_layers=s["layers"], num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"],
                      max_position_embeddings=256, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s["seed"])
        model = LlamaForCausalLM(cfg)
        data = torch.from_numpy(corpus(s["steps"] * s["batch"] // 4, s["length"], s["seed"] + 1, tok, sentence))
        opt = torch.optim.AdamW(model.parameters(), lr=s["lr"], weight_decay=0.0)
        gen = torch.Generator().manual_seed(s["seed"])
        model.train()
        for _ in range(s["steps"]):
            batch = data[torch.randint(len(data), (s["batch"],), generator=gen)]
            loss = model(input_ids=batch, labels=batch).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    model.generation_config.pad_token_id = tok.pad_token_id
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "trustlab_tiny.json").write_text(json.dumps({"name": NAME, "settings": s}))
        if folder.exists():
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def cache_folder() -> Path:
    """The cache folder of this version of the model (built or not): the settings' hash is in its name."""
    tag = hashlib.sha256(json.dumps(SETTINGS, sort_keys=True).encode()).hexdigest()[:10]
    return cache_root() / "models" / f"{NAME}-{tag}"


def prepare_tiny() -> Path:
    """The cached ``fp-tiny`` folder, built on first use under a file lock (safe across processes)."""
    import fcntl

    target = cache_folder()
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").is_file():
            build(target)
    return target


def heldout_texts(n: int = 100, seed: int = 12345) -> list[str]:
    """``n`` held-out documents of the fp-tiny grammar (40 tokens each, a corpus seed never used in training),
    for perplexity on the tiny model (English text is all ``<unk>`` to its word-level vocabulary)."""
    words, sentence = grammar(SETTINGS["seed"])
    tok = tokenizer(words)
    ids = corpus(n, SETTINGS["length"], seed, tok, sentence)
    return [tok.decode(row[1:].tolist()) for row in ids]
