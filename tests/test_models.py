import numpy as np
import pytest
import torch

from trustlab.models import load_causal_lm, mlp, small_cnn
from trustlab.runtime.errors import ConfigError, ModelError


def test_mlp_and_cnn_shapes():
    x = torch.rand(5, 1, 28, 28)
    assert mlp((1, 28, 28), (64, 32), 10)(x).shape == (5, 10)
    cnn = small_cnn((1, 28, 28), 10)
    assert cnn(x).shape == (5, 10)
    assert isinstance(cnn, torch.nn.Sequential) and [type(m).__name__ for m in cnn][:2] == ["Conv2d", "ReLU"]
    assert small_cnn((3, 8, 8), 4, channels=(8,), hidden=20)(torch.rand(2, 3, 8, 8)).shape == (2, 4)
    with pytest.raises(ConfigError, match="num_classes"):
        mlp(4, (8,), 1)


def test_tiny_llama_is_small_deterministic_and_generates(tiny_lm):
    model, tok = tiny_lm
    n_params = sum(p.numel() for p in model.parameters())
    assert 0.5e6 < n_params < 1.5e6
    again, _ = load_causal_lm("tiny-llama")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    enc = tok.apply_chat_template([{"role": "user", "content": "héllo"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    assert tok.decode(enc["input_ids"][0]).endswith("<|im_start|>assistant\n")
    out = model.generate(**enc, max_new_tokens=6, do_sample=False)
    assert out.shape == (1, enc["input_ids"].shape[1] + 6)
    assert torch.equal(out, model.generate(**enc, max_new_tokens=6, do_sample=False))  # greedy is reproducible


def test_unknown_model_and_bad_folder(tmp_path):
    with pytest.raises(ConfigError, match="unknown model 'gpt9'"):
        load_causal_lm("gpt9")
    with pytest.raises(ModelError, match="no config.json"):
        load_causal_lm(str(tmp_path))
    with pytest.raises(ModelError, match="does not exist"):
        load_causal_lm(str(tmp_path / "m.gguf"))


def test_hub_name_offline_fails_fast_with_hint(monkeypatch, tmp_path):
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    t0 = time.monotonic()
    with pytest.raises(ModelError) as err:
        load_causal_lm("someorg/some-model")
    assert time.monotonic() - t0 < 20
    assert "HF_HUB_OFFLINE" in err.value.message and "local folder" in err.value.hint


def test_local_folder_round_trip(tiny_lm, tmp_path):
    model, tok = tiny_lm
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded, tok2 = load_causal_lm(str(tmp_path / "m"))
    ids = torch.tensor([tok2.encode("abc")])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, loaded(ids).logits)


@pytest.mark.slow
def test_smollm2_cache_equals_gguf(tmp_path, monkeypatch):
    """The safetensors cache gives the same logits and token ids as the de-quantised GGUF."""
    from trustlab.models.causal_lm import load_gguf_uncached, save_converted

    monkeypatch.setenv("TRUSTLAB_CACHE", str(tmp_path))
    gguf_model, gguf_tok = load_gguf_uncached()
    folder = save_converted(gguf_model, gguf_tok, tmp_path / "models" / "smollm2-135m-instruct")
    cached, tok = load_causal_lm("smollm2-135m-instruct")  # must come from the folder just written
    assert (folder / "model.safetensors").is_file()
    msgs = [{"role": "user", "content": "Name three primary colours."}]
    a = gguf_tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    b = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert torch.equal(a["input_ids"], b["input_ids"])
    with torch.no_grad():
        la, lb = gguf_model(**a).logits, cached(**b).logits
    assert np.abs((la - lb).numpy()).max() < 1e-4


@pytest.mark.parametrize("cut,words", [
    (lambda b: b[:len(b) // 2], "is truncated: "),          # an interrupted copy
    (lambda b: b[:-1], "is truncated: "),                   # one byte short
    (lambda b: b"", "is empty (0 bytes)"),
    (lambda b: b"\xff" * 64, "truncated or not safetensors"),  # a header length beyond the file
    (lambda b: (8).to_bytes(8, "little") + b"not json", "not a safetensors file"),
])
def test_damaged_safetensors_is_a_model_error_naming_the_file(tiny_lm, tmp_path, cut, words):
    model, tok = tiny_lm
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    weights.write_bytes(cut(weights.read_bytes()))
    with pytest.raises(ModelError) as err:
        load_causal_lm(str(tmp_path / "m"))
    assert str(weights) in err.value.message and words in err.value.message
    assert "copy or download it again" in err.value.hint


@pytest.mark.parametrize("content,words", [(b"", "is empty"), (b"PK\x03\x04zip", "is not a GGUF file"),
                                           (b"GGUF\x03\x00\x00\x00", "cannot read GGUF file")])
def test_a_gguf_that_is_not_one_is_a_model_error_naming_the_file(tmp_path, monkeypatch, content, words):
    monkeypatch.setenv("TRUSTLAB_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "m.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelError, match=words) as err:
        load_causal_lm(str(path))
    assert str(path) in err.value.message
    assert not (tmp_path / "cache" / "models").exists() or not any((tmp_path / "cache" / "models").iterdir())


def test_identity_is_computed_once_and_names_the_object(tiny_lm, tmp_path, monkeypatch):
    """Issue 17 item 2: name_or_path + weights digest come from the object, once; a changed weight is re-hashed."""
    import warnings

    from trustlab.models import identity as ident

    model, tok = load_causal_lm("tiny-llama")
    session = ident.model_identity(tiny_lm[0])
    calls = []
    real = ident.weights_digest
    monkeypatch.setattr(ident, "weights_digest", lambda m: calls.append(1) or real(m))
    first = ident.model_identity(model)
    assert ident.model_identity(model) is first and len(calls) == 1  # cached on the object
    assert first.name_or_path == "tiny-llama" and first.architecture == "LlamaForCausalLM"
    assert first.n_params == sum(p.numel() for p in model.parameters()) and first.family == "tiny"
    assert first.weights_sha256 == session.weights_sha256  # same weights, same digest
    import hashlib

    ref = hashlib.sha256()  # the byte layout fingerprint files have always recorded: name|dtype|shape| + float32 bytes
    for name, t in model.state_dict().items():
        ref.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        ref.update((t.float() if t.dtype.is_floating_point else t).contiguous().numpy().tobytes())
    assert first.weights_sha256 == ref.hexdigest()
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # trained in place: a new digest
    assert ident.model_identity(model).weights_sha256 != first.weights_sha256 and len(calls) == 2
    # a folder load names the folder; a config naming another model is a request: one warning names both
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    loaded, _ = load_causal_lm(str(tmp_path / "m"))
    found = ident.model_identity(loaded)
    assert found.name_or_path == str(tmp_path / "m")
    assert found.weights_sha256 == ident.model_identity(model).weights_sha256
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ident.check_request(found, "smollm2-135m-instruct")
        ident.check_request(found, str(tmp_path / "m"))  # the same folder: no warning
    assert len(caught) == 1 and "smollm2-135m-instruct" in str(caught[0].message) \
        and str(tmp_path / "m") in str(caught[0].message)


def test_fp_tiny_is_listed_by_models_list(cli):
    from trustlab.models.causal_lm import MODELS, listing

    assert "fp-tiny" in MODELS and any(r["name"] == "fp-tiny" and r["available"] for r in listing())
    code, out, _ = cli("models", "list")
    assert code == 0 and "fp-tiny" in out


def test_fp_tiny_loads_by_its_registry_name():
    from trustlab.fingerprint.tiny import prepare_tiny
    from trustlab.models.identity import model_identity

    model, tok = load_causal_lm("fp-tiny")
    ident = model_identity(model)
    assert ident.name_or_path == str(prepare_tiny()) and ident.family == "tiny" and tok.bos_token == "<s>"


def test_a_request_matches_the_object_by_path_registry_name_or_family(tmp_path):
    from trustlab.models.causal_lm import cached_dir
    from trustlab.models.identity import ModelIdentity, matches

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(12))
    converted = ModelIdentity(str(cached_dir(f"gguf-m-{gguf.stat().st_size}")), "0" * 64, "LlamaForCausalLM", 10)
    assert matches(converted, str(gguf)) and not matches(converted, "tiny-llama")
    smol_copy = ModelIdentity(str(tmp_path / "my-smollm2"), "1" * 64, "LlamaForCausalLM", 134_515_008)
    assert smol_copy.family == "smollm2-135m-instruct" and matches(smol_copy, "smollm2")
    assert ModelIdentity("org/big", "2" * 64, "LlamaForCausalLM", 8_000_000_000).family is None
