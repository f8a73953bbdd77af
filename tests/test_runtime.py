import json
import os
from dataclasses import dataclass, field

import numpy as np
import pytest

from trustlab.runtime import (ConfigError, RunDir, append_jsonl, config_diff, config_hash, default_run_path,
                              derive_seed, from_dict,
                              load_config,
                              read_jsonl, require_range, seed_everything, to_dict, write_json_atomic)


@dataclass(frozen=True)
class Inner:
    size: int = 3
    widths: tuple[int, ...] = (64, 64)


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    rate: float = 0.1
    inner: Inner = field(default_factory=Inner)


def test_from_dict_builds_nested_dataclasses_and_tuples():
    cfg = from_dict(Outer, {"rate": 1, "inner": {"widths": [8, 4]}})
    assert cfg == Outer(rate=1.0, inner=Inner(widths=(8, 4)))
    assert isinstance(cfg.rate, float)
    assert from_dict(Outer, to_dict(cfg)) == cfg


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as err:
        from_dict(Outer, {"inner": {"sise": 3}})
    assert "'sise'" in err.value.message and "size, widths" in err.value.hint


def test_load_config_from_yaml(tmp_path):
    (tmp_path / "c.yaml").write_text("name: y\ninner:\n  size: 5\n")
    assert load_config(Outer, tmp_path / "c.yaml") == Outer(name="y", inner=Inner(size=5))
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Outer, tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "missing.yaml")


def test_config_diff_names_dotted_keys():
    assert config_diff(Outer(), Outer(rate=0.2, inner=Inner(size=4))) == ["inner.size", "rate"]
    assert config_diff(to_dict(Outer()), Outer()) == []


def test_config_hash_changes_with_values():
    assert config_hash(Outer()) == config_hash(Outer())
    assert config_hash(Outer()) != config_hash(Outer(rate=0.2))


def test_require_range_names_field_and_range():
    require_range("sigma", 0.25, 0, None, lo_open=True)
    with pytest.raises(ConfigError, match=r"sigma must lie in \(0, inf\), got 0"):
        require_range("sigma", 0, 0, None, lo_open=True)


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_require_range_refuses_non_finite_unless_the_field_opts_in(value):
    with pytest.raises(ConfigError, match=r"lr must lie in \(0.0, inf\), got (inf|-inf|nan)"):
        require_range("lr", value, 0.0, None, lo_open=True)
    if value == float("inf"):
        require_range("max_hours", value, 0.0, None, lo_open=True, allow_inf=True)  # a limit that means "none"
    else:
        with pytest.raises(ConfigError, match="max_hours"):
            require_range("max_hours", value, 0.0, None, lo_open=True, allow_inf=True)


def test_check_types_refuses_inf_floats_unless_annotated_inf_float():
    import dataclasses
    from typing import Optional

    from trustlab.runtime.config import from_dict
    from trustlab.runtime.validate import InfFloat, check_types

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        lr: float = 1e-3
        limit: Optional[InfFloat] = None

        def __post_init__(self):
            check_types(self)

    with pytest.raises(ConfigError, match="lr must be a finite number, got inf"):
        Cfg(lr=float("inf"))
    with pytest.raises(ConfigError, match="lr must be a finite number, got -inf"):
        from_dict(Cfg, {"lr": float("-inf")})
    assert Cfg(limit=float("inf")).limit == float("inf")
    assert from_dict(Cfg, {"limit": float("inf")}).limit == float("inf")
    with pytest.raises(ConfigError, match="limit must be a number, got nan"):
        Cfg(limit=float("nan"))


def test_parse_float_list_refuses_inf():
    from trustlab.runtime.validate import parse_float_list

    with pytest.raises(ConfigError, match="--temperatures must hold finite numbers"):
        parse_float_list("--temperatures", "0,inf")


def test_write_json_atomic_leaves_no_temp_and_old_file_survives_failure(tmp_path):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"a": np.float32(1.5), "b": np.arange(3)})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1, 2]}
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text())["a"] == 1.5  # untouched by the failed write
    assert os.listdir(tmp_path) == ["results.json"]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), np.float32("-inf"), np.array([1.0, np.inf])])
def test_json_writers_refuse_non_finite_values_naming_the_key(tmp_path, bad):
    from trustlab.runtime.errors import DataError
    from trustlab.runtime.io import append_jsonl

    path = tmp_path / "results.json"
    write_json_atomic(path, {"ok": 1})
    with pytest.raises(DataError, match=r"results.json.*metrics.loss.* JSON cannot hold"):
        write_json_atomic(path, {"metrics": {"loss": bad}})
    assert json.loads(path.read_text()) == {"ok": 1}  # the old file survives; no null, no NaN token
    assert os.listdir(tmp_path) == ["results.json"]
    with pytest.raises(DataError, match=r"events.jsonl.*\[0\]"):
        append_jsonl(tmp_path / "events.jsonl", [{"step": 1}, {"step": 2, "loss": [bad]}])
    assert not (tmp_path / "events.jsonl").exists()  # no record of the batch was written


def test_read_jsonl_drops_and_repairs_truncated_last_line(tmp_path):
    path = tmp_path / "e.jsonl"
    append_jsonl(path, [{"i": 0}, {"i": 1}])
    with open(path, "a") as fh:
        fh.write('{"i": 2, "trunc')  # a crash mid-write
    assert read_jsonl(path) == [{"i": 0}, {"i": 1}]
    append_jsonl(path, [{"i": 2}])
    assert [r["i"] for r in read_jsonl(path)] == [0, 1, 2]


def test_rundir_resumes_its_own_run(tmp_path):
    cfg = Outer()
    run = RunDir.open(tmp_path / "r", "lab", "verb", cfg, seed=1)
    for item in (0, 1):
        run.event("done", item=item)
    again = RunDir.open(tmp_path / "r", "lab", "verb", cfg, seed=1)
    assert [e["item"] for e in again.events("done")] == [0, 1]
    assert again.run_id == run.run_id
    assert (tmp_path / "r" / "config.yaml").read_text().startswith("name: x")


def test_rundir_refuses_other_config_unless_no_resume(tmp_path):
    RunDir.open(tmp_path / "r", "lab", "verb", Outer(), seed=1).event("done", item=0)
    with pytest.raises(ConfigError, match="another config") as err:
        RunDir.open(tmp_path / "r", "lab", "verb", Outer(rate=0.5), seed=1)
    assert "--no-resume" in err.value.hint and err.value.message.endswith("differing keys: rate")
    fresh = RunDir.open(tmp_path / "r", "lab", "verb", Outer(rate=0.5), seed=1, resume=False)
    assert fresh.events("done") == []


def test_write_results_has_the_common_fields(tmp_path):
    run = RunDir.open(tmp_path / "r", "certify", "eval", Outer(), seed=7)
    png = run.artifact("plots/a.png")
    png.write_bytes(b"")
    run.write_results({"acc": 0.9}, artifacts=[png], schema="x/1")
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    for key in ("lab", "verb", "trustlab_version", "started", "finished", "seed", "config", "metrics", "artifacts",
                "environment"):
        assert key in res
    assert res["artifacts"] == ["plots/a.png"] and res["seed"] == 7 and res["schema"] == "x/1"
    assert res["config"]["inner"]["widths"] == [64, 64]


def test_seed_everything_is_deterministic():
    import random

    import torch

    def draw():
        rng = seed_everything(123)
        return random.random(), np.random.rand(), rng.random(), torch.rand(1).item()

    assert draw() == draw()
    assert derive_seed(1, "noise", 3) == derive_seed(1, "noise", 3) != derive_seed(1, "noise", 4)


def test_configure_threads(monkeypatch):
    import torch

    from trustlab.runtime import configure_threads

    assert configure_threads() == 1 and torch.get_num_threads() == 1
    with pytest.raises(ConfigError):
        configure_threads(0)


# --- hardening (issue 7): typed validation, stamps, weights_only, umask, fresh starts --------------------------
from trustlab.runtime import check_types, load_stamped, load_torch, save_stamped  # noqa: E402
from trustlab.runtime.errors import DataError  # noqa: E402


@dataclass(frozen=True)
class Typed:
    epochs: int = 3
    lr: float = 1e-3
    hidden: tuple[int, ...] = (8,)
    note: str | None = None

    def __post_init__(self):
        check_types(self)
        require_range("epochs", self.epochs, 1)


@pytest.mark.parametrize("kwargs,named", [({"epochs": 2.5}, "epochs"), ({"epochs": "ten"}, "epochs"),
                                          ({"epochs": True}, "epochs"), ({"hidden": (128, "x")}, "hidden[1]"),
                                          ({"hidden": 45}, "hidden"), ({"lr": float("nan")}, "lr"),
                                          ({"lr": "1e-3"}, "lr"), ({"note": 3}, "note")])
def test_configs_built_in_python_are_type_checked(kwargs, named):
    with pytest.raises(ConfigError) as info:
        Typed(**kwargs)
    assert info.value.message.startswith(named) and info.value.hint


def test_yaml11_exponent_gets_its_own_hint():
    with pytest.raises(ConfigError) as info:
        from_dict(Typed, {"lr": "1e-3"})
    assert "YAML 1.1" in info.value.hint and "1.0e-3" in info.value.hint


def test_check_types_normalises_ints_and_lists():
    cfg = from_dict(Typed, {"lr": 1, "hidden": [4, 2], "epochs": 2.0})
    assert cfg == Typed(epochs=2, lr=1.0, hidden=(4, 2)) and isinstance(cfg.lr, float)


def test_require_range_refuses_nan_and_non_numbers():
    for bad in (float("nan"), "0.5", None):
        with pytest.raises(ConfigError):
            require_range("alpha", bad, 0, 1)


def test_negative_seed_is_a_config_error():
    with pytest.raises(ConfigError):
        derive_seed(-1, "noise")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_pickle_is_refused_and_never_runs(tmp_path):
    import torch

    marker = tmp_path / "pwned"
    torch.save({"state": _Exploit(marker)}, tmp_path / "ckpt.pt")
    with pytest.raises(DataError) as info:
        load_torch(tmp_path / "ckpt.pt")
    assert not marker.exists() and "ckpt.pt" in info.value.message and info.value.exit_code == 2


def test_truncated_checkpoint_is_a_data_error(tmp_path):
    import torch

    save_stamped({"w": torch.ones(100)}, tmp_path / "c.pt", "abc")
    raw = (tmp_path / "c.pt").read_bytes()
    (tmp_path / "c.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError):
        load_stamped(tmp_path / "c.pt", "abc")


def test_stamped_state_from_another_config_is_refused(tmp_path):
    import torch

    save_stamped({"w": torch.ones(2)}, tmp_path / "c.pt", "run-a")
    assert torch.equal(load_stamped(tmp_path / "c.pt", "run-a")["w"], torch.ones(2))
    with pytest.raises(ConfigError) as info:
        load_stamped(tmp_path / "c.pt", "run-b")
    assert "run-a" in info.value.message
    assert load_stamped(tmp_path / "missing.pt", "run-a") is None


def test_results_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "results.json", {"a": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o644


def test_secret_file_is_0600_and_never_overwritten(tmp_path):
    from trustlab.runtime.files import write_secret

    write_secret(tmp_path / "s.key", b"x" * 32)
    assert (tmp_path / "s.key").stat().st_mode & 0o777 == 0o600
    with pytest.raises(ConfigError):
        write_secret(tmp_path / "s.key", b"y" * 32)
    assert (tmp_path / "s.key").read_bytes() == b"x" * 32


def test_no_resume_removes_everything_the_run_wrote(tmp_path):
    cfg = Outer()
    run = RunDir.open(tmp_path / "r", "lab", "verb", cfg)
    run.event("done", item=0)
    (run.path / "records.jsonl").write_text('{"sigma": 0.25}\n')
    (run.path / "model").mkdir()
    (run.path / "model" / "model.pt").write_bytes(b"old")
    run.close()
    fresh = RunDir.open(tmp_path / "r", "lab", "verb", cfg, resume=False)
    assert sorted(p.name for p in fresh.path.iterdir() if not p.name.startswith(".")) == \
        ["config.yaml", "config_hash", "plots"]
    assert fresh.events("done") == [] and fresh.run_id != run.run_id


def test_no_resume_keeps_files_the_run_did_not_write(tmp_path):
    run = RunDir.open(tmp_path / "r", "lab", "verb", Outer())
    (run.path / "model.pt").write_bytes(b"ours")
    run.close()
    (run.path / "notes.txt").write_text("the user's")  # put there after the run
    (run.path / "plots" / "mine.png").write_bytes(b"the user's")
    RunDir.open(tmp_path / "r", "lab", "verb", Outer(), resume=False).close()
    assert not (run.path / "model.pt").exists()
    assert (run.path / "notes.txt").read_text() == "the user's"
    assert (run.path / "plots" / "mine.png").read_bytes() == b"the user's"


def test_an_edited_manifest_never_reaches_outside_the_run_folder(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "kept.txt").write_text("precious")
    run = RunDir.open(tmp_path / "r", "lab", "verb", Outer())
    run.close()
    (run.path / "link").symlink_to(elsewhere)
    manifest = run.path / ".trustlab-manifest.json"
    data = json.loads(manifest.read_text())
    data["files"] += ["../outside.txt", str(outside), "link/kept.txt", "link/"]
    manifest.write_text(json.dumps(data))
    RunDir.open(tmp_path / "r", "lab", "verb", Outer(), resume=False).close()
    assert outside.read_text() == "precious" and (elsewhere / "kept.txt").read_text() == "precious"
    assert (run.path / "link").is_symlink()


@pytest.mark.parametrize("resume", [True, False])
def test_a_folder_trustlab_did_not_write_is_refused_untouched(tmp_path, resume):
    (tmp_path / "mine.txt").write_text("precious")
    (tmp_path / "config.yaml").write_text("mine: 1\n")  # looks like a run, is not one
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a trustlab run folder") as err:
        RunDir.open(tmp_path, "lab", "verb", Outer(), resume=resume)
    assert "mine.txt" in err.value.message and "new --out" in err.value.hint
    assert (tmp_path / "mine.txt").read_text() == "precious"
    assert (tmp_path / "config.yaml").read_text() == "mine: 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "mine.txt", "results.json"]


@pytest.mark.parametrize("lab,verb,resume", [("lab", "other", True), ("lab", "other", False),
                                             ("other", "verb", False)])
def test_another_verbs_run_folder_is_refused_untouched(tmp_path, lab, verb, resume):
    run = RunDir.open(tmp_path / "r", "lab", "verb", Outer())
    (run.path / "model.pt").write_bytes(b"fingerprinted")
    run.close()
    with pytest.raises(ConfigError, match="holds a trustlab lab verb run") as err:
        RunDir.open(tmp_path / "r", lab, verb, Inner(), resume=resume)
    assert "differing" not in err.value.message and "--no-resume" not in err.value.hint
    assert (run.path / "model.pt").read_bytes() == b"fingerprinted"


def test_new_only_verbs_never_replace_an_earlier_run(tmp_path):
    first = RunDir.open(tmp_path / "r", "lab", "verify", Outer(), new_only=True)
    first.write_results({"decision": "OWNED"})
    before = (tmp_path / "r" / "results.json").read_bytes()
    with pytest.raises(ConfigError, match="never replaces"):
        RunDir.open(tmp_path / "r", "lab", "verify", Outer(), resume=False, new_only=True)
    assert (tmp_path / "r" / "results.json").read_bytes() == before


def test_default_folders_are_new_for_every_run(tmp_path):
    a = RunDir.open(default_run_path("lab", "verb", tmp_path), "lab", "verb", Outer())
    b = RunDir.open(default_run_path("lab", "verb", tmp_path), "lab", "verb", Outer())
    assert a.path != b.path and a.run_id != b.run_id


def test_attach_continues_only_the_named_verbs_runs(tmp_path):
    run = RunDir.open(tmp_path / "r", "lab", "generate", Outer())
    run.close()
    judge = RunDir.attach(tmp_path / "r", "lab", "judge", of=("generate",))
    (judge.path / "labels.jsonl").write_text("{}\n")
    judge.close()
    assert "labels.jsonl" in RunDir.open(tmp_path / "r", "lab", "generate", Outer()).manifest
    with pytest.raises(ConfigError, match="never writes"):
        RunDir.attach(tmp_path / "r", "lab", "judge", of=("eval",))


def test_resume_command_names_the_folder_and_drops_fresh_flags():
    from trustlab.runtime.rundir import resume_command

    assert resume_command(["safety", "eval", "--no-resume", "--limit", "2"], out="runs/x") == \
        "trustlab safety eval --limit 2 --out runs/x"
    assert resume_command(["safety", "eval", "--out", "d"], out="d") == "trustlab safety eval --out d"


def test_out_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError) as info:
        RunDir.open(tmp_path / "f", "lab", "verb", Outer())
    assert "is a file" in info.value.message


def test_require_finite_step_names_the_step_the_lr_and_the_bad_weight():
    import torch

    from trustlab.runtime.errors import ModelError
    from trustlab.runtime.finite import require_finite_step

    net = torch.nn.Linear(2, 2)
    require_finite_step(0.5, net.named_parameters(), step="epoch 1", lr=1e-3)  # finite: passes
    with pytest.raises(ModelError, match=r"training diverged at epoch 3 with lr 0.1: the loss is inf") as err:
        require_finite_step(float("inf"), net.named_parameters(), step="epoch 3", lr=0.1)
    assert "0.01" in err.value.hint
    with torch.no_grad():
        net.bias[1] = float("nan")
    with pytest.raises(ModelError, match=r"at step 7 with sft.lr 1: weight 'bias' holds NaN"):
        require_finite_step(0.5, net.named_parameters(), step="step 7", lr=1.0, lr_name="sft.lr")


def test_workload_guards_name_the_value_the_estimate_and_the_limit(monkeypatch):
    from trustlab.runtime import workload as W

    assert W.format_seconds(90) == "90 s" and W.format_seconds(3 * 86400) == "3 days"
    assert W.format_bytes(3 * (1 << 30)) == "3 GB"
    monkeypatch.setattr(W, "available_memory", lambda: 10 << 30)
    assert W.require_memory("a table", 7 << 30, hint="h") == 7 << 30  # under 80 % of 10 GB
    with pytest.raises(ConfigError, match=r"a table needs about 9 GB of memory; 10 GB is available") as err:
        W.require_memory("a table", 9 << 30, hint="use fewer rows")
    assert err.value.hint == "use fewer rows"
    monkeypatch.delenv("TRUSTLAB_MAX_HOURS", raising=False)
    W.require_time("a loop", 23 * 3600, hint="h")
    with pytest.raises(ConfigError, match=r"a loop would take about 2 days; the limit is 24 h") as err:
        W.require_time("a loop", 48 * 3600, hint="fewer epochs")
    assert "TRUSTLAB_MAX_HOURS" in err.value.hint
    monkeypatch.setenv("TRUSTLAB_MAX_HOURS", "inf")
    W.require_time("a loop", 1e12, hint="h")  # inf: no limit
    for bad in ("0", "nan", "soon"):
        monkeypatch.setenv("TRUSTLAB_MAX_HOURS", bad)
        with pytest.raises(ConfigError, match="TRUSTLAB_MAX_HOURS"):
            W.max_hours()


def test_model_context_is_the_smaller_of_positions_and_tokenizer_limit():
    from types import SimpleNamespace as NS

    from trustlab.runtime.workload import model_context, require_context

    model = NS(config=NS(max_position_embeddings=256))
    assert model_context(model) == 256
    assert model_context(model, NS(model_max_length=128)) == 128
    assert model_context(model, NS(model_max_length=int(1e30))) == 256  # transformers' "no limit" sentinel
    assert model_context(NS(config=NS())) is None
    require_context("a key", 256, 256, "m", hint="h")
    with pytest.raises(ConfigError, match=r"a key needs 257 positions but model 'm' has a context of 256 tokens"):
        require_context("a key", 257, 256, "m", hint="shorter keys")


def test_an_inf_float_field_round_trips_through_json_and_yaml(tmp_path):
    import dataclasses

    from trustlab.runtime.config import dump_yaml, from_dict, load_config
    from trustlab.runtime.validate import InfFloat, check_types

    @dataclasses.dataclass(frozen=True)
    class Limits:
        max_hours: InfFloat = 24.0
        lr: float = 0.1

        def __post_init__(self):
            check_types(self)

    cfg = Limits(max_hours=float("inf"))
    write_json_atomic(tmp_path / "c.json", to_dict(cfg))  # "inf", never null or Infinity
    assert json.loads((tmp_path / "c.json").read_text()) == {"max_hours": "inf", "lr": 0.1}
    assert from_dict(Limits, json.loads((tmp_path / "c.json").read_text())) == cfg
    dump_yaml(cfg, tmp_path / "c.yaml")
    assert load_config(Limits, tmp_path / "c.yaml") == cfg
    with pytest.raises(ConfigError, match="lr must be a number"):
        from_dict(Limits, {"lr": "inf"})  # only an opted-in field reads the text "inf"
