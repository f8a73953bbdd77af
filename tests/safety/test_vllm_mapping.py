"""The vLLM backend's pure mappings (GenParams -> Decoding -> SamplingParams keywords; a vLLM output -> Completion),
checked with fake vLLM objects: vllm itself is never imported here."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest

from trustlab.models.llm.local import Completion, Decoding
from trustlab.runtime.errors import MissingDependencyError
from trustlab.safety.backends import vllm as V
from trustlab.safety.backends.base import GenParams
from trustlab.safety.backends.hf import decoding


def test_greedy_params_map_to_greedy_sampling_kwargs():
    kw = V.sampling_kwargs(decoding(GenParams(max_tokens=20)))
    assert kw == {"n": 1, "max_tokens": 20, "temperature": 0.0, "top_p": 1.0, "top_k": -1,
                  "repetition_penalty": 1.0, "stop": None, "seed": None}


def test_sampled_params_keep_every_setting_and_the_seed():
    p = GenParams(max_tokens=64, temperature=0.7, top_p=0.9, top_k=40, repetition_penalty=1.1,
                  stop=("</think>", "\n\n"), seed=7)
    kw = V.sampling_kwargs(decoding(p), p.seed)
    assert kw == {"n": 1, "max_tokens": 64, "temperature": 0.7, "top_p": 0.9, "top_k": 40,
                  "repetition_penalty": 1.1, "stop": ["</think>", "\n\n"], "seed": 7}


def test_top_k_off_and_min_tokens():
    assert V.sampling_kwargs(decoding(GenParams(top_k=-1, temperature=1.0)))["top_k"] == -1
    assert V.sampling_kwargs(Decoding(max_new_tokens=5, top_k=0))["top_k"] == -1
    kw = V.sampling_kwargs(Decoding(max_new_tokens=8, min_new_tokens=3, n=4))
    assert kw["min_tokens"] == 3 and kw["n"] == 4 and kw["max_tokens"] == 8
    assert "min_tokens" not in V.sampling_kwargs(Decoding(max_new_tokens=8))


def out(*samples):
    return SimpleNamespace(outputs=[SimpleNamespace(text=t, token_ids=ids, finish_reason=fr) for t, ids, fr in samples])


def test_output_maps_to_the_shared_completion():
    d = Decoding(max_new_tokens=4, stop=("</think>",))
    got = V.completions_of(out(("abc", [5, 6, 7], "stop"), ("long one", [1, 2, 3, 4], "length")), d)
    assert got == [Completion("abc", 3, "stop", token_ids=(5, 6, 7)),
                   Completion("long one", 4, "length", token_ids=(1, 2, 3, 4))]
    assert all(isinstance(c, Completion) and c.ok for c in got)
    # a stop string the engine left in the text is cut here, as every backend cuts it
    [c] = V.completions_of(out(("reason</think>answer", [1, 2, 3], "stop")), d)
    assert c.text == "reason" and c.finish_reason == "stop"
    # an abort (or any other engine reason) is not "length"
    [c] = V.completions_of(out(("x", [1], "abort")), Decoding(max_new_tokens=4))
    assert c.finish_reason == "stop"


class FakeLLM:
    def __init__(self):
        self.calls = []

    def get_tokenizer(self):
        return SimpleNamespace(chat_template=None, bos_token="", eos_token="", encode=lambda t, **_: list(t))

    def generate(self, prompts, params, use_tqdm=False):
        self.calls.append((prompts, params))
        return [out((f"{p}!", [1] * min(sp["max_tokens"], 2), "stop")) for p, sp in zip(prompts, params)]


def test_backend_builds_one_sampling_params_per_prompt(monkeypatch):
    monkeypatch.setattr(V, "import_vllm", lambda: SimpleNamespace(SamplingParams=dict))
    llm = FakeLLM()
    b = V.VLLMBackend(llm)
    got = b.complete(["a", "b"], [GenParams(max_tokens=3, seed=1), GenParams(max_tokens=9, temperature=0.5, seed=2)])
    assert [c.text for c in got] == ["a!", "b!"] and [c.tokens for c in got] == [2, 2]
    prompts, params = llm.calls[0]
    assert prompts == ["a", "b"]
    assert [(p["max_tokens"], p["temperature"], p["seed"]) for p in params] == [(3, 0.0, 1), (9, 0.5, 2)]
    # LocalLM's protocol: an int seed gives row i seed + i
    b.generate(["a", "b", "c"], Decoding(max_new_tokens=2, temperature=1.0), seed=10)
    assert [p["seed"] for p in llm.calls[1][1]] == [10, 11, 12]


def test_missing_vllm_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(MissingDependencyError) as e:
        V.import_vllm()
    assert "pip install 'trustlab[vllm]'" in e.value.hint
