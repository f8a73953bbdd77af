import json
import os
from dataclasses import dataclass, field

import numpy as np
import pytest

from trustlab.runtime import (ConfigError, RunDir, append_jsonl, config_diff, config_hash, derive_seed, from_dict,
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
    with pytest.raises(ConfigError, match=r"sigma must lie in \(0, inf\], got 0"):
        require_range("sigma", 0, 0, None, lo_open=True)


def test_write_json_atomic_leaves_no_temp_and_old_file_survives_failure(tmp_path):
    path = tmp_path / "results.json"
    write_json_atomic(path, {"a": np.float32(1.5), "b": np.arange(3), "c": float("nan")})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1, 2], "c": None}
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text())["a"] == 1.5  # untouched by the failed write
    assert os.listdir(tmp_path) == ["results.json"]


def test_read_jsonl_drops_and_repairs_truncated_last_line(tmp_path):
    path = tmp_path / "e.jsonl"
    append_jsonl(path, [{"i": 0}, {"i": 1}])
    with open(path, "a") as fh:
        fh.write('{"i": 2, "trunc')  # a crash mid-write
    assert read_jsonl(path) == [{"i": 0}, {"i": 1}]
    append_jsonl(path, [{"i": 2}])
    assert [r["i"] for r in read_jsonl(path)] == [0, 1, 2]


def test_rundir_resume_reports_done_items(tmp_path):
    cfg = Outer()
    run = RunDir.open(tmp_path / "r", "lab", "verb", cfg, seed=1)
    for item in (0, 1):
        run.event("done", item=item)
    again = RunDir.open(tmp_path / "r", "lab", "verb", cfg, seed=1)
    assert again.pending(range(4)) == [2, 3]
    assert (tmp_path / "r" / "config.yaml").read_text().startswith("name: x")


def test_rundir_refuses_other_config_unless_no_resume(tmp_path):
    RunDir.open(tmp_path / "r", "lab", "verb", Outer(), seed=1).event("done", item=0)
    with pytest.raises(ConfigError, match="another config") as err:
        RunDir.open(tmp_path / "r", "lab", "verb", Outer(rate=0.5), seed=1)
    assert "--no-resume" in err.value.hint and err.value.message.endswith("differing keys: rate")
    fresh = RunDir.open(tmp_path / "r", "lab", "verb", Outer(rate=0.5), seed=1, resume=False)
    assert fresh.done() == set()


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
