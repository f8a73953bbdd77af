"""Replays bad inputs across the shared commands and both landed labs: each must end in one ``error:`` line, one
``hint:`` line and the documented exit code (2 bad input, 3 missing dependency), never a traceback and never exit 0.

The cases are what a new or hostile user types: wrong types and ranges in YAML, files that are not what their name
says, paths that cannot be used. Each runs in-process through ``trustlab.cli.main.main``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from trustlab.cli.main import main

CERTIFY_BASE = """name: t
seeds: [0]
data: digits
max_test: 10
tracks:
  - name: rs
    model: {arch: mlp, hidden: [8]}
    train: {procedure: gaussian, sigma: 0.25, epochs: 1}
    certifiers: [smoothing]
    smoothing: {sigma: 0.25, n0: 10, n: 20, alpha: 0.001, batch_size: 20}
"""

VFL_BASE = {"data": {"name": "digits", "split": "columns", "n_parties": 2},
            "train": {"epochs": 1, "batch_size": 64, "lr": 0.01, "seed": 0}}


def _yaml(tmp: Path, name: str, text: str) -> str:
    path = tmp / name
    path.write_text(text)
    return str(path)


def _vfl_yaml(tmp: Path, name: str, **train_or_top) -> str:
    import yaml

    cfg = json.loads(json.dumps(VFL_BASE))
    for key, value in train_or_top.items():
        section, _, field = key.partition("__")
        if field:
            cfg.setdefault(section, {})[field] = value
        else:
            cfg[section] = value
    return _yaml(tmp, name, yaml.safe_dump(cfg))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    t = tmp_path_factory.mktemp("bad")
    f: dict[str, str] = {}
    # run folders whose results.json is not a trustlab results object
    for name, content in {"list": "[1, 2]", "nolab": '{"metrics": {}}', "broken": '{"lab": ',
                          "strmetrics": '{"lab": "vfl", "verb": "train", "metrics": "x"}'}.items():
        (t / f"res-{name}").mkdir()
        (t / f"res-{name}" / "results.json").write_text(content)
        f[f"res-{name}"] = str(t / f"res-{name}")
    (t / "res-latin1").mkdir()
    (t / "res-latin1" / "results.json").write_bytes('{"lab": "caf\xe9"}'.encode("latin-1"))
    f["res-latin1"] = str(t / "res-latin1")
    (t / "empty-run").mkdir()
    f["empty-run"] = str(t / "empty-run")
    # tables and arrays
    (t / "stray.csv").write_text("a,b,y\n1,2,0\n3,abc,1\n5,6,0\n7,8,1\n")
    (t / "ok.csv").write_text("a,b,y\n1,2,0\n3,4,1\n")
    (t / "latin1.csv").write_bytes("a,b,y\n1,caf\xe9,0\n".encode("latin-1"))
    (t / "empty.csv").write_text("")
    rng = np.random.default_rng(0)
    np.savez(t / "labels999.npz", x_train=rng.random((8, 4, 4), dtype=np.float32),
             y_train=np.array([0, 1, 2, 999] * 2), x_test=rng.random((4, 4, 4), dtype=np.float32),
             y_test=np.array([0, 1, 2, 1]))
    np.savez(t / "strings.npz", x_train=np.full((4, 4, 4), "a"), y_train=np.array([0, 1, 0, 1]),
             x_test=np.full((2, 4, 4), "a"), y_test=np.array([0, 1]))
    np.savez(t / "party.npz", X=rng.random((6, 3), dtype=np.float32), ids=np.arange(6))
    nan = rng.random((4, 4, 4), dtype=np.float32)
    nan[1, 2, 2] = np.nan
    np.savez(t / "nan.npz", x_train=nan, y_train=np.array([0, 1, 0, 1]), x_test=nan[:2], y_test=np.array([0, 1]))
    np.savez(t / "floatlabels.npz", x_train=nan * 0, y_train=np.array([0.5, 1, 0, 1]), x_test=nan[:2] * 0,
             y_test=np.array([0, 1]))
    np.savez(t / "nokeys.npz", x=np.zeros(3))
    (t / "empty.npz").write_bytes(b"")
    (t / "bad.jsonl").write_text('{"prompt": "hi"}\n{not json\n')
    (t / "a-file").write_text("x")
    f.update({k: str(t / v) for k, v in {
        "stray.csv": "stray.csv", "ok.csv": "ok.csv", "latin1.csv": "latin1.csv", "empty.csv": "empty.csv",
        "labels999": "labels999.npz", "strings": "strings.npz", "nan": "nan.npz", "floatlabels": "floatlabels.npz",
        "nokeys": "nokeys.npz", "party.npz": "party.npz", "empty.npz": "empty.npz", "bad.jsonl": "bad.jsonl", "a-file": "a-file"}.items()})
    # certify experiment configs
    f["c-seeds5"] = _yaml(t, "c-seeds5.yaml", CERTIFY_BASE.replace("seeds: [0]", "seeds: 5"))
    f["c-negseed"] = _yaml(t, "c-negseed.yaml", CERTIFY_BASE.replace("seeds: [0]", "seeds: [-1]"))
    f["c-epochs2.5"] = _yaml(t, "c-epochs.yaml", CERTIFY_BASE.replace("epochs: 1", "epochs: 2.5"))
    f["c-epochsten"] = _yaml(t, "c-epochsten.yaml", CERTIFY_BASE.replace("epochs: 1", "epochs: ten"))
    f["c-hiddenx"] = _yaml(t, "c-hiddenx.yaml", CERTIFY_BASE.replace("hidden: [8]", 'hidden: [128, "x"]'))
    f["c-hidden-scalar"] = _yaml(t, "c-hidden1.yaml", CERTIFY_BASE.replace("hidden: [8]", "hidden: 128"))
    f["c-sigma-neg"] = _yaml(t, "c-signeg.yaml", CERTIFY_BASE.replace("smoothing: {sigma: 0.25", "smoothing: {sigma: -0.5"))
    f["c-alpha-nan"] = _yaml(t, "c-alphanan.yaml", CERTIFY_BASE.replace("alpha: 0.001", "alpha: .nan"))
    f["c-lr-str"] = _yaml(t, "c-lrstr.yaml", CERTIFY_BASE.replace("epochs: 1}", "epochs: 1, lr: 1e-3}"))
    f["c-unknown"] = _yaml(t, "c-unknown.yaml", CERTIFY_BASE + "colour: blue\n")
    f["c-list"] = _yaml(t, "c-list.yaml", "- 1\n- 2\n")
    f["c-badyaml"] = _yaml(t, "c-badyaml.yaml", "tracks: [\n")
    f["c-n0-zero"] = _yaml(t, "c-n0.yaml", CERTIFY_BASE.replace("n0: 10", "n0: 0"))
    f["c-certifier"] = _yaml(t, "c-cert.yaml", CERTIFY_BASE.replace("certifiers: [smoothing]", "certifiers: [magic]"))
    (t / "c-latin1.yaml").write_bytes(CERTIFY_BASE.replace("name: t", "name: caf\xe9").encode("latin-1"))
    f["c-latin1"] = str(t / "c-latin1.yaml")
    (t / "c-dir.yaml").mkdir()
    f["c-dir"] = str(t / "c-dir.yaml")
    # vfl configs
    f["v-epochs2.5"] = _vfl_yaml(t, "v-epochs.yaml", train__epochs=2.5)
    f["v-epochsten"] = _vfl_yaml(t, "v-epochsten.yaml", train__epochs="ten")
    f["v-milestones"] = _vfl_yaml(t, "v-milestones.yaml", train__milestones=45)
    f["v-negseed"] = _vfl_yaml(t, "v-negseed.yaml", train__seed=-3)
    f["v-lr-nan"] = _vfl_yaml(t, "v-lrnan.yaml", train__lr=float("nan"))
    f["v-lr-str"] = _yaml(t, "v-lrstr.yaml", "train:\n  lr: 1e-3\n")
    f["v-unknown"] = _vfl_yaml(t, "v-unknown.yaml", train__colour="blue")
    f["v-parties0"] = _vfl_yaml(t, "v-parties0.yaml", data__n_parties=0)
    return f


# (case id, argv with {placeholders} from ``files``, expected exit code, a word the error line must contain)
CASES = [
    ("report-list", ["report", "{res-list}"], 2, "list"),
    ("report-no-lab", ["report", "{res-nolab}"], 2, "lab"),
    ("report-broken-json", ["report", "{res-broken}"], 2, "JSON"),
    ("report-metrics-str", ["report", "{res-strmetrics}"], 2, "metrics"),
    ("report-latin1", ["report", "{res-latin1}"], 2, "UTF-8"),
    ("report-no-results", ["report", "{empty-run}"], 2, "results.json"),
    ("data-unknown", ["data", "show", "no-such-set"], 2, "no-such-set"),
    ("data-csv-no-label", ["data", "show", "csv:{ok.csv}"], 2, "label"),
    ("data-csv-stray-text", ["data", "show", "csv:{stray.csv}", "--label", "y"], 2, "abc"),
    ("data-csv-latin1", ["data", "show", "csv:{latin1.csv}", "--label", "y"], 2, "UTF-8"),
    ("data-csv-empty", ["data", "show", "csv:{empty.csv}", "--label", "y"], 2, "empty.csv"),
    ("data-csv-missing", ["data", "show", "csv:/no/such.csv", "--label", "y"], 2, "/no/such.csv"),
    ("data-csv-bad-label", ["data", "show", "csv:{ok.csv}", "--label", "nope"], 2, "nope"),
    ("data-label-not-table", ["data", "show", "digits", "--label", "y"], 2, "--label"),
    ("data-npz-labels-999", ["data", "show", "npz:{labels999}"], 2, "999"),
    ("data-npz-strings", ["data", "show", "npz:{strings}"], 2, "dtype"),
    ("data-npz-nan", ["data", "show", "npz:{nan}"], 2, "NaN"),
    ("data-npz-float-labels", ["data", "show", "npz:{floatlabels}"], 2, "labels"),
    ("data-npz-no-keys", ["data", "show", "npz:{nokeys}"], 2, "x_train"),
    ("data-npz-empty-file", ["data", "show", "npz:{empty.npz}"], 2, "empty.npz"),
    ("data-idx-missing", ["data", "show", "idx:/no/such/dir"], 2, "/no/such/dir"),
    ("data-jsonl-bad-line", ["data", "show", "jsonl:{bad.jsonl}"], 2, "line 2"),
    ("demo-unknown-lab", ["demo", "--labs", "nolab", "--out", "{empty-run}/d"], 2, "nolab"),
    ("demo-out-is-file", ["demo", "--labs", "certify", "--out", "{a-file}"], 2, "a-file"),
    ("certify-seeds-scalar", ["certify", "run", "{c-seeds5}"], 2, "seeds"),
    ("certify-seed-negative", ["certify", "run", "{c-negseed}"], 2, "seed"),
    ("certify-epochs-float", ["certify", "run", "{c-epochs2.5}"], 2, "epochs"),
    ("certify-epochs-word", ["certify", "run", "{c-epochsten}"], 2, "epochs"),
    ("certify-hidden-item", ["certify", "run", "{c-hiddenx}"], 2, "hidden"),
    ("certify-hidden-scalar", ["certify", "run", "{c-hidden-scalar}"], 2, "hidden"),
    ("certify-sigma-negative", ["certify", "run", "{c-sigma-neg}"], 2, "sigma"),
    ("certify-alpha-nan", ["certify", "run", "{c-alpha-nan}"], 2, "alpha"),
    ("certify-lr-yaml11", ["certify", "run", "{c-lr-str}"], 2, "lr"),
    ("certify-unknown-key", ["certify", "run", "{c-unknown}"], 2, "colour"),
    ("certify-config-list", ["certify", "run", "{c-list}"], 2, "mapping"),
    ("certify-config-bad-yaml", ["certify", "run", "{c-badyaml}"], 2, "YAML"),
    ("certify-config-latin1", ["certify", "run", "{c-latin1}"], 2, "UTF-8"),
    ("certify-config-dir", ["certify", "run", "{c-dir}"], 2, "c-dir.yaml"),
    ("certify-config-missing", ["certify", "run", "/no/such.yaml"], 2, "/no/such.yaml"),
    ("certify-n0-zero", ["certify", "run", "{c-n0-zero}"], 2, "n0"),
    ("certify-unknown-certifier", ["certify", "run", "{c-certifier}"], 2, "magic"),
    ("certify-stats-alpha-nan", ["certify", "stats", "--alpha", "nan"], 2, "alpha"),
    ("certify-train-hidden-word", ["certify", "train", "--hidden", "abc", "--out", "{empty-run}/t"], 2, "hidden"),
    ("certify-eval-no-model", ["certify", "eval", "/no/such/model"], 2, "/no/such/model"),
    # user models in `certify eval` (issue 11 item 5)
    ("certify-eval-mistyped-kind", ["certify", "eval", "torchscrpt:/x.ts"], 2, "torchscrpt"),
    ("certify-eval-user-no-sigma", ["certify", "eval", "torchscript:/no/such.ts", "--data", "digits"], 2, "--sigma"),
    ("certify-eval-user-no-data", ["certify", "eval", "torchscript:/no/such.ts", "--sigma", "0.25"], 2, "--data"),
    ("certify-eval-torchscript-missing", ["certify", "eval", "torchscript:/no/such.ts", "--data", "digits", "--sigma",
                                          "0.25", "--out", "{empty-run}/e1"], 2, "/no/such.ts"),
    ("certify-eval-factory-no-checkpoint", ["certify", "eval", "factory:no_mod:fn", "--data", "digits", "--sigma",
                                            "0.25", "--out", "{empty-run}/e2"], 2, "--checkpoint"),
    ("certify-eval-factory-no-module", ["certify", "eval", "factory:no_such_mod_xyz:fn", "--checkpoint", "{a-file}",
                                        "--data", "digits", "--sigma", "0.25", "--out", "{empty-run}/e3"], 2,
     "no_such_mod_xyz"),
    ("certify-eval-normalize-bad", ["certify", "eval", "torchscript:/no/such.ts", "--normalize", "0.5,0.5", "--data",
                                    "digits", "--sigma", "0.25", "--out", "{empty-run}/e4"], 2, "--normalize"),
    ("certify-eval-autocast-bad", ["certify", "eval", "/no/such/model", "--autocast", "fp8"], 2, "--autocast"),
    ("certify-eval-num-classes-1", ["certify", "eval", "/no/such/model", "--num-classes", "1"], 2, "--num-classes"),
    ("vfl-epochs-float", ["vfl", "train", "--config", "{v-epochs2.5}"], 2, "epochs"),
    ("vfl-epochs-word", ["vfl", "train", "--config", "{v-epochsten}"], 2, "epochs"),
    ("vfl-milestones-scalar", ["vfl", "train", "--config", "{v-milestones}"], 2, "milestones"),
    ("vfl-seed-negative", ["vfl", "train", "--config", "{v-negseed}"], 2, "seed"),
    ("vfl-lr-nan", ["vfl", "train", "--config", "{v-lr-nan}"], 2, "lr"),
    ("vfl-lr-yaml11", ["vfl", "train", "--config", "{v-lr-str}"], 2, "lr"),
    ("vfl-unknown-key", ["vfl", "train", "--config", "{v-unknown}"], 2, "colour"),
    ("vfl-zero-parties", ["vfl", "train", "--config", "{v-parties0}"], 2, "n_parties"),
    ("vfl-config-missing", ["vfl", "train", "--config", "/no/such.yaml"], 2, "/no/such.yaml"),
    ("vfl-party-port-range", ["vfl", "party", "--party-id", "0", "--data", "{party.npz}", "--listen",
                              "127.0.0.1:99999", "--insecure"], 2, "99999"),
    ("vfl-report-garbage", ["vfl", "report", "--run-dir", "{res-list}"], 2, "results"),
]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("case_id,argv,code,word", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_error_hint_and_exit_code(case_id, argv, code, word, files, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    args = [re.sub(r"\{([^}]+)\}", lambda m: files[m.group(1)], a) for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_info.value.code == code, f"{case_id}: exit {exit_info.value.code}\n{err}"
    assert "Traceback" not in err + out
    errors = [line for line in lines if line.startswith("error: ")]
    hints = [line for line in lines if line.startswith("hint: ")]
    assert len(errors) == 1 and len(hints) == 1, f"{case_id}: expected one error and one hint line\n{err}"
    assert word.lower() in errors[0].lower(), f"{case_id}: the error does not name {word!r}: {errors[0]}"


def test_replay_covers_at_least_forty_cases():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)
