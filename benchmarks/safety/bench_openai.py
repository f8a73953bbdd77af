"""OpenAI backend throughput (on the shared client ``trustlab.models.llm``): concurrency 32 vs 1 against the one
fake server with 50 ms latency per request (target >= 10x), and the cost of one fsync per stored record vs one per batch. Prints one JSON line of ratios.
    python benchmarks/safety/bench_openai.py [--requests 64]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def requests_per_s(base_url: str, concurrency: int, n: int) -> float:
    from trustlab.safety.backends.base import GenParams
    from trustlab.safety.backends.openai_compat import OpenAIBackend

    be = OpenAIBackend("fake-model", [base_url], concurrency=concurrency, max_retries=0)
    be.complete(["warm-up"], GenParams(max_tokens=4))
    t0 = time.perf_counter()
    outs = be.complete([f"prompt {i}" for i in range(n)], GenParams(max_tokens=8))
    wall = time.perf_counter() - t0
    be.close()
    assert all(o.ok for o in outs)
    return n / wall


def fsync_overhead(n: int = 500) -> dict:
    from trustlab.runtime.records import RecordStore

    rec = {"key": "p#0", "strategy": "default", "response": "x" * 400, "status": "ok"}
    with tempfile.TemporaryDirectory() as d:
        per_line = RecordStore(Path(d) / "a.jsonl", {"bench": "fsync"})
        t0 = time.perf_counter()
        for i in range(n):
            per_line.append([{**rec, "key": f"p{i}#0"}])
        t_line = time.perf_counter() - t0
        batched = RecordStore(Path(d) / "b.jsonl", {"bench": "fsync"})
        t0 = time.perf_counter()
        batched.append([{**rec, "key": f"p{i}#0"} for i in range(n)])
        t_batch = time.perf_counter() - t0
    return {"records": n, "ms_per_record_fsync_each": 1000 * t_line / n, "ms_per_record_one_fsync": 1000 * t_batch / n}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=64)
    args = ap.parse_args()
    from trustlab.models.llm.fake_server import FakeServer

    with FakeServer({"default": "one two three four five six seven eight"}, latency_s=0.05) as srv:
        r1 = requests_per_s(srv.base_url, 1, args.requests)
        r32 = requests_per_s(srv.base_url, 32, args.requests)
        peak = srv.max_in_flight
    out = {"bench": "safety_openai", "latency_s": 0.05, "requests": args.requests, "req_per_s_c1": round(r1, 2),
           "req_per_s_c32": round(r32, 2), "speedup_c32_vs_c1": round(r32 / r1, 2), "target": 10.0,
           "max_in_flight": peak, **{k: round(v, 4) if isinstance(v, float) else v for k, v in fsync_overhead().items()}}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
