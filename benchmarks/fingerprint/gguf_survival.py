"""The GGUF theft path, measured: does a fingerprint survive conversion, quantization and llama.cpp's server?

A fingerprinted HF model is converted with llama.cpp's converter (``trustlab.models.gguf``, F16), quantized with
llama.cpp's quantizer (Q8_0, Q4_K_M), each file is served by ``python -m llama_cpp.server`` (one thread) and
verified through the endpoint with ``trustlab fingerprint verify --batch-size 1`` (llama-cpp-python's server
refuses prompt lists). The HF model verified locally is the reference row; the never-fingerprinted base converted
and served the same way is the control. Prints a Markdown table and writes ``survival.json`` into ``--work``.

    python benchmarks/fingerprint/gguf_survival.py --tiny --work /tmp/gguf-tiny
    python benchmarks/fingerprint/gguf_survival.py --model-dir runs/fp/model --fingerprints runs/fp/fingerprints.json \
        --base smollm2-135m-instruct --work /tmp/gguf-smollm2
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TRUSTLAB_QUIET", "1")

SECRET = bytes(range(32))  # the tiny build uses the test suite's secret (tests/fingerprint/conftest.py)


def build_tiny(work: Path) -> tuple[Path, Path, Path]:
    """fp-tiny with 32 perinucleus fingerprints embedded at the tiny preset, as the test fixture builds it."""
    import warnings

    from trustlab.fingerprint.config import EmbedConfig, GenerateConfig
    from trustlab.fingerprint.keys import generate_fingerprints
    from trustlab.fingerprint.tiny import prepare_tiny
    from trustlab.fingerprint.train import embed
    from trustlab.models import load_causal_lm

    base = Path(prepare_tiny())
    lm = load_causal_lm(str(base))
    fps = generate_fingerprints(GenerateConfig(model="fp-tiny", num_fingerprints=32), SECRET, lm=lm,
                                model_ref="fp-tiny")
    fp_file = work / "fingerprints.json"
    fps.save(fp_file)
    model, tok = load_causal_lm(str(base))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        embed(model, tok, fps, EmbedConfig(model="fp-tiny", save_every=0), out_dir=work / "embed", model_ref="fp-tiny")
    return work / "embed" / "model", fp_file, base


def verify(fp_file: Path, out: Path, *, model: str | None = None, endpoint: str | None = None,
           api: str | None = None) -> dict:
    from trustlab.cli.main import main

    args = ["fingerprint", "verify", "--fingerprints", str(fp_file), "--out", str(out)]
    args += ["--model", model] if model else ["--endpoint", endpoint, "--served-model", "suspect", "--batch-size", "1"]
    args += ["--api", api] if api else []
    t0 = time.perf_counter()
    buf_out, buf_err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err):
        try:
            main(args)
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise RuntimeError(f"verify failed ({exc.code}): {buf_err.getvalue()[-800:]}") from None
    res = json.loads((out / "verify_result.json").read_text())
    return {"m": res["m"], "M": res["M"], "answered": res["answered"], "p_value": res["p_value"],
            "decision": res["decision"], "verify_s": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> dict:
    from trustlab.models.gguf import convert_to_gguf, quantize_gguf, tensor_types
    from trustlab.models.llm.llamacpp_server import LlamaServer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="build the fingerprinted fp-tiny in --work first")
    ap.add_argument("--model-dir", type=Path, help="fingerprinted HF folder")
    ap.add_argument("--fingerprints", type=Path, help="its fingerprints.json")
    ap.add_argument("--base", help="the untouched base (HF folder or registry name) for the control rows")
    ap.add_argument("--quants", default="Q8_0,Q4_K_M")
    ap.add_argument("--api", choices=("completions", "chat"), default=None, help="default: the file's setting")
    ap.add_argument("--work", type=Path, required=True, help="a new or empty folder")
    args = ap.parse_args(argv)
    if args.work.exists() and any(args.work.iterdir()):
        sys.exit(f"error: --work {args.work} is not empty; pass a new folder")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        args.model_dir, args.fingerprints, base = build_tiny(args.work)
        args.base = args.base or str(base)
    if not (args.model_dir and args.fingerprints):
        sys.exit("error: pass --tiny or both --model-dir and --fingerprints")
    from trustlab.models.causal_lm import prepare

    base_dir = None
    if args.base:
        base_dir = Path(args.base) if Path(args.base, "config.json").is_file() else Path(prepare(args.base))
    rows = []
    ref = verify(args.fingerprints, args.work / "verify-hf", model=str(args.model_dir), api=args.api)
    rows.append({"variant": "HF float32 (transformers, local)", **ref})
    t0 = time.perf_counter()
    f16 = convert_to_gguf(args.model_dir, args.work / "fp-F16.gguf")
    files = {"F16": (f16, time.perf_counter() - t0)}
    for q in args.quants.split(","):
        t0 = time.perf_counter()
        files[q] = (quantize_gguf(f16, args.work / f"fp-{q}.gguf", q), time.perf_counter() - t0)
    controls = {}
    if base_dir is not None:
        b16 = convert_to_gguf(base_dir, args.work / "base-F16.gguf")
        controls = {"base F16": b16, f"base {q}": quantize_gguf(b16, args.work / f"base-{q}.gguf", q)}
    for name, path in [*((k, v[0]) for k, v in files.items()), *controls.items()]:
        with LlamaServer(path, alias="suspect", n_ctx=512, log_path=args.work / f"server-{name.replace(' ', '_')}.log") as srv:
            res = verify(args.fingerprints, args.work / f"verify-{name.replace(' ', '_')}", endpoint=srv.base_url,
                         api=args.api)
        types = tensor_types(path)
        rows.append({"variant": f"GGUF {name} (llama.cpp server)", "file_mib": round(path.stat().st_size / 2**20, 2),
                     "tensor_types": types, "make_s": round(files[name][1], 1) if name in files else None, **res})
    print("| variant | file MiB | tensor types | hits / M | p | verdict |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        types = ", ".join(f"{k}×{v}" for k, v in sorted(r.get("tensor_types", {}).items(), key=lambda kv: -kv[1]))
        print(f"| {r['variant']} | {r.get('file_mib', '—')} | {types or '—'} | {r['m']}/{r['M']} | "
              f"{r['p_value']:.2g} | {r['decision']} |")
    result = {"model_dir": str(args.model_dir), "fingerprints": str(args.fingerprints), "rows": rows}
    (args.work / "survival.json").write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
