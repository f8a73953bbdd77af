"""LLM-judge throughput on the wire against the fake OpenAI-compatible server with 50 ms latency per request
(loopback), each against a baseline in the same run. Prints one JSON line.

(a) Llama-Guard judge through the openai backend at concurrency 32 vs 1 (the backend's bounded pool);
(b) the moderation judge sending 32 inputs per request vs 1 (its batching);
(c) the StrongREJECT judge at concurrency 32 vs 1.
Verdicts must be identical between the two settings of each pair.

    python benchmarks/safety/bench_judges.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    from trustlab.runtime import configure_threads

    configure_threads(1)
    from trustlab.safety.config import BackendConfig
    from trustlab.safety.judges import JudgeItem, JudgeSpec, make_judge
    from trustlab.models.llm.fake_server import FakeServer

    n = 32 if args.quick else 96
    rubric = "#scores\n1.a x\n1.b 0\n2.a x\n2.b 4\n3.a x\n3.b 4\n"
    rules = {"rules": [{"match": "AI model response: a recipe", "reply": rubric, "kind": "chat"},
                       {"match": "AI model response:", "reply": rubric.replace("1.b 0", "1.b 1"), "kind": "chat"},
                       {"match": "recipe", "reply": "unsafe\nS9", "kind": "chat"},
                       {"match": "recipe", "flagged": True, "categories": ["violence"], "kind": "moderations"}],
             "default": "safe"}
    items = [JudgeItem(f"question {i}", f"a recipe {i}" if i % 2 else f"a poem {i}") for i in range(n)]
    out: dict = {"bench": "safety.judges", "n_items": n, "latency_s": 0.05}

    def cfg(url, concurrency):
        return BackendConfig(kind="openai", model="judge", base_urls=(url,), concurrency=concurrency,
                             api_key_env="TRUSTLAB_BENCH_NO_KEY", max_retries=0)

    def timed(judge):
        t0 = time.perf_counter()
        v = judge.judge(items)
        judge.close()
        return v, time.perf_counter() - t0

    with FakeServer(rules, latency_s=0.05) as srv:
        for name in ("llama_guard", "strongreject"):
            v1, t1 = timed(make_judge(JudgeSpec(name, cfg(srv.base_url, 1))))
            v32, t32 = timed(make_judge(JudgeSpec(name, cfg(srv.base_url, 32))))
            assert v1 == v32
            out[name] = {"c1_s": round(t1, 3), "c32_s": round(t32, 3), "speedup": round(t1 / t32, 2),
                         "unsafe_share": sum(bool(v.unsafe) for v in v1) / n,
                         "unparsed": sum(v.status == "unparsed" for v in v1)}
        v1, t1 = timed(make_judge(JudgeSpec("moderation", cfg(srv.base_url, 1), {"batch_size": 1})))
        v32, t32 = timed(make_judge(JudgeSpec("moderation", cfg(srv.base_url, 1), {"batch_size": 32})))
        assert v1 == v32
        out["moderation"] = {"batch1_s": round(t1, 3), "batch32_s": round(t32, 3), "speedup": round(t1 / t32, 2)}
        out["max_in_flight"] = srv.max_in_flight
    print(json.dumps(out))


if __name__ == "__main__":
    main()
