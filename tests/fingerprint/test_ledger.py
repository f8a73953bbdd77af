"""The revealed-key ledger: 0600, beside the secret and never in a run folder, every torn or edited record a
clear error naming the line (never a silently shorter history)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from trustlab.fingerprint.ledger import Ledger, ledger_path_for
from trustlab.runtime.errors import ConfigError, DataError

SECRET = bytes(range(32))


def filled(tmp_path, n=3) -> Ledger:
    led = Ledger(ledger_path_for(tmp_path / "owner.secret"), SECRET)
    for b in range(n):
        led.append(set_digest="set-a", keys=[2 * b, 2 * b + 1], suspect={"endpoint": "http://x/v1", "served_model": "m"},
                   verb="verify", mode="sequential", run=f"run-{b}")
    return led


def test_records_are_kept_0600_and_counted_per_set(tmp_path):
    led = filled(tmp_path)
    led.append(set_digest="set-b", keys=[0], suspect={"name_or_path": "x"}, verb="verify", mode="fixed", run=None)
    assert led.path == tmp_path / "owner.secret.ledger.jsonl"
    assert stat.S_IMODE(os.stat(led.path).st_mode) == 0o600
    assert led.revealed("set-a") == {0: 1, 1: 1, 2: 1, 3: 1, 4: 1, 5: 1} and led.revealed("set-b") == {0: 1}
    assert [r["seq"] for r in led.records()] == [0, 1, 2, 3]
    assert led.suspects_of("set-a", 3)[0]["suspect"]["served_model"] == "m"
    assert Ledger(tmp_path / "none.jsonl", SECRET).records() == []


def _lines(led):
    return led.path.read_text().splitlines(keepends=True)


@pytest.mark.parametrize("damage,fragment", [
    (lambda ls: ls[:-1] + [ls[-1][:-20]], "line 3 is torn"),
    (lambda ls: ls[:1] + ls[2:], "line 2 is out of sequence"),
    (lambda ls: [ls[0], ls[2], ls[1]], "line 2 is out of sequence"),
    (lambda ls: [ls[0].replace('"keys":[0,1]', '"keys":[0,7]')] + ls[1:], "line 1 fails its authentication"),
    (lambda ls: ls[:1] + ["{not json\n"] + ls[2:], "line 2 is not valid JSON"),
    (lambda ls: ls + ['{"seq": 3}\n'], "line 4 must hold the fields"),
])
def test_a_torn_or_edited_ledger_is_an_error_naming_the_line(tmp_path, damage, fragment):
    led = filled(tmp_path)
    led.path.write_text("".join(damage(_lines(led))))
    with pytest.raises(DataError, match=fragment) as exc:
        led.records()
    assert "restore it from a backup" in exc.value.hint
    with pytest.raises(DataError, match=fragment):  # nothing is appended to a damaged ledger
        led.append(set_digest="set-a", keys=[9], suspect={}, verb="verify", mode="fixed", run=None)


def test_another_secret_cannot_read_or_extend_the_ledger(tmp_path):
    led = filled(tmp_path, 1)
    with pytest.raises(DataError, match="authentication"):
        Ledger(led.path, bytes(range(1, 33))).revealed("set-a")


def test_loose_permissions_and_run_folders_are_refused(tmp_path):
    led = filled(tmp_path, 1)
    os.chmod(led.path, 0o644)
    with pytest.raises(ConfigError, match="mode 0644") as exc:
        led.records()
    assert exc.value.hint == f"chmod 600 {led.path}"
    run = tmp_path / "runs" / "fingerprint-verify-x"
    run.mkdir(parents=True)
    from trustlab.runtime.rundir import MARKER

    (run / MARKER).write_text(json.dumps({"lab": "fingerprint", "verb": "verify"}))
    with pytest.raises(ConfigError, match="inside the run folder"):
        Ledger(run / "sub" / "s.ledger.jsonl", SECRET)
