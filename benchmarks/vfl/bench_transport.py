"""Wire bytes per batch (packed codes vs float32 embeddings) and per-step time over mutual-TLS gRPC on loopback
vs in-process, on digits with two parties. Prints one JSON line with the ratios."""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np


def main(epochs: int = 3) -> dict:
    from trustlab.runtime import configure_threads
    from trustlab.vfl import protocol as P
    from trustlab.vfl.codes import pack_bits
    from trustlab.vfl.config import load_config
    from trustlab.vfl.data import export_parties
    from trustlab.vfl.local import party_servers, write_parties_yaml
    from trustlab.vfl.train import train
    from trustlab.vfl.transport.tls import make_test_pki

    configure_threads(1)
    B, L = 64, 16
    h = np.where(np.random.default_rng(0).random((B, L)) < 0.5, 1.0, -1.0).astype(np.float32)
    hdr = {"type": "step", "party": 0, "epoch": 0, "step": 1}
    packed = len(P.encode(hdr, {"msg": pack_bits(h)}))
    floats = len(P.encode(hdr, {"msg": h}))
    cfg = load_config(None, {"train": {"epochs": epochs, "milestones": ()}})
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        inproc = train(cfg, d / "inproc", log=lambda *_: None).results["train"]
        files = export_parties(cfg, d / "data")
        pki = make_test_pki(d / "pki")
        with party_servers(files[1:], pki, d / "state") as servers:
            pf = write_parties_yaml(d / "parties.yaml", pki, [a for _, a, _ in servers])
            gcfg = replace(cfg, transport=replace(cfg.transport, kind="grpc", parties=str(pf)))
            grpc = train(gcfg, d / "grpc", parties_file=str(pf), log=lambda *_: None).results["train"]
    steps = epochs * (inproc["n"]["train"] // B)
    t_in, t_grpc = inproc["fit_wall_s"] / steps, grpc["fit_wall_s"] / steps
    out = {"bench": "vfl.transport", "batch": B, "L": L,
           "msg_payload_bytes_packed": B * L // 8, "msg_payload_bytes_float32": B * L * 4,
           "payload_ratio": (B * L * 4) / (B * L // 8),
           "encoded_bytes_packed": packed, "encoded_bytes_float32": floats, "encoded_ratio": floats / packed,
           "inproc_step_ms": 1e3 * t_in, "grpc_step_ms": 1e3 * t_grpc, "grpc_vs_inproc": t_grpc / t_in,
           "bit_identical": inproc["party_sha256"] == grpc["party_sha256"] and inproc["top_sha256"] == grpc["top_sha256"]}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
