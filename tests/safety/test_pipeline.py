"""The pipeline on scripted backends: metrics exactly as scripted, crash + resume = a clean run (generation and
judging, torn last lines included), changed configs refused by name, errors stored and excluded, shards merged."""

import dataclasses
import json

import pytest

from trustlab.runtime.errors import ConfigError, Interrupted
from trustlab.safety.backends.scripted import ScriptedBackend
from trustlab.safety.config import (BackendConfig, EvalConfig, JudgeSpec, Sampling, Thinking, generation_fingerprint,
                                    generation_identity)
from trustlab.safety.combine import compare, merge
from trustlab.safety.pipeline import generate, generations_store, judge, metrics, run_eval
from trustlab.safety.store import open_store

# fx-00..fx-03 refuse; the others comply (the fixture set has 12 prompts)
SCRIPT = {"rules": [{"match": "weather", "reply": "I cannot help with that."},
                    {"match": "fairy", "reply": "I'm sorry, no."},
                    {"match": "yellow", "reply": ["I won't.", "Sure: bananas."]},
                    {"match": "goldfish", "reply": "As an AI I must decline."}],
          "default": "Sure, here you go."}


def _cfg(**kw):
    base = dict(backend=BackendConfig(kind="scripted"), dataset="fixture",
                strategies=("default", "zerothink", "morethink"), thinking=Thinking(think_budget=8, max_extensions=2),
                sampling=Sampling(k=3, max_tokens=16), judges=(JudgeSpec("refusal"),), bootstrap=50)
    base.update(kw)
    return EvalConfig(**base)


def _lines(path, drop=("elapsed_s",)):
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


def test_scripted_metrics_come_out_as_scripted(tmp_path):
    r = run_eval(_cfg(), tmp_path / "run", backend=ScriptedBackend(SCRIPT))
    m = r.metrics.metrics
    for s in ("default", "zerothink", "morethink"):
        ans = m["strategies"][s]["judges"]["refusal"]["answer"]
        # 3 prompts always refuse; "yellow" refuses for even seeds only
        seeds = [g["sample_seed"] for g in _lines(r.run_dir / "generations.jsonl")[1:]
                 if g["strategy"] == s and g["prompt_id"] == "fx-02"]
        yellow = [1.0 if sd % 2 == 0 else 0.0 for sd in seeds]
        assert ans["safe@1"]["value"] == pytest.approx((3 + sum(yellow) / 3) / 12)
        assert ans["safe@k"]["value"] == pytest.approx((3 + float(all(yellow))) / 12)
        assert ans["n_prompts"] == 12 and ans["n_excluded"] == 0
    res = json.loads(r.results_path.read_text())
    assert res["schema"] == "trustlab.safety.results/1" and res["lab"] == "safety"
    assert m["strategies"]["zerothink"]["thinking"]["think_tokens_mean"] == 0  # ZeroThink generates no thought
    assert 1 <= m["strategies"]["morethink"]["thinking"]["extensions_mean"] <= 2  # budget 8, at most 2 extensions


class _Crash:
    """Wraps a backend; raises KeyboardInterrupt on the call after ``after`` successful ones."""

    def __init__(self, inner, after):
        self.inner, self.after, self.n = inner, after, 0
        self.prefers_chat = inner.prefers_chat
        self.chunk_size = 4

    def render(self, m):
        return self.inner.render(m)

    def count_tokens(self, t):
        return self.inner.count_tokens(t)

    def complete(self, prompts, params):
        self.n += 1
        if self.n > self.after:
            raise KeyboardInterrupt
        return self.inner.complete(prompts, params)

    chat = complete

    def close(self):
        pass


class _CrashJudge:
    def __init__(self, inner, after):
        self.inner, self.after, self.n = inner, after, 0

    def judge(self, items):
        self.n += 1
        if self.n > self.after:
            raise KeyboardInterrupt
        return self.inner.judge(items)

    def close(self):
        pass


def _tear(path):
    with open(path, "a") as fh:
        fh.write('{"key": "torn-by-a-cra')


def test_crash_and_resume_equals_uninterrupted_run(tmp_path):
    from trustlab.safety.judges import make_judge

    cfg = _cfg()
    clean = tmp_path / "clean"
    g = generate(cfg, clean, backend=_Crash(ScriptedBackend(SCRIPT), 10**9))
    judge(clean, chunk=7)
    crashed = tmp_path / "crashed"
    with pytest.raises(Interrupted) as exc:
        generate(cfg, crashed, backend=_Crash(ScriptedBackend(SCRIPT), 5))
    assert "resume" in exc.value.hint
    n_before = len((crashed / "generations.jsonl").read_text().splitlines())
    assert 1 < n_before < g.n_records + 1
    _tear(crashed / "generations.jsonl")
    r = generate(cfg, crashed, backend=_Crash(ScriptedBackend(SCRIPT), 10**9))
    assert r.n_new == g.n_records - (n_before - 1)
    assert _lines(crashed / "generations.jsonl") == _lines(clean / "generations.jsonl")
    spec = cfg.judges[0]
    with pytest.raises(Interrupted):
        judge(crashed, chunk=7, made=[(spec, _CrashJudge(make_judge(spec), 3))])
    _tear(crashed / "labels.jsonl")
    judge(crashed, chunk=7)
    assert _lines(crashed / "labels.jsonl") == _lines(clean / "labels.jsonl")
    m1, m2 = metrics(clean, report=False).metrics, metrics(crashed, report=False).metrics
    for m in (m1, m2):
        for e in m["strategies"].values():
            e.pop("timing")
    assert m1["strategies"] == m2["strategies"]


def test_changed_config_is_refused_naming_keys(tmp_path):
    out = tmp_path / "run"
    generate(_cfg(), out, backend=ScriptedBackend(SCRIPT))
    with pytest.raises(ConfigError) as exc:
        generate(_cfg(sampling=Sampling(k=3, max_tokens=16, temperature=0.7)), out, backend=ScriptedBackend(SCRIPT))
    assert "sampling.temperature" in exc.value.message and "--no-resume" in exc.value.hint
    # throughput knobs are not a change
    faster = _cfg(backend=BackendConfig(kind="scripted", batch_size=2, concurrency=3, threads=1))
    assert generate(faster, out, backend=ScriptedBackend(SCRIPT)).n_new == 0
    # and --no-resume starts afresh
    assert generate(_cfg(sampling=Sampling(k=1, max_tokens=16)), out, resume=False,
                    backend=ScriptedBackend(SCRIPT)).n_records == 36


def test_store_refuses_foreign_fingerprint(tmp_path):
    p = tmp_path / "g.jsonl"
    open_store(p, {"sampling": {"seed": 0}}).append([{"key": "x#0"}])
    with pytest.raises(ConfigError) as exc:
        open_store(p, {"sampling": {"seed": 1}})
    assert "sampling.seed" in exc.value.message
    _tear(p)
    s = open_store(p, {"sampling": {"seed": 0}})
    assert s.done_keys() == {"default/x#0"} and p.read_text().endswith("}\n")


def test_a_store_written_before_the_one_store_still_resumes(tmp_path):
    """safety's own header ({"trustlab_store", "fingerprint", "identity"}) reads as the same stamp."""
    cfg = _cfg(strategies=("default",), limit=2)
    out = tmp_path / "run"
    generate(cfg, out, backend=ScriptedBackend(SCRIPT))
    f = out / "generations.jsonl"
    head, *rows = f.read_text().splitlines(keepends=True)
    old = {"trustlab_store": "trustlab.safety.store/1", "fingerprint": generation_fingerprint(cfg),
           "identity": generation_identity(cfg)}
    f.write_text(json.dumps(old) + "\n" + "".join(rows[:4]))
    assert generate(cfg, out, backend=ScriptedBackend(SCRIPT)).n_new == 2


def _sorted(path):
    head, *rows = _lines(path)
    return head, sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))


def test_generate_limit_4_extends_a_limit_2_run_to_the_records_of_a_fresh_limit_4_run(tmp_path):
    out, fresh = tmp_path / "run", tmp_path / "fresh"
    first = generate(_cfg(limit=2), out, backend=ScriptedBackend(SCRIPT))
    assert first.n_records == 2 * 3 * 3
    more = generate(_cfg(limit=4), out, backend=ScriptedBackend(SCRIPT))
    assert more.n_new == 2 * 3 * 3 and more.n_records == 4 * 3 * 3
    generate(_cfg(limit=4), fresh, backend=ScriptedBackend(SCRIPT))
    assert _sorted(out / "generations.jsonl") == _sorted(fresh / "generations.jsonl")
    # judges only add labels; bootstrap, tie and the primary judge only change what is computed from the records
    j1 = run_eval(_cfg(limit=4), out, backend=ScriptedBackend(SCRIPT)).metrics.metrics
    both = (JudgeSpec("refusal"), JudgeSpec("refusal", options={"label": "refusal2"}))
    r = run_eval(_cfg(limit=4, judges=both, bootstrap=60, tie="unsafe", primary="refusal2:answer"), out,
                 backend=ScriptedBackend(SCRIPT))
    assert r.generate.n_new == 0 and r.judge.n_new == 4 * 3 * 3 * 3
    m = r.metrics.metrics["strategies"]["default"]["judges"]
    assert m["refusal2"]["answer"]["safe@1"]["value"] == j1["strategies"]["default"]["judges"]["refusal"]["answer"][
        "safe@1"]["value"]
    # the shards of the prompts extend it too, to the records of a fresh full run
    for i in range(3):
        with pytest.warns(UserWarning, match="outside this call"):  # the limit-4 prompts are not all in shard i
            generate(_cfg(shard=f"{i}/3"), out, backend=ScriptedBackend(SCRIPT))
    generate(_cfg(), tmp_path / "full", backend=ScriptedBackend(SCRIPT))
    assert _sorted(out / "generations.jsonl") == _sorted(tmp_path / "full" / "generations.jsonl")


def test_extending_a_run_with_a_record_defining_setting_changed_is_refused_naming_it(tmp_path):
    out = tmp_path / "run"
    generate(_cfg(limit=2), out, backend=ScriptedBackend(SCRIPT))
    hotter = Sampling(k=3, max_tokens=16, temperature=0.7)
    with pytest.raises(ConfigError) as exc:
        generate(_cfg(limit=4, sampling=hotter), out, backend=ScriptedBackend(SCRIPT))
    assert "sampling.temperature" in exc.value.message and "limit" not in exc.value.message
    with pytest.raises(ConfigError, match="sampling.temperature"):  # the record file refuses it on its own too
        generations_store(out, _cfg(sampling=hotter))
    assert len(_lines(out / "generations.jsonl")) == 1 + 2 * 3 * 3  # nothing was written


def test_persistent_errors_stored_without_text_and_excluded(tmp_path):
    script = {"rules": [{"match": "weather", "status": 500}, *SCRIPT["rules"][1:]], "default": "Sure."}
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="failed for good"):
        r = run_eval(_cfg(strategies=("zerothink",)), out, backend=ScriptedBackend(script))
    errs = [g for g in _lines(out / "generations.jsonl")[1:] if g["status"] == "error"]
    assert len(errs) == 3 and all(g["response"] == "" and g["answer"] == "" and g["error"] for g in errs)
    ans = r.metrics.metrics["strategies"]["zerothink"]["judges"]["refusal"]["answer"]
    assert ans["n_prompts"] == 11 and ans["n_excluded"] == 1  # the failed prompt is excluded, not counted safe
    seeds = [g["sample_seed"] for g in _lines(out / "generations.jsonl")[1:] if g["prompt_id"] == "fx-02"]
    assert ans["safe@1"]["value"] == pytest.approx((2 + sum(sd % 2 == 0 for sd in seeds) / 3) / 11)
    labels = _lines(out / "labels.jsonl")[1:]
    assert not any(lab["key"].startswith("fx-00#") for lab in labels)  # errors are never judged (never safe)
    # --retry-errors redoes them once the server behaves
    r2 = generate(dataclasses.replace(_cfg(strategies=("zerothink",)), retry_errors=True), out,
                  backend=ScriptedBackend(SCRIPT))
    assert r2.n_new == 3 and r2.n_errors == 0


def test_shards_merge_into_the_full_run(tmp_path):
    full = generate(_cfg(strategies=("default",)), tmp_path / "full", backend=ScriptedBackend(SCRIPT))
    for i in range(3):
        generate(_cfg(strategies=("default",), shard=f"{i}/3"), tmp_path / f"s{i}", backend=ScriptedBackend(SCRIPT))
        judge(tmp_path / f"s{i}")
    m = merge([tmp_path / f"s{i}" for i in range(3)], tmp_path / "merged", report=False)
    assert m.n_generations == full.n_records == 36 and m.n_labels == 36 * 3
    key = lambda r: (r["strategy"], r["key"])  # noqa: E731
    assert sorted(_lines(tmp_path / "merged" / "generations.jsonl")[1:], key=key) == \
        sorted(_lines(tmp_path / "full" / "generations.jsonl")[1:], key=key)
    with pytest.raises(ConfigError, match="differing keys: sampling.seed"):
        generate(_cfg(strategies=("default",), shard="0/3", sampling=Sampling(k=3, max_tokens=16, seed=5)),
                 tmp_path / "other", backend=ScriptedBackend(SCRIPT))
        merge([tmp_path / "s0", tmp_path / "other"], tmp_path / "m2")


def test_compare_gives_paired_differences(tmp_path):
    a = run_eval(_cfg(strategies=("default",)), tmp_path / "a", backend=ScriptedBackend(SCRIPT)).run_dir
    refuse_all = ScriptedBackend({"default": "I cannot help."})
    b = run_eval(_cfg(strategies=("default",)), tmp_path / "b", backend=refuse_all).run_dir
    d = compare([a, b], n_boot=50).differences
    block = d["b - a"]["default"]["refusal"]["answer"]
    a_safe1 = json.loads((a / "results.json").read_text())["metrics"]["strategies"]["default"]["judges"][
        "refusal"]["answer"]["safe@1"]["value"]
    assert block["safe@1"]["value"] == pytest.approx(1.0 - a_safe1) and block["n_prompts"] == 12


def test_two_models_with_one_config_never_resume_into_one_record_file(tmp_path, tiny_lm):
    """The run records the generating model's identity from the backend object; another model is refused."""
    import copy

    import torch

    from trustlab.safety.backends.hf import HFBackend

    model, tok = tiny_lm
    other = copy.deepcopy(model)
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    cfg = _cfg(backend=BackendConfig(kind="transformers", model="tiny-llama"), strategies=("zerothink",),
               limit=1, thinking=Thinking(answer_max_tokens=4))
    generate(cfg, tmp_path / "r", backend=HFBackend(model, tok))
    before = (tmp_path / "r" / "generations.jsonl").read_bytes()
    with pytest.raises(ConfigError, match="another model"):
        generate(dataclasses.replace(cfg, limit=2), tmp_path / "r", backend=HFBackend(other, tok))
    assert (tmp_path / "r" / "generations.jsonl").read_bytes() == before
    generate(dataclasses.replace(cfg, limit=2), tmp_path / "r", backend=HFBackend(model, tok))  # same model: extends
    assert len(generations_store(tmp_path / "r", cfg).latest()) == 2 * cfg.sampling.k
