"""Multi-rank certification (issue 11 item 4): 2 gloo ranks under torchrun equal one process, record for record."""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

from trustlab.certify.distributed import Ranks, process_group, rank_file, ranks_from_env
from trustlab.runtime import BackendError, ConfigError

EVAL = ["--n0", "20", "--max-inputs", "12", "--inputs", "both"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args, nproc=2, timeout=300):
    """``python -m torch.distributed.run --nproc-per-node N ... -m trustlab certify eval ARGS`` on 127.0.0.1; waits
    for the launcher to exit (it returns when every rank has)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRUSTLAB_QUIET": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--master-addr",
           "127.0.0.1", "--master-port", str(_free_port()), "-m", "trustlab", "certify", "eval", *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _lines(path):
    return path.read_text().splitlines()


@pytest.fixture(scope="module")
def one_process(model_dir, tmp_path_factory):
    """1-process runs (in-process CLI) of fixed-N smoothing and smoothing-adaptive on the session's digits MLP."""
    from typer.testing import CliRunner

    from trustlab.certify.cli import app

    root = tmp_path_factory.mktemp("one")
    runs = {}
    for cert, extra in (("smoothing", ["--n", "200"]), ("smoothing-adaptive", ["--n", "400", "--radius", "0.1"])):
        out = root / cert
        res = CliRunner().invoke(app, ["eval", str(model_dir), "--certifier", cert, *extra, *EVAL, "--out", str(out)])
        assert res.exit_code == 0, res.output
        runs[cert] = out
    return runs


@pytest.mark.parametrize("cert,extra", [("smoothing", ["--num-samples", "200"]),
                                        ("smoothing-adaptive", ["--num-samples", "400", "--radius", "0.1"])])
def test_two_gloo_ranks_equal_one_process_record_for_record(one_process, model_dir, tmp_path, cert, extra):
    out = tmp_path / "two"
    res = torchrun(model_dir, "--certifier", cert, *extra, *EVAL, "--out", out)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "merged from 2 ranks" in res.stdout
    one = one_process[cert]
    for which in ("clean", "triggered"):
        # the stamped header and every record (certificate, radius / bounds, samples, stop) identical, in idx order
        assert _lines(out / cert / f"{which}.jsonl") == _lines(one / cert / f"{which}.jsonl")
        assert not rank_file(out / cert / f"{which}.jsonl", 0).exists()  # merged, rank files removed
    r2, r1 = (json.loads((d / "results.json").read_text()) for d in (out, one))
    assert r2["by_inputs"] == r1["by_inputs"] and r2["metrics"] == r1["metrics"]
    assert r2["config_hash"] == r1["config_hash"] and r2["world_size"] == 2


def test_rerun_with_another_world_size_resumes_by_idx(one_process, model_dir, tmp_path):
    """A one-process run stopped after 4 clean inputs, plus a world-3 rank's file of triggered records: 2 ranks
    finish both, reuse what was finished under the same stamp (not recomputed), and equal the one-process run."""
    one = one_process["smoothing"] / "smoothing"
    out = tmp_path / "resumed"
    shutil.copytree(one_process["smoothing"], out)
    (out / "results.json").unlink()
    head, *clean = _lines(one / "clean.jsonl")
    (out / "smoothing" / "clean.jsonl").write_text("\n".join([head, *clean[:4]]) + "\n")
    head_t, *trig = _lines(one / "triggered.jsonl")
    (out / "smoothing" / "triggered.jsonl").unlink()
    left = [json.loads(r) for r in trig if json.loads(r)["idx"] % 3 == 2]  # what rank 2 of 3 had finished
    left[0]["p_lower"] = 0.123456  # marks a record that must be taken over, not recomputed
    rank_file(out / "smoothing" / "triggered.jsonl", 2).write_text(
        "\n".join([head_t, *map(json.dumps, left)]) + "\n")
    res = torchrun(model_dir, "--certifier", "smoothing", "--num-samples", "200", *EVAL, "--out", out)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _lines(out / "smoothing" / "clean.jsonl") == _lines(one / "clean.jsonl")
    got = [json.loads(r) for r in _lines(out / "smoothing" / "triggered.jsonl")[1:]]
    want = [json.loads(r) for r in trig]
    assert [r["idx"] for r in got] == list(range(12))
    assert got[left[0]["idx"]]["p_lower"] == 0.123456
    got[left[0]["idx"]]["p_lower"] = want[left[0]["idx"]]["p_lower"]
    assert got == want
    assert sorted(p.name for p in (out / "smoothing").iterdir()) == ["clean.jsonl", "triggered.jsonl"]


def test_ranks_from_env():
    assert ranks_from_env({}) == Ranks(0, 1, 0)
    assert ranks_from_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == Ranks(3, 8, 1)
    assert Ranks(3, 8, 1).shard == (3, 8) and not Ranks(3, 8, 1).main
    for env, name in (({"WORLD_SIZE": "two"}, "WORLD_SIZE"), ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK"),
                      ({"WORLD_SIZE": "0"}, "WORLD_SIZE"), ({"LOCAL_RANK": "-1"}, "LOCAL_RANK")):
        with pytest.raises(ConfigError, match=name):
            ranks_from_env(env)


def test_world_size_above_one_without_a_group_is_an_explicit_error(monkeypatch):
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(ConfigError, match="MASTER_ADDR"):
        with process_group(Ranks(0, 2, 0)):
            pass
    # a rendezvous nobody serves: the group cannot start -> BackendError (exit 4) naming the address
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    with pytest.raises(BackendError, match="cannot start at 127.0.0.1") as exc:
        with process_group(Ranks(1, 2, 1), timeout_s=1.0):
            pass
    assert exc.value.exit_code == 4 and "\n" not in exc.value.message


def test_cli_world_size_two_without_rendezvous_exits_2(cli, model_dir, tmp_path, monkeypatch):
    from tests.certify.conftest import one_error

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    line = one_error(cli("eval", model_dir, "--n", "50", "--out", tmp_path / "e"), 2)
    assert "WORLD_SIZE=2" in line and "MASTER_ADDR" in line


def _tiny_problem():
    import numpy as np
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x = np.random.default_rng(0).random((9, 1, 4, 4), dtype=np.float32)
    return model, x, np.arange(9) % 3


def _worker(rank, port, path):
    """Rank ``rank`` of 2: the Python API across ranks (api.certify with ranks=), then a failure on rank 1 only."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    from trustlab.certify.api import SmoothingConfig, certify
    from trustlab.certify.distributed import step
    from trustlab.runtime import DataError

    model, x, y = _tiny_problem()
    ranks = Ranks(rank, 2, rank)
    with process_group(ranks, timeout_s=120):
        res = certify(model, x, SmoothingConfig(sigma=0.5, n0=20, n=100), y=y, seed=3, records=f"{path}/c.jsonl",
                      ranks=ranks)

        def work():
            if rank == 1:
                raise DataError("input 7 holds NaN", hint="clean it")
            return "ok"

        try:
            step(ranks, work)
            got = "no error"
        except DataError as exc:
            got = f"{type(exc).__name__}: {exc.message} | {exc.hint}"
    with open(f"{path}/rank{rank}.json", "w") as fh:
        json.dump({"records": res.records, "summary": res.summary, "error": got}, fh)


def test_python_api_across_ranks_and_an_error_on_one_rank_reaches_every_rank(tmp_path):
    import torch.multiprocessing as mp

    from trustlab.certify.api import SmoothingConfig, certify

    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    model, x, y = _tiny_problem()
    one = certify(model, x, SmoothingConfig(sigma=0.5, n0=20, n=100), y=y, seed=3, records=tmp_path / "one.jsonl")
    for g in got:  # every rank holds the merged result, equal to one process's
        assert g["records"] == json.loads(json.dumps(one.records)) and g["summary"] == json.loads(
            json.dumps(one.summary))
    assert _lines(tmp_path / "c.jsonl") == _lines(tmp_path / "one.jsonl")
    assert got[1]["error"] == "DataError: input 7 holds NaN | clean it"
    assert got[0]["error"] == "DataError: rank 1: input 7 holds NaN | clean it"


def test_cli_ranks_need_one_named_run_folder(cli, model_dir, monkeypatch):
    from tests.certify.conftest import one_error

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert "--out" in one_error(cli("eval", model_dir, "--n", "50"), 2)
