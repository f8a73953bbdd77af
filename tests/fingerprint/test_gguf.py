"""The GGUF theft path on fp-tiny: llama.cpp's converter, its quantizer, its server, and ``fingerprint verify``.

The fingerprinted fp-tiny is converted to GGUF F16 and quantized to Q8_0 and Q4_K_M; each file is served by
llama.cpp's OpenAI-compatible server and verified through the endpoint with the CLI. The never-fingerprinted base,
converted the same way, must be judged not owned with zero hits (its greedy choice is never a perinucleus
response). Without llama-cpp-python or the unpacked converter the test FAILS (``make llamacpp gguf-converter``)
unless TRUSTLAB_SKIP_LLAMACPP=1. llama-cpp-python's server answers a list of prompts with HTTP 500 (an assertion
in its completions route), so verification sends one key per request (``--batch-size 1``).
"""

from __future__ import annotations

import json
import os

import pytest

from trustlab.runtime.errors import MissingDependencyError

def test_bad_inputs_are_one_line_errors(tmp_path, monkeypatch):
    from trustlab.models import gguf
    from trustlab.runtime.errors import ConfigError

    with pytest.raises(ConfigError, match="no config.json"):
        gguf.convert_to_gguf(tmp_path, tmp_path / "x.gguf")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="outtype 'q4'"):
        gguf.convert_to_gguf(tmp_path, tmp_path / "x.gguf", outtype="q4")
    (tmp_path / "x.gguf").write_bytes(b"mine")
    with pytest.raises(ConfigError, match="already exists"):
        gguf.convert_to_gguf(tmp_path, tmp_path / "x.gguf")
    assert (tmp_path / "x.gguf").read_bytes() == b"mine"  # never overwritten
    monkeypatch.setenv(gguf.CONVERTER_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(MissingDependencyError, match="not unpacked") as err:
        gguf.convert_to_gguf(tmp_path, tmp_path / "y.gguf")
    assert "make gguf-converter" in err.value.hint
    with pytest.raises(ConfigError, match="Q3_X"):
        gguf.quantize_gguf(tmp_path / "x.gguf", tmp_path / "z.gguf", "Q3_X")
    with pytest.raises(ConfigError, match="already exists"):
        gguf.quantize_gguf(tmp_path / "x.gguf", tmp_path / "x.gguf", "Q8_0")


@pytest.fixture(scope="module")
def ggufs(tiny_embedded, fp_tiny_path, tmp_path_factory):
    from trustlab.models.gguf import convert_to_gguf, converter_dir, quantize_gguf
    from trustlab.models.llm.llamacpp_server import require_llamacpp_server

    try:
        require_llamacpp_server()
        converter_dir()
    except MissingDependencyError as exc:
        if os.environ.get("TRUSTLAB_SKIP_LLAMACPP") == "1":
            pytest.skip(f"{exc} and TRUSTLAB_SKIP_LLAMACPP=1")
        pytest.fail(f"{exc} (or set TRUSTLAB_SKIP_LLAMACPP=1)")
    d = tmp_path_factory.mktemp("gguf")
    f16 = convert_to_gguf(tiny_embedded["model_dir"], d / "fp-F16.gguf")
    files = {"F16": f16, **{q: quantize_gguf(f16, d / f"fp-{q}.gguf", q) for q in ("Q8_0", "Q4_K_M")}}
    base = convert_to_gguf(fp_tiny_path, d / "base-F16.gguf")
    fp_file = d / "fingerprints.json"
    tiny_embedded["fps"].save(fp_file)
    return {"files": files, "base": base, "fp_file": fp_file, "dir": d, "fps": tiny_embedded["fps"]}


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # llama_cpp's log callback, not ours
@pytest.mark.slow
@pytest.mark.llamacpp
def test_gguf_tokenizes_keys_like_the_hf_tokenizer(ggufs, fp_tiny):
    import llama_cpp

    from trustlab.models.gguf import tensor_types

    _, tok = fp_tiny
    lm = llama_cpp.Llama(str(ggufs["files"]["F16"]), vocab_only=True, verbose=False)
    for fp in ggufs["fps"].fingerprints:
        assert lm.tokenize(fp.key_text.encode(), add_bos=True, special=True) == tok(fp.key_text)["input_ids"]
    assert tensor_types(ggufs["files"]["Q8_0"]).keys() <= {"Q8_0", "F32"}
    assert "Q8_0" not in tensor_types(ggufs["files"]["F16"])


def _verify(cli, ggufs, path, name):
    from trustlab.models.llm.llamacpp_server import LlamaServer

    out = ggufs["dir"] / name
    with LlamaServer(path, alias="suspect", n_ctx=256) as srv:
        code, stdout, err = cli("fingerprint", "verify", "--fingerprints", str(ggufs["fp_file"]),
                                "--endpoint", srv.base_url, "--served-model", "suspect", "--batch-size", "1",
                                "--out", str(out))
    assert code == 0, err
    return json.loads((out / "verify_result.json").read_text()), stdout


@pytest.mark.slow
@pytest.mark.llamacpp
def test_fingerprints_survive_gguf_quantization(ggufs, cli):
    res, out = _verify(cli, ggufs, ggufs["base"], "base")
    assert res["decision"] == "not owned" and res["m"] == 0, out
    for q, path in ggufs["files"].items():
        res, out = _verify(cli, ggufs, path, q)
        assert res["answered"] == res["M"] == 32, out
        assert res["decision"] == "OWNED" and res["m"] >= 0.9 * res["M"], (q, out)
